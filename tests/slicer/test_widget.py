"""MedVLSlicer's Widget under a real Qt (PyQt5, offscreen) with real MRML, against the real
server: the real MedVLSlicer.py and .ui, every button and field, screenshots kept under
tests/artifacts/slicer_widget/ (or $MEDVL_TEST_ARTIFACTS). What this does and does not
prove: docs/slicer_widget_harness.md."""

from __future__ import annotations

import numpy as np
import pytest

from MedVLSlicerLib import masks
from MedVLSlicerLib.geometry import ijk_to_world, volume_ijk_to_world
from MedVLSlicerLib.selftest import label_click

from . import qtslicer
from .widget_harness import click, make_widget, shot, status, wait_idle

pytestmark = [pytest.mark.server, pytest.mark.slow]


def place(node, volume, ijk) -> None:
    node.AddControlPoint(*ijk_to_world([ijk], volume_ijk_to_world(volume))[0])


def test_widget_walkthrough(server, lung2, mrml_scene, slicer_mod, monkeypatch, tmp_path):
    volume, truth = lung2
    module, w = make_widget(slicer_mod, monkeypatch)
    ui, p = w.ui, w._parameterNode
    shot(w, "01_loaded")
    assert p.inputVolume is volume and ui.inputVolumeSelector.currentNode() is volume
    assert not ui.segmentButton.enabled and not ui.cancelButton.enabled  # not connected, idle

    # fields -> parameter node
    ui.serverUrlLineEdit.setText(server.url)
    assert p.serverUrl == server.url
    ui.axisComboBox.setCurrentText("j")
    assert p.axis == "j"
    ui.axisComboBox.setCurrentText("k")
    ui.useBoxCheckBox.setChecked(False)
    assert p.useBox is False
    ui.modalityComboBox.setCurrentText("CT")
    assert p.modality == "CT"
    ui.serverTokenLineEdit.setText("")  # loopback server: no token
    p.objectId = 1
    assert ui.objectIdSpinBox.value == 1

    click(ui.connectButton)
    wait_idle(w, 30)
    assert "medvl_interactive" in ui.modelsLabel.text and "Connected" in status(w)

    # a click on the tumour, prompted slice only (fast), then Propagate
    ui.autoPropagateCheckBox.setChecked(False)
    assert p.autoPropagate is False
    place(p.foregroundPoints, volume, label_click(truth))
    click(ui.segmentButton)
    wait_idle(w, 60)
    obj = w.logic.state.objects[1]
    assert obj.voxels > 0 and "voxels" in status(w), status(w)
    click(ui.propagateButton)
    wait_idle(w, 90)
    segmentation = w.logic.nodes()[1]
    mask = masks.segment_array(segmentation, obj.segment_id, volume)
    dice = 2 * np.logical_and(mask, truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.7, dice
    assert ui.undoButton.enabled
    shot(w, "02_segmented")

    # report: a table with links, the overview inline; a finding moves the views
    click(ui.reportButton)
    wait_idle(w, 90)
    html = w._report["html"]
    assert "<table" in html and 'href="finding:0"' in html and "data:image/png;base64," in html
    assert "|---" not in ui.reportTextBrowser.toPlainText()
    qtslicer.unwrap(ui.reportTextBrowser).anchorClicked.emit(qtslicer.QtCore.QUrl("finding:0"))
    qtslicer.application().processEvents()
    facts = w._report["json"]["objects"][0]
    red = mrml_scene.GetFirstNodeByName("Red")
    k_world = ijk_to_world([[0, 0, facts.get("axis_slice_k") or sum(facts["slice_range_k"]) // 2]],
                           volume_ijk_to_world(volume))[0][2]
    assert abs(red.GetSliceOffset() - k_world) < 1e-3, (red.GetSliceOffset(), k_world)
    editor = mrml_scene.GetFirstNodeByClass("vtkMRMLSegmentEditorNode")
    assert editor.GetSelectedSegmentID() == obj.segment_id
    lines = [mrml_scene.GetNthNodeByClass(i, "vtkMRMLMarkupsLineNode")
             for i in range(mrml_scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode"))]
    if facts.get("long_axis_mm"):
        assert len(lines) == 2 and abs(lines[0].GetMeasurement("length").GetValue() - facts["long_axis_mm"]) < 2.0
    shot(w, "03_report")
    for suffix in ("md", "html", "pdf"):
        path = w.exportReport(str(tmp_path / f"report.{suffix}"))
        assert (tmp_path / f"report.{suffix}").stat().st_size > 100, path
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")

    # a question about the segments
    ui.questionLineEdit.setText("how large is the tumour?")
    click(ui.askButton)
    wait_idle(w, 60)
    assert "answered by" in ui.answerLabel.text and "medvl_vqa" in ui.answerLabel.text, ui.answerLabel.text
    shot(w, "04_question")

    # a second object, undo, reset; a text prompt
    click(ui.newObjectButton)
    assert p.objectId == 2 and p.foregroundPoints.GetNumberOfControlPoints() == 0
    place(p.foregroundPoints, volume, label_click(truth))
    click(ui.segmentButton)
    wait_idle(w, 60)
    place(p.backgroundPoints, volume, [10, 10, label_click(truth)[2]])
    click(ui.segmentButton)
    wait_idle(w, 60)
    click(ui.undoButton)
    wait_idle(w, 60)
    assert p.backgroundPoints.GetNumberOfControlPoints() == 0
    click(ui.resetButton)
    wait_idle(w, 60)
    assert 2 not in w.logic.state.objects and "reset" in status(w)
    if ui.textSegmentButton.enabled:
        ui.textLineEdit.setText("the tumour in the right lung")
        click(ui.textSegmentButton)
        wait_idle(w, 90)
        assert "voxels" in status(w), status(w)
        shot(w, "05_text_prompt")

    # annotating a set: accept, list, next unlabelled, open
    click(ui.acceptButton)
    wait_idle(w, 60)
    assert "Saved as label" in status(w), status(w)
    datastore = qtslicer.unwrap(ui.datastoreCollapsibleButton)
    datastore.setChecked(True)
    click(ui.refreshDatastoreButton)
    wait_idle(w, 30)
    assert ui.datastoreListWidget.count >= 2 and "labelled" in ui.datastoreLabel.text
    click(ui.nextImageButton)
    wait_idle(w, 30)
    wait_idle(w, 60)
    opened = p.inputVolume
    assert opened is not volume and opened.GetAttribute("MedVL.datastoreImage") == w._openedImage, status(w)
    ui.datastoreListWidget.setCurrentRow(0)
    click(ui.openImageButton)
    wait_idle(w, 60)
    assert p.inputVolume.GetAttribute("MedVL.datastoreImage") == w.logic.list_datastore()[0].image_id
    shot(w, "06_datastore")
    w.cleanup()
