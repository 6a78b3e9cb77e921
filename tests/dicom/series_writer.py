"""Test helper: write a numpy (k, j, i) volume as a DICOM CT (or MR) slice series with pydicom.

Each slice gets ImagePositionPatient / ImageOrientationPatient from `medvl.geometry.dicom_plane`,
PixelSpacing (row spacing = j, column spacing = i), SliceThickness, the patient/study/series/frame
of reference modules and CT image tags (signed 16-bit, RescaleSlope 1, RescaleIntercept 0, HU).
`order` chooses the order the files are written and named in: "sorted" (k), "reversed" or
"shuffled" (seeded) - file order must never matter to the reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from medvl.geometry import Geometry, dicom_plane


def _ds(values):
    return [DSfloat(float(v), auto_format=True) for v in values]


def write_series(folder, array: np.ndarray, geometry: Geometry, *, modality: str = "CT", order: str = "sorted",
                 series_uid: str | None = None, study_uid: str | None = None, frame_uid: str | None = None,
                 description: str = "test series", seed: int = 0, skip: tuple[int, ...] = ()) -> list[Path]:
    """Write `array` (numpy (k, j, i), int16 values) into `folder`; returns the files in k order.

    `skip`: slice indices k left out (a series with missing slices).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    ks = [k for k in range(array.shape[0]) if k not in skip]
    written = list(ks)
    if order == "reversed":
        written = written[::-1]
    elif order == "shuffled":
        written = list(np.random.default_rng(seed).permutation(written))
    files = {}
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    for n, k in enumerate(written):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{n:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Lung", "MEDVL-TEST", "19700101", "O"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, "20260101", "120000", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName = "A1", ""
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = series_uid, 1, modality
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.Manufacturer = "medvl-tests"
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        orientation, position = dicom_plane(geometry, k)
        ds.ImageOrientationPatient = _ds(orientation)
        ds.ImagePositionPatient = _ds(position)
        ds.PixelSpacing = _ds((geometry.spacing[1], geometry.spacing[0]))
        ds.SliceThickness = DSfloat(geometry.spacing[2], auto_format=True)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if modality == "CT":
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
            ds.KVP = "120"
        ds.PixelData = np.ascontiguousarray(array[k], dtype=np.int16).tobytes()
        ds.save_as(str(path), write_like_original=False)
        files[k] = path
    return [files[k] for k in ks]


def copy_headers_with(path: Path, **changes) -> None:
    """Rewrite one file with some header values changed (broken series for error tests)."""
    ds = pydicom.dcmread(str(path))
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(str(path), write_like_original=False)
