"""Write a numpy (k, j, i) volume as a DICOM CT (or MR) slice series with pydicom: the DICOM inputs
of the tests (tests/dicom, tests/pacs) and of `medvl bench-dicom`. Not a product writer: MedVLSlicer
never writes image series, only SEG and SR (`medvl.dicom`).

Each slice gets ImagePositionPatient / ImageOrientationPatient from `medvl.geometry.dicom_plane`,
PixelSpacing (row spacing = j, column spacing = i), SliceThickness, the patient/study/series/frame
of reference modules and CT image tags (HU; `unsigned=False`: signed 16-bit, RescaleIntercept 0;
`unsigned=True`: unsigned 16-bit with RescaleIntercept -1024, the usual CT storage).
`order` chooses the order the files are written and named in: "sorted" (k), "reversed" or
"shuffled" (seeded) - file order must never matter to the reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

from medvl.geometry import Geometry, dicom_plane


def _ds(values):
    return [DSfloat(float(v), auto_format=True) for v in values]


def write_series(folder, array: np.ndarray, geometry: Geometry, *, modality: str = "CT", order: str = "sorted",
                 series_uid: str | None = None, study_uid: str | None = None, frame_uid: str | None = None,
                 description: str = "test series", seed: int = 0, skip: tuple[int, ...] = (),
                 patient_id: str = "MEDVL-TEST", unsigned: bool = False) -> list[Path]:
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
    intercept = -1024 if unsigned else 0
    stored_values = np.asarray(array, dtype=np.int32) - intercept
    lo, hi = (0, 65535) if unsigned else (-32768, 32767)
    if stored_values.size and (stored_values.min() < lo or stored_values.max() > hi):
        raise ValueError(f"values {array.min()}..{array.max()} do not fit {'unsigned' if unsigned else 'signed'} "
                         f"16 bit with RescaleIntercept {intercept}")
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
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Lung", patient_id, "19700101", "O"
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
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0 if unsigned else 1
        if modality == "CT":
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(intercept), "1", "HU"
            ds.WindowCenter, ds.WindowWidth = "-600", "1500"
            ds.KVP = "120"
        ds.PixelData = np.ascontiguousarray(stored_values[k], dtype="<u2" if unsigned else "<i2").tobytes()
        ds.save_as(str(path), write_like_original=False)
        files[k] = path
    return [files[k] for k in ks]


# -- independent readers (not ours: highdicom's and pydicom-seg's), to check our SEG files ---------------
def read_with_highdicom(path, headers) -> np.ndarray:
    """(k, j, i) segment numbers from highdicom, frames matched to the source instances by UID."""
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    return seg.get_pixels_by_source_instance([h.SOPInstanceUID for h in headers], combine_segments=True,
                                             skip_overlap_checks=True).astype(np.uint8)


def read_with_pydicom_seg(path, geometry: Geometry, shape) -> np.ndarray:
    """(k, j, i) labels from pydicom-seg's MultiClassReader: its image covers only the frames the SEG
    holds, so it is placed on the series' grid by its own geometry (origin -> index, direction equal)."""
    import pydicom_seg

    result = pydicom_seg.MultiClassReader().read(pydicom.dcmread(str(path)))
    image = result.image
    sub = Geometry.from_sitk(image)
    start = geometry.physical_to_index(sub.origin)
    i0, j0, k0 = np.round(start).astype(int)
    if not (np.allclose(sub.direction, geometry.direction, atol=1e-5) and np.allclose(sub.spacing, geometry.spacing,
                                                                                      atol=1e-4)
            and np.allclose(start, (i0, j0, k0), atol=1e-4)):
        raise ValueError(f"{path}: pydicom-seg's grid is not a sub-grid of the series': "
                         f"{sub.describe_difference(geometry)}, origin at index {tuple(start)}")
    out = np.zeros(shape, np.uint8)
    arr = sitk.GetArrayFromImage(image)
    out[k0:k0 + arr.shape[0], j0:j0 + arr.shape[1], i0:i0 + arr.shape[2]] = arr
    return out


def copy_headers_with(path: Path, **changes) -> None:
    """Rewrite one file with some header values changed (broken series for error tests)."""
    ds = pydicom.dcmread(str(path))
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(str(path), write_like_original=False)
