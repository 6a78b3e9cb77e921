"""Uploads: header checked before reading, full gzip decode, size limits, nothing left behind.

Unit checks of `medvl.server.uploads.check_image_file` on crafted files, then a small server
(`max_upload_mb` 1, `max_voxels` 200000) for the HTTP side: 413 over the body limit (with
and without Content-Length), truncated and bomb files refused on every upload route, the
tmp folder empty after every refusal, stale `.part` and tmp files removed at start.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medvl.errors import ImageReadError
from medvl.geometry import Geometry
from medvl.io import write_volume
from medvl.server.containment import ContainmentError
from medvl.server.http import status_for
from medvl.server.uploads import TMP_DIR, UploadTooLargeError, check_image_file, clean_stale
from medvl.volume import Volume
from tests.server.conftest import empty_soon, requires_server

MAX_VOXELS = 200_000


def _tiny(path: Path, shape=(20, 40, 40), seed=0) -> Path:
    array = np.random.default_rng(seed).integers(-1000, 1000, shape).astype(np.int16)
    return write_volume(path, Volume(array, Geometry(spacing=(1.0, 1.0, 2.0)), "CT"))


def _nifti_header_only(path: Path, shape) -> Path:
    """A .nii.gz whose header declares `shape` (int16) but holds 1 KiB of data."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    with gzip.open(path, "wb") as f:
        f.write(header.binaryblock + b"\0" * 4 + b"\0" * 1024)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("uploads")
    good = _tiny(d / "good.nii.gz")
    data = good.read_bytes()
    (d / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[-6] ^= 0xFF  # in the CRC: the header still reads, the stream does not check out
    (d / "corrupt.nii.gz").write_bytes(bytes(corrupt))
    _nifti_header_only(d / "huge.nii.gz", (1300, 1300, 1300))
    small = _tiny(d / "small.nii", shape=(4, 4, 4))  # 128 bytes of data, then 40 MiB of zeros in the stream
    with gzip.open(d / "bomb.nii.gz", "wb", compresslevel=9) as f:
        f.write(small.read_bytes() + b"\0" * (40 << 20))
    (d / "detached.nrrd").write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n"
                                     "data file: /etc/hostname\n\n")
    (d / "detached.mha").write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\n"
                                    "ElementDataFile = /etc/hostname\n")
    sitk.WriteImage(sitk.Image([8, 8], sitk.sitkInt16), str(d / "flat.nii.gz"))
    (d / "junk.nii.gz").write_bytes(os.urandom(900_000))
    return {p.name.split(".")[0]: p for p in d.iterdir()}


def test_a_good_file_passes(files):
    assert check_image_file(files["good"], MAX_VOXELS) == (40, 40, 20)


@pytest.mark.parametrize("name, error, words", [
    ("truncated", ImageReadError, "truncated"), ("corrupt", ImageReadError, "corrupt"),
    ("huge", UploadTooLargeError, "1300x1300x1300"), ("bomb", UploadTooLargeError, "decompresses to"),
    ("detached", ContainmentError, "separate data file"), ("flat", ImageReadError, "3D"),
    ("junk", ImageReadError, "not a readable image header")])
def test_bad_files_are_refused_before_decoding(files, name, error, words):
    path = files[name] if name != "detached" else files["detached"]
    with pytest.raises(error, match=words) as caught:
        check_image_file(path, MAX_VOXELS)
    assert status_for(caught.value) in (400, 413) and "\n" not in str(caught.value)


def test_detached_metaimage_is_refused(tmp_path, files):
    mha = next(p for p in files.values() if p.name == "detached.mha")
    with pytest.raises(ContainmentError, match="separate data file"):
        check_image_file(mha, MAX_VOXELS)


