"""`run_batch` with the local executor on real CT crops and the real LiteMedSAM model: boxes in voxel,
LPS and RAS coordinates, bad volumes recorded and skipped over, resume by hash, exact geometry."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from medvl import metrics
from medvl.batch.inputs import discover
from medvl.batch.jobs import BatchInputError, BatchSettings
from medvl.batch.publish import read_status
from medvl.batch.runner import _OutputLock, run_batch
from medvl.geometry import lps_to_ras
from medvl.io import read_mask, read_volume, write_volume
from tests.batch.local_cases import make_cases

pytestmark = pytest.mark.slow


def _dice(a, b):
    return metrics.dice(a, b, empty=0.0)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    cases = make_cases(root / "in")
    (root / "in" / "corrupt.nii.gz").write_bytes(b"not a nifti file")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.int16)), str(root / "in" / "flat.nii.gz"))
    ras = lps_to_ras(np.asarray([cases[2].box_lps[:3], cases[2].box_lps[3:]])).ravel().tolist()
    rows = [{"image": "in/crop0.nii.gz", "box": cases[0].box_voxel},
            {"image": "in/crop1.nii.gz", "box": cases[1].box_lps, "space": "LPS"},
            {"image": "in/crop2.nii.gz", "objects": [{"name": "nodule box", "box": ras, "space": "RAS"}]},
            {"image": "in/crop0.nii.gz", "case_id": "thalamus_on_ct", "text": "left thalamus"},
            {"image": "in/corrupt.nii.gz", "box": cases[0].box_voxel},
            {"image": "in/flat.nii.gz", "box": cases[0].box_voxel},
            {"image": "in/missing.nii.gz", "text": "lungs"}]
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps(rows))
    settings = BatchSettings(refine="hu")
    result = run_batch(discover(str(manifest)), root / "out", settings, progress="quiet")
    return root, cases, manifest, settings, result


def test_each_volume_ends_with_its_status_and_the_batch_goes_on(batch):
    root, cases, _, _, result = batch
    out = root / "out"
    states = {c: read_status(out / c)["status"] for c in ("crop0", "crop1", "crop2", "thalamus_on_ct", "corrupt",
                                                          "flat", "missing")}
    assert states == {"crop0": "ok", "crop1": "ok", "crop2": "ok", "thalamus_on_ct": "refused",
                      "corrupt": "failed", "flat": "failed", "missing": "failed"}
    assert (result.ran, result.counts) == (7, {"ok": 3, "refused": 1, "failed": 3})
    assert "missing.nii.gz does not exist" in read_status(out / "missing")["reason"]
    assert "corrupt.nii.gz" in read_status(out / "corrupt")["reason"]
    assert "2D" in read_status(out / "flat")["reason"] or "3D" in read_status(out / "flat")["reason"]
    assert "not applicable" in read_status(out / "thalamus_on_ct")["reason"]
    assert list((out / ".partial").iterdir()) == []


def test_boxes_in_any_space_give_the_nodule_in_the_images_exact_geometry(batch):
    root, cases, *_ = batch
    for n, case in enumerate(cases):
        image = read_volume(case.path)
        labels = read_mask(root / "out" / f"crop{n}" / "labels.nii.gz", like=image)  # geometry checked exactly
        assert labels.geometry.same_as(image.geometry, tol=0)
        truth = read_mask(case.label).array > 0
        assert set(np.unique(labels.array)) == {0, 1}
        assert _dice(labels.array == 1, truth) > 0.7, n
        status = read_status(root / "out" / f"crop{n}")
        assert status["objects"][0]["facts"]["volume_ml"] > 0.5 and status["versions"]["engine"] == "litemedsam"


def test_summary_has_one_row_per_volume_and_object_in_csv_and_parquet(batch):
    root, cases, *_ = batch
    csv = pd.read_csv(root / "out" / "summary.csv")
    parquet = pd.read_parquet(root / "out" / "summary.parquet")
    assert list(csv["case_id"]) == list(parquet["case_id"]) == ["crop0", "crop1", "crop2", "thalamus_on_ct",
                                                                "corrupt", "flat", "missing"]
    assert list(parquet["object_status"][:4]) == ["ok", "ok", "ok", "refused"]
    assert np.allclose(csv["volume_ml"][:3], parquet["volume_ml"][:3])
    truth_ml = (read_mask(cases[0].label).array > 0).sum() * np.prod(read_volume(cases[0].path).geometry.spacing) / 1e3
    assert parquet["volume_ml"][:3].between(0.5 * truth_ml, 2 * truth_ml).all()


def test_resume_skips_what_is_done_and_redoes_what_changed(batch):
    root, cases, manifest, settings, _ = batch
    jobs = discover(str(manifest))
    again = run_batch(jobs, root / "out", settings, progress="quiet")
    assert (again.skipped, again.ran, again.counts["failed"]) == (4, 3, 3)  # failed volumes are tried again
    # a changed input (bytes) and a changed prompt are redone, the rest skipped
    image = read_volume(cases[1].path)
    image.array[0, 0, 0] += 1
    write_volume(cases[1].path, image)
    rows = json.loads(manifest.read_text())
    rows[3]["text"] = "right thalamus"
    manifest.write_text(json.dumps(rows))
    before = read_status(root / "out" / "crop0")["attempt"]
    third = run_batch(discover(str(manifest)), root / "out", settings, progress="quiet")
    assert (third.skipped, third.ran) == (2, 5)
    assert read_status(root / "out" / "crop0")["attempt"] == before
    assert read_status(root / "out" / "crop1")["status"] == "ok"
    assert "right thalamus" in read_status(root / "out" / "thalamus_on_ct")["reason"]


def test_two_batches_cannot_write_into_one_folder(tmp_path):
    with _OutputLock(tmp_path):
        with pytest.raises(BatchInputError, match="another medvl annotate .* is writing to"):
            with _OutputLock(tmp_path):
                pass
    with _OutputLock(tmp_path):  # released
        pass
