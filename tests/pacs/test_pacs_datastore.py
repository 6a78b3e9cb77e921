"""The server with a PACS (a private Orthanc over DICOMweb) as its datastore, against a folder server.

One Orthanc and two real servers for the module: `pacs` (--studies <Orthanc DICOMweb URL>)
and `folder` (--studies a folder holding the NIfTI of the same crop, image id `lung2crop`).
"""

from __future__ import annotations

import io
import time

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medvl.io import read_mask, read_volume
from medvl.server.launch import ServerProcess
from medvl.bench.dicom_series import read_with_pydicom_seg
from tests.pacs.conftest import requires_orthanc, requires_pacs_server
from tests.server.conftest import Client, dice, inner_point, largest_slice_box

pytestmark = [requires_orthanc, requires_pacs_server]


@pytest.fixture(scope="module")
def pacs(orthanc, tmp_path_factory):
    cache = tmp_path_factory.mktemp("pacs-cache")
    process = ServerProcess(orthanc.dicomweb_url, conf=[("pacs_cache", str(cache))],
                            log_path=tmp_path_factory.mktemp("log") / "pacs-server.log")
    process.cache = cache
    with process:
        yield process


@pytest.fixture(scope="module")
def folder(lung2_crop, tmp_path_factory):
    studies = tmp_path_factory.mktemp("folder-studies")
    (studies / "lung2crop.nii.gz").write_bytes(lung2_crop["image"].read_bytes())
    with ServerProcess(studies, log_path=tmp_path_factory.mktemp("log") / "folder-server.log") as process:
        yield process


@pytest.fixture(scope="module")
def prompts(lung2_crop):
    label = read_mask(lung2_crop["label"]).array.astype(bool)
    # one slice each (no propagation): the datastores are the point here, not the engine's time
    return {"point": {"foreground": [inner_point(label)], "propagate": False},
            "box": {"boxes": [largest_slice_box(label)], "propagate": False}}


def test_the_server_lists_and_serves_the_pacs_series(pacs, lung2_crop, orthanc, tmp_path):
    start = time.monotonic()
    listing = Client(pacs.url, pacs.cache).get("/datastore/", output="all").json()
    seconds = time.monotonic() - start
    assert lung2_crop["series"] in listing["objects"], sorted(listing["objects"])
    status = Client(pacs.url, pacs.cache).get("/datastore/").json()
    assert status["total"] == len(orthanc.get("/series")) == 1
    start = time.monotonic()
    r = Client(pacs.url, pacs.cache).get("/datastore/image", image=lung2_crop["series"])  # Slicer's download
    fetch = time.monotonic() - start
    assert r.status_code == 200, r.text
    got = tmp_path / "fetched.nii.gz"
    got.write_bytes(r.content)
    fetched, crop = read_volume(got), read_volume(lung2_crop["image"])
    assert np.array_equal(fetched.array, crop.array)  # HU voxel-exact through DICOM and back
    assert np.allclose(fetched.geometry.origin, crop.geometry.origin, atol=1e-5)
    assert np.allclose(fetched.geometry.spacing, crop.geometry.spacing, atol=1e-6)
    print(f"\nlist: {seconds:.3f} s; fetch + convert + download: {fetch:.3f} s")


@pytest.mark.parametrize("kind", ["point", "box"])
def test_a_prompt_gives_the_folder_servers_mask(pacs, folder, lung2_crop, prompts, kind, tmp_path):
    start = time.monotonic()
    from_pacs = Client(pacs.url, tmp_path).infer(lung2_crop["series"], prompts[kind])
    seconds = time.monotonic() - start
    from_folder = Client(folder.url, tmp_path).infer("lung2crop", prompts[kind])
    assert from_pacs.status == from_folder.status == 200, (from_pacs.json, from_folder.json)
    k = inner_point(read_mask(lung2_crop["label"]).array)[2]  # the prompted slice (both prompts are on it)
    expert = read_mask(lung2_crop["label"]).array[k].astype(bool)
    d_pacs, d_folder = dice(from_pacs.mask.array[k], expert), dice(from_folder.mask.array[k], expert)
    assert d_pacs == d_folder and d_pacs > 0.5, (d_pacs, d_folder)
    assert np.array_equal(from_pacs.mask.array, from_folder.mask.array)
    uploaded = Client(pacs.url, tmp_path).infer(None, prompts[kind], upload=lung2_crop["image"])
    assert uploaded.status == 200 and np.array_equal(uploaded.mask.array, from_pacs.mask.array), uploaded.json
    image = read_volume(lung2_crop["image"]).geometry
    for mask in (from_pacs.mask, from_folder.mask):
        assert np.allclose(mask.geometry.origin, image.origin, atol=1e-5)
        assert np.allclose(mask.geometry.spacing, image.spacing, atol=1e-6)
        assert np.allclose(mask.geometry.direction, image.direction, atol=1e-6)
    cached = list(pacs.cache.rglob(f"{lung2_crop['series']}.nii.gz"))
    assert len(cached) == 1, cached  # the converted series lies in the configured cache folder
    print(f"\n{kind}: Dice PACS {d_pacs:.4f} folder {d_folder:.4f}; PACS request {seconds:.2f} s (the first loads the engine)")


