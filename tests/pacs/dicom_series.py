"""Write a CT volume (SimpleITK image, HU) as a DICOM series with its exact geometry (test helper).

One file per k slice: ImagePositionPatient = the physical point of voxel (0, 0, k)
(`medvl.geometry`'s index -> LPS conversion, through SimpleITK's
`TransformIndexToPhysicalPoint`), ImageOrientationPatient = the first two direction
columns, PixelSpacing = (row spacing, column spacing) = (spacing[1], spacing[0]); pixels
stored as unsigned 16 bit with RescaleIntercept -1024, RescaleSlope 1 (HU), the usual CT
storage. UIDs are generated per call; the study and series UIDs are returned.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

INTERCEPT = -1024


def _ds(value: float) -> str:
    """A decimal string (DS, <= 16 characters) holding `value` as exactly as DS allows."""
    for digits in range(16, 5, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"{value!r} does not fit a DICOM decimal string")


def write_ct_series(image: sitk.Image, folder, patient_id: str = "MEDVL-TEST", description: str = "lung2 crop"):
    """Files `folder/slice_0000.dcm` ... for a 3D CT `image`; returns (study_uid, series_uid, files)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hu = sitk.GetArrayFromImage(image).astype(np.int32)  # (k, j, i)
    stored = hu - INTERCEPT
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError(f"HU range {hu.min()}..{hu.max()} does not fit unsigned 16 bit with intercept {INTERCEPT}")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    now = datetime.datetime(2026, 1, 1, 12, 0, 0)
    files = []
    for k in range(hu.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice_{k:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Lung2", patient_id, "", "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.Manufacturer, ds.SeriesDescription = "CT", "MedVLSlicer tests", description
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [_ds(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.SliceThickness = _ds(spacing[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(INTERCEPT), "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "-600", "1500"
        ds.KVP = "120"
        ds.PixelData = stored[k].astype("<u2").tobytes()
        ds.save_as(str(path), write_like_original=False)
        files.append(path)
    return study, series, files
