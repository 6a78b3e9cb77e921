"""medvl.io: reading every format with exact geometry, atomic mask writes, read errors, sample data."""

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from medvl import io as medvl_io
from medvl.errors import GeometryError, ImageReadError, ImageWriteError
from medvl.geometry import Geometry
from medvl.io import read_mask, read_volume, write_mask, write_volume

ROTATED = (0.6, -0.8, 0.0, 0.8, 0.6, 0.0, 0.0, 0.0, 1.0)  # 3-4-5 rotation about z: exact in DICOM text
OBLIQUE = Geometry((-100.5, 20.25, -300.0), (0.5, 0.75, 2.5), ROTATED)


# ---- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_volume_round_trip(tmp_path, synthetic_volume, ext):
    volume = synthetic_volume(geometry=OBLIQUE)
    path = write_volume(tmp_path / f"scan{ext}", volume)
    back = read_volume(path)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry.same_as(volume.geometry, tol=1e-6)  # NIfTI keeps float32
    assert back.name == "scan" and back.modality == "CT"
    assert os.listdir(tmp_path) == [f"scan{ext}"]


@pytest.mark.parametrize("ext", [".nhdr", ".mhd"])
def test_two_file_formats_read(tmp_path, synthetic_volume, ext):
    volume = synthetic_volume(geometry=OBLIQUE, modality="MR")
    image = OBLIQUE.apply_to_sitk(sitk.GetImageFromArray(volume.array))
    sitk.WriteImage(image, str(tmp_path / f"scan{ext}"))
    back = read_volume(tmp_path / f"scan{ext}")
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry.same_as(OBLIQUE, tol=1e-9) and back.modality == "MR"
    with pytest.raises(ImageWriteError, match="cannot write"):
        write_volume(tmp_path / f"again{ext}", volume)


def write_dicom_series(folder, array, geometry, modality="CT", series="1.2.826.0.1.3680043.2.1125.7"):
    """One file per slice with ImageFileWriter (SimpleITK's ImageSeriesWriter refuses DICOM).

    `array` is numpy (k, j, i) int16; each slice gets ImagePositionPatient from the geometry
    and the ImageOrientationPatient of the i and j direction columns.
    """
    folder.mkdir(parents=True, exist_ok=True)
    image = geometry.apply_to_sitk(sitk.GetImageFromArray(array))
    d = geometry.direction
    orientation = "\\".join(f"{v:.10g}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        position = geometry.index_to_physical((0, 0, k))
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{series}.{k + 1}",
            "0008|0060": modality, "0020|000d": f"{series}.0", "0020|000e": series,
            "0020|0013": str(k + 1), "0020|0037": orientation,
            "0020|0032": "\\".join(f"{v:.10g}" for v in position),
            "0018|0050": f"{geometry.spacing[2]:.10g}",
        }
        slice_image = image[:, :, k]
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series[-4:]}_{k:03d}.dcm"))
        writer.Execute(slice_image)


def test_dicom_series_round_trip(tmp_path, synthetic_volume):
    volume = synthetic_volume(shape_kji=(6, 10, 8), geometry=OBLIQUE)  # CT-like values...
    write_dicom_series(tmp_path / "dcm", volume.array, OBLIQUE, modality="MR")  # ...but tagged MR
    write_dicom_series(tmp_path / "dcm", volume.array[:2], OBLIQUE, series="1.2.826.0.1.3680043.2.1125.8")
    with pytest.raises(ImageReadError, match="holds 2 DICOM series: .* pick one with --series UID"):
        read_volume(tmp_path / "dcm")  # never read silently (medvl.dicom.series)
    back = read_volume(tmp_path / "dcm", series="1.2.826.0.1.3680043.2.1125.7")
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry.same_as(OBLIQUE, tol=1e-6)
    assert back.modality == "MR" and back.meta["dicom_modality"] == "MR"  # the tag wins over the guess
    assert back.meta["modality_source"] == "dicom"
    assert back.name == "1.2.826.0.1.3680043.2.1125.7" and back.meta["files"] == 6
    assert read_volume(tmp_path / "dcm", modality="ct", series=back.name).modality == "CT"  # the argument wins


def test_single_dicom_file():
    pydicom_data = pytest.importorskip("pydicom.data", reason="pydicom ships CT_small.dcm")
    volume = read_volume(pydicom_data.get_testdata_file("CT_small.dcm"))
    assert volume.size_ijk == (128, 128, 1) and volume.modality == "CT"
    assert volume.meta["format"] == "dicom"


def test_modality_guess(tmp_path, synthetic_volume):
    ct = write_volume(tmp_path / "ct.nrrd", synthetic_volume(modality="CT"))
    mr = write_volume(tmp_path / "mr.nrrd", synthetic_volume(modality="MR"))
    assert read_volume(ct).modality == "CT" and read_volume(mr).modality == "MR"
    assert read_volume(ct).meta["modality_source"] == "inferred"
    user = read_volume(ct, modality="MR")
    assert user.modality == "MR" and user.meta["modality_source"] == "user"
    with pytest.raises(ImageReadError, match="modality 'XR' is not one of CT, MR"):
        read_volume(ct, modality="XR")