def test_clean_stale(tmp_path):
    (tmp_path / TMP_DIR).mkdir()
    (tmp_path / TMP_DIR / "upload-x.nii.gz").write_bytes(b"x")
    (tmp_path / "labels" / "final").mkdir(parents=True)
    (tmp_path / "labels" / "final" / ".a.nii.gz.1234abcd.part").write_bytes(b"x")
    (tmp_path / "keep.nii.gz").write_bytes(b"x")
    assert clean_stale(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["keep.nii.gz"]


# --- over HTTP -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_server(tmp_path_factory, files):
    from medvl.server.launch import ServerProcess

    studies = tmp_path_factory.mktemp("upload-studies")
    _tiny(studies / "tiny.nii.gz")
    (studies / TMP_DIR).mkdir()
    (studies / TMP_DIR / "upload-left-by-a-killed-run.nii.gz").write_bytes(b"x" * 1000)
    (studies / "labels" / "final").mkdir(parents=True)
    (studies / "labels" / "final" / ".tiny.nii.gz.deadbeef.part").write_bytes(b"half a label")
    server = ServerProcess(studies, conf=[("max_upload_mb", "1"), ("max_voxels", str(MAX_VOXELS))],
                           log_path=tmp_path_factory.mktemp("upload-log") / "server.log")
    with server:
        yield server


def _tree(studies: Path) -> set[str]:
    return {str(p.relative_to(studies)) for p in studies.rglob("*") if p.is_file() and p.name != ".lock"}




@requires_server
@pytest.mark.server
def test_stale_files_removed_at_start(small_server):
    studies = Path(small_server.studies)
    assert not list((studies / TMP_DIR).iterdir())
    assert not list(studies.rglob("*.part"))


@requires_server
@pytest.mark.server
def test_body_over_the_limit_is_413(small_server):
    import requests

    url = small_server.url + "/datastore/image"
    big = os.urandom(3 << 20)
    r = requests.put(url, params={"image": "big"}, files={"file": ("big.nii.gz", big)}, timeout=60)
    assert r.status_code == 413 and "max_upload_mb" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.nii.gz\"\r\n\r\n"
        for _ in range(6):
            yield os.urandom(1 << 19)
        yield b"\r\n--b--\r\n"

    r = requests.put(url, params={"image": "big2"}, data=chunks(), timeout=60,
                     headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413
    assert requests.get(small_server.url + "/info/", timeout=30).status_code == 200
    assert not list((Path(small_server.studies) / TMP_DIR).iterdir())


@requires_server
@pytest.mark.server
@pytest.mark.parametrize("name, status", [("truncated", 400), ("corrupt", 400), ("huge", 413), ("bomb", 413),
                                          ("junk", 400), ("flat", 400)])
def test_bad_uploads_leave_nothing(small_server, files, name, status):
    import requests

    studies = Path(small_server.studies)
    before = _tree(studies)
    data = files[name].read_bytes()
    replies = [
        requests.put(small_server.url + "/datastore/image", params={"image": f"bad-{name}"},
                     files={"file": (f"{name}.nii.gz", data)}, timeout=60),
        requests.put(small_server.url + "/datastore/label", params={"image": "tiny", "tag": "final"},
                     files={"label": (f"{name}.nii.gz", data)}, timeout=60),
        requests.post(small_server.url + "/infer/medvl_interactive", files={
            "params": (None, json.dumps({"foreground": [[5, 5, 5]], "propagate": False})),
            "file": (f"{name}.nii.gz", data)}, timeout=60),
    ]
    for r in replies:
        assert r.status_code == status, (r.request.url, r.status_code, r.text[:200])
        assert "\n" not in r.json()["detail"] and "medvl-tmp" not in r.json()["detail"]
    assert _tree(studies) == before
    assert f"bad-{name}" not in requests.get(small_server.url + "/datastore/", params={"output": "all"},
                                             timeout=30).json()["objects"]


@requires_server
@pytest.mark.server
def test_good_uploads_work_and_leave_no_temp(small_server, files):
    import requests

    data = files["good"].read_bytes()
    r = requests.put(small_server.url + "/datastore/image", params={"image": "good"},
                     files={"file": ("good.nii.gz", data)}, timeout=60)
    assert r.status_code == 200 and r.json() == {"image": "good"}
    r = requests.post(small_server.url + "/infer/medvl_interactive", files={
        "params": (None, json.dumps({"foreground": [[20, 20, 10]], "propagate": False})),
        "file": ("good.nii.gz", data)}, timeout=300)
    assert r.status_code == 200, r.text[:200]
    studies = Path(small_server.studies)
    assert (studies / "good.nii.gz").is_file() and not list(studies.rglob("*.part"))
    empty_soon(studies / TMP_DIR)  # the answer's result file is removed just after it is sent



def test_a_stream_longer_than_its_header_is_refused_under_a_large_limit(files):
    with pytest.raises(UploadTooLargeError, match="more than its header declares"):
        check_image_file(files["bomb"], 10**8)


@requires_server
@pytest.mark.server
def test_dataset_download_without_final_labels_is_404(small_server):
    import requests

    r = requests.get(small_server.url + "/datastore/dataset", timeout=60)
    assert r.status_code == 404 and "final label" in r.json()["detail"]
