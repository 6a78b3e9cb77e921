"""The Widget's "Save DICOM SR..." under real Qt against the real (shared) server: a DICOM-backed image
opened from the datastore, a click, a report that names its language backend, then the SR and SEG saved
to the folder the (stubbed) folder dialog answers; their measurements equal the shown report's. A
datastore image without a series gets the server's one-line reason in the status line."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("PyQt5.QtWidgets", reason="the Widget tests need PyQt5: pip install -r requirements/slicer.txt")
pytest.importorskip("highdicom", reason="the DICOM SR needs highdicom (requirements/dicom.txt)")

from MedVLSlicerLib.geometry import ijk_to_world, volume_ijk_to_world  # noqa: E402
from MedVLSlicerLib.selftest import label_click  # noqa: E402

from . import qtslicer  # noqa: E402
from .conftest import SAMPLE_DIR  # noqa: E402
from .widget_harness import click, make_widget, shot, status, wait_idle  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.slow]
IMAGE_ID = "medvl_sr_ct"  # the DICOM-backed datastore image this test adds (and removes)
CROP = np.s_[21:23, 316:412, 304:416]  # (k, j, i): two slices through lung2's tumour


@pytest.fixture
def dicom_image(server, tmp_path):
    """`IMAGE_ID` in the server's datastore with its DICOM series `IMAGE_ID/` next to it (the layout of
    MONAI Label's DICOMweb cache); its label crop (k, j, i). Removed afterwards."""
    import requests

    from medvl.bench.dicom_series import write_series
    from medvl.geometry import Geometry
    from medvl.io import read_mask, read_volume, write_volume

    image = read_volume(SAMPLE_DIR / "lung2_image.nii.gz")
    k, j, i = (s.start for s in CROP)
    geometry = Geometry(image.geometry.index_to_physical((i, j, k)), image.geometry.spacing, image.geometry.direction)
    series = server.studies / IMAGE_ID
    write_series(series, image.array[CROP], geometry, order="shuffled")
    nifti = tmp_path / f"{IMAGE_ID}.nii.gz"
    write_volume(nifti, read_volume(series))
    with open(nifti, "rb") as f:
        r = requests.put(f"{server.url}/datastore/image", params={"image": IMAGE_ID},
                         files={"file": (nifti.name, f.read()), "params": (None, "{}")}, timeout=60)
    assert r.status_code == 200, r.text
    try:
        yield (read_mask(SAMPLE_DIR / "lung2_label.nii.gz").array[CROP] > 0).astype(np.uint8)
    finally:
        shutil.rmtree(series, ignore_errors=True)
        r = requests.delete(f"{server.url}/datastore/", params={"id": IMAGE_ID}, timeout=60)
        assert r.status_code == 200, f"the shared server keeps {IMAGE_ID}: {r.status_code} {r.text}"


def test_save_dicom_sr(server, dicom_image, mrml_scene, slicer_mod, monkeypatch, tmp_path):
    from medvl.dicom.sr import read_sr_measurements

    truth = dicom_image
    module, w = make_widget(slicer_mod, monkeypatch)
    ui, p = w.ui, w._parameterNode
    ui.serverUrlLineEdit.setText(server.url)
    click(ui.connectButton)
    wait_idle(w, 30)
    qtslicer.unwrap(ui.datastoreCollapsibleButton).setChecked(True)
    click(ui.refreshDatastoreButton)
    wait_idle(w, 30)
    ui.datastoreListWidget.setCurrentRow([im.image_id for im in w._datastore].index(IMAGE_ID))
    click(ui.openImageButton)
    wait_idle(w, 60)
    volume = p.inputVolume
    assert volume.GetAttribute("MedVL.datastoreImage") == IMAGE_ID, status(w)
    assert not ui.saveDicomSrButton.enabled and "report first" in ui.saveDicomSrButton.toolTip

    ui.autoPropagateCheckBox.setChecked(False)
    ui.useBoxCheckBox.setChecked(False)
    p.foregroundPoints.AddControlPoint(*ijk_to_world([label_click(truth)], volume_ijk_to_world(volume))[0])
    click(ui.segmentButton)
    wait_idle(w, 90)
    assert w.logic.state.objects[1].voxels > 0, status(w)
    click(ui.reportButton)
    wait_idle(w, 90)
    assert "(language: offline, deterministic narrative)" in status(w), status(w)
    assert ui.saveDicomSrButton.enabled, ui.saveDicomSrButton.toolTip

    folder = tmp_path / "sr"
    monkeypatch.setattr(qtslicer.QtWidgets.QFileDialog, "getExistingDirectory",
                        staticmethod(lambda *args: str(folder)))  # the user's answer to the folder dialog
    click(ui.saveDicomSrButton)
    wait_idle(w, 90)
    assert f"DICOM SR saved in {folder}: report.sr.dcm" in status(w), status(w)
    values, texts = read_sr_measurements(folder / "report.sr.dcm")
    facts = w._report["json"]["objects"]
    assert facts and list(values) == [f["name"] for f in facts]
    for f in facts:
        assert values[f["name"]]["volume_ml"] == f["volume_ml"] and values[f["name"]]["mean"] == f["mean"]
    assert texts.get("Impression") == w._report["json"]["impression"]
    import pydicom

    seg = pydicom.dcmread(folder / "report.seg.dcm")
    sr_series = pydicom.dcmread(next((server.studies / IMAGE_ID).iterdir()), stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sr_series.SeriesInstanceUID
    shot(w, "09_dicom_sr")

    # a datastore image without a DICOM series: the server's reason, one line, in the status
    volume.SetAttribute("MedVL.datastoreImage", "lung2_image")
    click(ui.saveDicomSrButton)
    wait_idle(w, 30)
    assert "'lung2_image' is not backed by a DICOM series" in status(w), status(w)
    assert "c0392b" in ui.statusLabel.styleSheet and "\n" not in status(w)
    w.cleanup()