def _hu(rng, shape, air=0.3, fat=0.1):
    """Seeded CT-like int16 values: air (-1000), fat (-100), soft tissue (40) and bone (700) in the given shares."""
    u = rng.random(shape)
    values = np.select([u < air, u < air + fat, u < 0.95], [-1000, -100, 40], 700)
    return np.round(values + rng.normal(0, 15, shape)).astype(np.int16)


@pytest.mark.parametrize("name, make, expected", [
    ("CT with air", lambda rng: _hu(rng, (8, 32, 32)), "CT"),
    ("CT padded -3024 outside the scan circle", lambda rng: np.where(rng.random((8, 32, 32)) < 0.2, -3024,
                                                                      _hu(rng, (8, 32, 32))), "CT"),
    ("CT cropped inside the body (no air)", lambda rng: _hu(rng, (8, 32, 32), air=0.0, fat=0.3), "CT"),
    ("MR, arbitrary units", lambda rng: np.abs(rng.normal(400, 200, (8, 32, 32))).astype(np.int16), "MR"),
    ("MR, z-scored floats", lambda rng: rng.normal(0, 1, (8, 32, 32)).astype(np.float32), "MR"),
    ("MR background 0, no negatives", lambda rng: np.where(rng.random((8, 32, 32)) < 0.5, 0, 900).astype(np.uint16),
     "MR"),
])
def test_infer_modality_from_intensities(name, make, expected):
    modality, reason = medvl_io.infer_modality(make(np.random.default_rng(3)))
    assert modality == expected, (name, reason)
    assert reason


@pytest.mark.parametrize("case, expected", [("lung1", "CT"), ("lung2", "CT"), ("brain1", "MR")])
def test_infer_modality_on_the_sample_cases(sample_dir, case, expected):
    path = sample_dir / f"{case}_image.nii.gz"
    if not path.exists():
        pytest.skip(f"{case} missing: run python sample_data/make_sample_data.py")
    volume = read_volume(path)
    assert volume.modality == expected and volume.meta["modality_source"] == "inferred"


def test_modality_named_in_the_header_wins_over_the_intensities(tmp_path):
    air = np.full((4, 12, 12), -1000, np.int16)  # CT-like values everywhere
    image = sitk.GetImageFromArray(air)
    image.SetMetaData("ITK_FileNotes", "T1-weighted MPRAGE")  # written as the NIfTI descrip
    sitk.WriteImage(image, str(tmp_path / "t1.nii.gz"))
    nifti = read_volume(tmp_path / "t1.nii.gz")
    assert (nifti.modality, nifti.meta["modality_source"]) == ("MR", "metadata")
    sitk.WriteImage(sitk.GetImageFromArray(air), str(tmp_path / "scan.mhd"))
    header = (tmp_path / "scan.mhd").read_text()
    header = header.replace("ObjectType = Image", "ObjectType = Image\nModality = MET_MOD_MR")
    (tmp_path / "scan.mhd").write_text(header)
    assert read_volume(tmp_path / "scan.mhd").meta["modality_source"] == "metadata"
    plain = sitk.GetImageFromArray(air)
    plain.SetMetaData("modality", "CT")  # an NRRD key/value field
    sitk.WriteImage(plain, str(tmp_path / "scan.nrrd"))
    assert read_volume(tmp_path / "scan.nrrd").meta["modality_source"] == "metadata"
    assert read_volume(tmp_path / "scan.nrrd", modality="mr").meta["modality_source"] == "user"


# ---- masks --------------------------------------------------------------------------------
@pytest.mark.parametrize("ext, tol", [(".nii.gz", 1e-6), (".nrrd", 1e-12), (".mha", 1e-12)])
def test_write_mask_geometry_and_atomic_replace(tmp_path, synthetic_volume, ext, tol):
    volume = synthetic_volume(geometry=OBLIQUE)
    path = tmp_path / f"mask{ext}"
    path.write_bytes(b"old contents")
    write_mask(path, volume.meta["truth"], like=volume)  # bool mask -> uint8
    assert os.listdir(tmp_path) == [path.name]  # replaced, no temp file left
    image = sitk.ReadImage(str(path))
    assert image.GetPixelID() == sitk.sitkUInt8
    assert Geometry.from_sitk(image).same_as(OBLIQUE, tol=tol)  # NIfTI: float32; NRRD: spacing x direction
    mask = read_mask(path, like=volume)
    np.testing.assert_array_equal(mask.array, volume.meta["truth"].astype(np.uint8))
    write_mask(path, volume.meta["truth"] * 3, like=OBLIQUE)  # like= a bare Geometry
    assert read_mask(path, like=volume).array.max() == 3