def test_a_saved_label_is_stored_in_orthanc_as_seg(pacs, orthanc, lung2_crop, tmp_path):
    client = Client(pacs.url, pacs.cache)
    reply = client.put_label(lung2_crop["series"], lung2_crop["label"], tag="final")
    assert reply.status_code == 200, reply.text
    segs = orthanc.get("/dicom-web/series?Modality=SEG") or []
    assert len(segs) == 1, segs
    seg_series = segs[0]["0020000E"]["Value"][0]
    instance = orthanc.get(f"/series/{orthanc.lookup(seg_series)}")["Instances"][0]
    seg = pydicom.dcmread(io.BytesIO(orthanc.file(instance)))
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == lung2_crop["study"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == lung2_crop["series"]
    segment = seg.SegmentSequence[0]  # MedVLSlicer's writer: its algorithm identification, a coded type
    assert segment.SegmentAlgorithmName == "MedVLSlicer" and segment.SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator in ("SCT", "DCM")
    r = client.get("/datastore/label", label=lung2_crop["series"], tag="final")  # Slicer's download: the label
    assert r.status_code == 200 and r.content == lung2_crop["label"].read_bytes(), r.status_code
    expert = read_mask(lung2_crop["label"])
    seg_file = tmp_path / "stored.seg.dcm"
    seg_file.write_bytes(orthanc.file(instance))
    back = read_with_pydicom_seg(seg_file, expert.geometry, expert.array.shape)  # sparse frames, placed by geometry
    np.testing.assert_array_equal(back.astype(bool), expert.array.astype(bool))  # voxel-exact, in the same place


def test_ids_and_uploads_are_checked(pacs, orthanc, lung2_crop, tmp_path):
    client = Client(pacs.url, tmp_path)
    segs_before = len(orthanc.get("/dicom-web/series?Modality=SEG") or [])
    for image in ("../../etc/passwd", "1.2.3", lung2_crop["series"] + "/.."):
        reply = client.infer(image, {"foreground": [[1, 1, 1]]})
        assert reply.status == 404, (image, reply.json)
    r = client.api.http.put(pacs.url + "/datastore/image", params={"image": "x"},
                            files={"file": ("x.nii.gz", lung2_crop["image"].read_bytes())}, timeout=60)
    assert r.status_code == 400 and "PACS" in r.json()["detail"], r.text
    empty = tmp_path / "empty.nii.gz"
    blank = sitk.ReadImage(str(lung2_crop["label"])) * 0
    sitk.WriteImage(blank, str(empty))
    r = client.put_label(lung2_crop["series"], empty, tag="final")
    assert r.status_code == 400 and "no foreground" in r.json()["detail"], r.text
    r = client.put_label(lung2_crop["series"], lung2_crop["label"], tag="draft")  # other tags: cache only
    assert r.status_code == 200, r.text
    assert len(orthanc.get("/dicom-web/series?Modality=SEG") or []) == segs_before
    r = client.api.http.put(pacs.url + "/session/", files={"files": ("crop.nii.gz", lung2_crop["image"].read_bytes())},
                            timeout=60)
    assert r.status_code == 200 and r.json()["session_id"], r.text
    assert pacs.alive()


def test_a_pacs_that_stops_answering_is_a_502_and_the_server_stays_up(pacs, orthanc, lung2_crop, prompts,
                                                                     tmp_path):
    """Runs last in the module: it stops the module's Orthanc."""
    orthanc.stop()
    client = Client(pacs.url, tmp_path)
    start = time.monotonic()
    r = client.put_label(lung2_crop["series"], lung2_crop["label"], tag="final")
    assert time.monotonic() - start < 10  # a few quick retries, not dicomweb-client's 30 s of back-off
    assert r.status_code == 502 and orthanc.dicomweb_url in r.json()["detail"], r.text
    assert "\n" not in r.json()["detail"] and pacs.alive()
    cached = client.infer(lung2_crop["series"], prompts["point"])
    assert cached.status == 200, cached.json  # the cached series still works

