"""MedVLSlicer's Widget under a real Qt (PyQt5, offscreen) with real MRML, against the real
server: the real MedVLSlicer.py and .ui, every button and field, screenshots kept under
tests/artifacts/slicer_widget/ (or $MEDVL_TEST_ARTIFACTS). What this does and does not
prove: docs/slicer_widget_harness.md."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PyQt5.QtWidgets", reason="the Widget tests need PyQt5: pip install -r requirements/slicer.txt")

from MedVLSlicerLib import masks  # noqa: E402
from MedVLSlicerLib.geometry import ijk_to_world, volume_ijk_to_world  # noqa: E402
from MedVLSlicerLib.selftest import label_click  # noqa: E402

from . import qtslicer  # noqa: E402
from .widget_harness import click, make_widget, shot, status, wait_idle  # noqa: E402

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

    # a click on the tumour, prompted slice only (the propagation is test_live_progress_and_cancel's)
    ui.autoPropagateCheckBox.setChecked(False)
    assert p.autoPropagate is False
    place(p.foregroundPoints, volume, label_click(truth))
    click(ui.segmentButton)
    wait_idle(w, 90)
    obj = w.logic.state.objects[1]
    assert obj.voxels > 0 and "voxels" in status(w), status(w)
    assert ui.segmentationSelector.currentNode() is p.segmentation is w.logic.nodes()[1]  # made and shown
    mask = masks.segment_array(w.logic.nodes()[1], obj.segment_id, volume)
    k = label_click(truth)[2]
    dice = 2 * np.logical_and(mask[k], truth[k]).sum() / (mask[k].sum() + truth[k].sum())
    assert dice > 0.8, dice
    assert ui.propagateButton.enabled and ui.undoButton.enabled
    shot(w, "02_segmented")

    # a text prompt: a second object found by the server
    assert ui.textSegmentButton.enabled, "the test server has no text task"
    w.logic.refine = "hu"  # the HU candidate as is: no engine propagation (CPU time)
    ui.textLineEdit.setText("the nodule in the right lung")  # lung2's is in the left: the server says so (400)
    click(ui.textSegmentButton)
    wait_idle(w, 90)
    assert "no nodule in the right lung" in status(w) and "c0392b" in ui.statusLabel.styleSheet, status(w)
    ui.textLineEdit.setText("the nodule in the left lung")
    assert p.textPrompt == "the nodule in the left lung"
    click(ui.textSegmentButton)
    wait_idle(w, 90)
    assert "voxels" in status(w) and len(w.logic.state.objects) == 2, status(w)
    assert "language: offline" in status(w), status(w)  # the backend that grounded the text (server: no --conf vlm)
    shot(w, "03_text_prompt")

    # report: a table with links, the overview inline; a finding moves the views
    click(ui.reportButton)
    wait_idle(w, 90)
    html = w._report["html"]
    assert len(w._report["json"]["objects"]) >= 2 and html.count('href="finding:') >= 2, w._report["json"]
    assert "<table" in html and 'href="finding:0"' in html and "data:image/png;base64," in html
    assert "|---" not in ui.reportTextBrowser.toPlainText()
    assert "(language: offline, deterministic narrative)" in status(w), status(w)
    assert not ui.saveDicomSrButton.enabled and "datastore" in ui.saveDicomSrButton.toolTip  # lung2: a local volume
    qtslicer.unwrap(ui.reportTextBrowser).anchorClicked.emit(qtslicer.QtCore.QUrl("finding:0"))
    qtslicer.application().processEvents()
    facts = w._report["json"]["objects"][0]
    red = mrml_scene.GetFirstNodeByName("Red")
    k_world = ijk_to_world([[0, 0, facts.get("axis_slice_k") or sum(facts["slice_range_k"]) // 2]],
                           volume_ijk_to_world(volume))[0][2]
    assert abs(red.GetSliceOffset() - k_world) < 1e-3, (red.GetSliceOffset(), k_world)
    editor = mrml_scene.GetFirstNodeByClass("vtkMRMLSegmentEditorNode")
    assert editor is not None, (facts["name"], obj.name, status(w))
    assert editor.GetSelectedSegmentID() == obj.segment_id
    lines = [mrml_scene.GetNthNodeByClass(i, "vtkMRMLMarkupsLineNode")
             for i in range(mrml_scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode"))]
    if facts.get("long_axis_mm"):
        assert len(lines) == 2 and abs(lines[0].GetMeasurement("length").GetValue() - facts["long_axis_mm"]) < 2.0
    assert ui.reportCollapsibleButton.collapsed is False
    shot(w, "04_report")
    document = qtslicer.QtWidgets.QTextBrowser()  # the same HTML at a reading width, for the README
    document.setHtml(html)
    document.resize(720, 900)
    qtslicer.screenshot(document, shot(w, "04_report").replace("04_report", "04_report_document"))
    for suffix in ("md", "html", "pdf"):  # the user's answer to the save dialog, then the button
        target = str(tmp_path / f"report.{suffix}")
        monkeypatch.setattr(qtslicer.QtWidgets.QFileDialog, "getSaveFileName",
                            staticmethod(lambda *args, target=target: (target, "")))
        click(ui.exportReportButton)
        assert (tmp_path / f"report.{suffix}").stat().st_size > 100 and target in status(w), status(w)
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")

    # a question about the segments
    ui.questionLineEdit.setText("  ")
    click(ui.askButton)
    wait_idle(w, 10)
    assert "type a question first" in status(w), status(w)
    ui.questionLineEdit.setText("how large is the tumour?")
    click(ui.askButton)
    wait_idle(w, 60)
    assert "answered by offline" in ui.answerLabel.text and "medvl_vqa" in ui.answerLabel.text, ui.answerLabel.text
    shot(w, "05_question")

    # a second object, undo, reset; a text prompt
    click(ui.newObjectButton)
    assert p.objectId == 3 and p.foregroundPoints.GetNumberOfControlPoints() == 0
    place(p.foregroundPoints, volume, label_click(truth))
    click(ui.segmentButton)
    wait_idle(w, 60)
    place(p.backgroundPoints, volume, [5, 5, 0])
    qtslicer.unwrap(ui.backgroundPlaceWidget).deleteButton.click()  # the place widget's Delete all
    assert p.backgroundPoints.GetNumberOfControlPoints() == 0
    place(p.backgroundPoints, volume, [10, 10, label_click(truth)[2]])
    click(ui.segmentButton)
    wait_idle(w, 60)
    click(ui.undoButton)
    wait_idle(w, 60)
    assert p.backgroundPoints.GetNumberOfControlPoints() == 0
    click(ui.resetButton)
    wait_idle(w, 60)
    assert 3 not in w.logic.state.objects and "reset" in status(w)
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
    assert ui.inputVolumeSelector.currentNode() is p.inputVolume
    ui.inputVolumeSelector.setCurrentNode(volume)  # back to lung2 from the selector
    assert p.inputVolume is volume
    shot(w, "06_datastore")
    w.cleanup()


def test_live_progress_and_cancel(server, lung2, mrml_scene, slicer_mod, monkeypatch):
    """Propagate through lung2 (61 slices): the UI keeps repainting (a 20 ms QTimer counts
    its ticks: the largest gap is the longest the GUI thread was blocked), slices appear in
    the segment while the server works, Cancel stops the server within one slice and the
    slices done are kept."""
    import time

    volume, truth = lung2
    module, w = make_widget(slicer_mod, monkeypatch)
    ui, p = w.ui, w._parameterNode
    ui.serverUrlLineEdit.setText(server.url)
    click(ui.connectButton)
    wait_idle(w, 30)
    ui.autoPropagateCheckBox.setChecked(False)
    click_ijk = label_click(truth)
    place(p.foregroundPoints, volume, click_ijk)
    click(ui.segmentButton)
    wait_idle(w, 90)
    obj = w.logic.state.objects[1]
    prompted = int(masks.segment_array(w.logic.nodes()[1], obj.segment_id, volume).any(axis=(1, 2)).sum())

    ticks, windows = [], []  # GUI timer ticks; (start, end) of the stretches only the event loop ran
    timer = qtslicer.QtCore.QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start()

    def loop_until(condition, timeout_s):
        start = time.monotonic()
        ok = qtslicer.process_until(condition, timeout_s)
        windows.append((start, time.monotonic()))
        return ok

    def slices_shown():
        return int(masks.segment_array(w.logic.nodes()[1], obj.segment_id, volume).any(axis=(1, 2)).sum())

    applied = []  # (start, seconds) of every partial mask pasted on the GUI thread
    apply_partial = w.logic.apply_partial

    def timed_apply(*args):
        start = time.monotonic()
        try:
            return apply_partial(*args)
        finally:
            applied.append((start, time.monotonic() - start))

    w.logic.apply_partial = timed_apply
    t0 = time.monotonic()
    click(ui.propagateButton)
    seen = {}  # slices drawn -> when first seen (s after Propagate)

    def drawn(n):
        if w._job is not None:
            seen.setdefault(w._job.slicesDrawn, time.monotonic() - t0)
        return w._job is not None and w._job.slicesDrawn >= n

    assert loop_until(lambda: drawn(prompted + 1), 90), f"no propagated slice was drawn: {seen}"
    first = seen[min(n for n in seen if n > prompted)] - min(t for n, t in seen.items() if n >= 1)
    drawn_first = slices_shown()
    assert drawn_first > prompted, (drawn_first, prompted, int(w._job.drawn.any(axis=(1, 2)).sum()), seen)
    loop_until(lambda: w._job is None or w._job.slicesDone >= prompted + 3, 60)
    assert w._job is not None, "the propagation ended before Cancel could be tested"
    request_id = w.logic.client.last_request_id
    shot(w, "07_propagating")
    click(ui.cancelButton)
    at_cancel = w.logic.client.progress(request_id)["slices_done"]
    assert "Cancelling" in status(w)
    assert loop_until(lambda: w._job is None, 60)
    timer.stop()
    final = w.logic.client.progress(request_id)
    spans = [(b - a, a) for a, b in zip(ticks, ticks[1:]) if any(s <= a and b <= e for s, e in windows)]
    gaps = [g for g, _ in spans]
    print("longest GUI gaps (s, at s after Propagate):", [(round(g, 3), round(a - t0, 2)) for g, a in sorted(spans)[-4:]],
          "partial pastes (at, s):", [(round(a - t0, 2), round(d, 3)) for a, d in applied])
    kept = slices_shown()
    print(f"live: first propagated slice drawn {first:.2f} s after the prompted one ({drawn_first} slices shown, "
          f"{prompted} prompted); GUI tick gap max {max(gaps):.3f} s over {len(gaps)} ticks; slices done when "
          f"Cancel was pressed {at_cancel}, when the server stopped {final['slices_done']} (state {final['state']}); "
          f"slices kept in the segment {kept}")
    assert max(gaps) < 0.2, f"the GUI thread was blocked {max(gaps):.3f} s"
    assert final["state"] == "cancelled", final
    assert final["slices_done"] <= at_cancel + 1, (final, at_cancel)  # stopped within one slice step
    assert "Cancelled: kept" in status(w), status(w)
    assert kept >= at_cancel - 1 and kept > prompted, (kept, at_cancel)
    shot(w, "08_cancelled")
    w.cleanup()