def test_write_mask_failure_keeps_old_file(tmp_path, synthetic_volume, monkeypatch):
    volume = synthetic_volume()
    path = tmp_path / "mask.nrrd"
    path.write_bytes(b"old contents")

    def broken_write(image, filename, useCompression=False):
        with open(filename, "wb") as half:
            half.write(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(medvl_io.sitk, "WriteImage", broken_write)
    with pytest.raises(ImageWriteError, match="disk full"):
        write_mask(path, volume.meta["truth"], like=volume)
    assert os.listdir(tmp_path) == ["mask.nrrd"] and path.read_bytes() == b"old contents"


def test_mask_mismatches(tmp_path, synthetic_volume):
    volume = synthetic_volume(shape_kji=(12, 20, 16))
    with pytest.raises(GeometryError, match=r"\(12, 20, 15\).*\(12, 20, 16\)"):
        write_mask(tmp_path / "m.nii.gz", np.zeros((12, 20, 15), np.uint8), like=volume)
    with pytest.raises(ImageWriteError, match="0..255"):
        write_mask(tmp_path / "m.nii.gz", np.full((12, 20, 16), 300), like=volume)
    write_mask(tmp_path / "m.nii.gz", np.zeros((12, 20, 16), np.uint8), like=volume)
    shifted = Geometry((5.0, 0.0, 0.0), volume.geometry.spacing, volume.geometry.direction)
    with pytest.raises(GeometryError, match="origin"):
        read_mask(tmp_path / "m.nii.gz", like=shifted)
    big = volume.geometry.apply_to_sitk(sitk.GetImageFromArray(np.full((12, 20, 16), 1000, np.int16)))
    sitk.WriteImage(big, str(tmp_path / "big.nii.gz"))
    with pytest.raises(ImageReadError, match="0..255"):
        read_mask(tmp_path / "big.nii.gz")


# ---- read errors --------------------------------------------------------------------------
def _write(tmp_path, name, image):
    sitk.WriteImage(image, str(tmp_path / name))
    return tmp_path / name


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"),
    ("random_nifti", "corrupt"),
    ("random_nrrd", "corrupt"),
    ("truncated_nrrd", "corrupt or unreadable"),
    ("2d", r"is 2D \(9x8\); MedVL needs a 3D volume"),
    ("4d", r"is 4D \(5x4x3x2\)"),
    ("vector", "3 components per voxel"),
    ("empty_folder", "without a DICOM series"),
])
def test_read_errors(tmp_path, case, words):
    rng = np.random.default_rng(1)
    if case == "missing":
        path = tmp_path / "nothing.nii.gz"
    elif case.startswith("random"):
        path = tmp_path / ("x.nii.gz" if case == "random_nifti" else "x.nrrd")
        path.write_bytes(rng.bytes(4000))
    elif case == "truncated_nrrd":
        path = _write(tmp_path, "t.nrrd", sitk.GetImageFromArray(rng.normal(size=(20, 20, 20))))
        path.write_bytes(path.read_bytes()[:20000])
    elif case == "2d":
        path = _write(tmp_path, "flat.nii.gz", sitk.Image([9, 8], sitk.sitkInt16))
    elif case == "4d":
        path = _write(tmp_path, "time.nii.gz", sitk.Image([5, 4, 3, 2], sitk.sitkInt16))
    elif case == "vector":
        path = _write(tmp_path, "rgb.nrrd", sitk.Image([5, 4, 3], sitk.sitkVectorFloat32, 3))
    else:
        path = tmp_path / "empty"
        path.mkdir()
    with pytest.raises(ImageReadError) as error:
        read_volume(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert error.match(words)


# ---- sample data --------------------------------------------------------------------------
SAMPLES = {  # case: (size_ijk, spacing, origin, label voxels, first and last label slice k)
    "lung1": ((512, 512, 48), (0.5703125, 0.5703125, 5.0), (-146.0, -325.0, -777.5), 837, (32, 34)),
    "lung2": ((512, 512, 61), (0.6269531, 0.6269531, 5.0), (-170.5, -324.5, -360.0), 24644, (15, 25)),
    "brain1": ((256, 256, 25), (0.78125, 0.78125, 6.5), (-99.609375, 99.609375, -78.0), 4137, (11, 17)),
}


@pytest.mark.parametrize("case", SAMPLES)
def test_sample_data(sample_dir, case):
    if not (sample_dir / f"{case}_image.nii.gz").exists():
        pytest.skip(f"{case} missing: run python sample_data/make_sample_data.py")
    size, spacing, origin, voxels, (first, last) = SAMPLES[case]
    entry = {c["case"]: c for c in json.loads((sample_dir / "cases.json").read_text())["cases"]}[case]
    image = read_volume(sample_dir / entry["image"])
    assert image.modality == entry["modality"] == ("MR" if case == "brain1" else "CT")
    assert image.size_ijk == size and image.array.dtype == np.int16
    expected = Geometry(origin, spacing, np.diag([1.0, -1.0, 1.0]) if case == "brain1" else np.eye(3))
    assert image.geometry.same_as(expected, tol=1e-5), image.geometry.describe_difference(expected)
    label = read_mask(sample_dir / entry["label"], like=image).array
    slices = np.nonzero(label.any(axis=(1, 2)))[0]
    assert int(label.sum()) == voxels == entry["label_voxels"]
    assert (slices.min(), slices.max()) == (first, last) and set(np.unique(label)) == {0, 1}
