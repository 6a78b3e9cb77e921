"""The PACS tests' CT series: a SimpleITK image (HU) written by `medvl.bench.dicom_series` as the usual CT
storage (unsigned 16 bit, RescaleIntercept -1024), with the study and series UIDs returned for Orthanc."""

from __future__ import annotations

import SimpleITK as sitk
from pydicom.uid import generate_uid

from medvl.bench.dicom_series import write_series
from medvl.geometry import Geometry


def write_ct_series(image: sitk.Image, folder, patient_id: str = "MEDVL-TEST", description: str = "lung2 crop"):
    """Files in `folder` for a 3D CT `image`; returns (study_uid, series_uid, files in k order)."""
    study, series = generate_uid(), generate_uid()
    files = write_series(folder, sitk.GetArrayFromImage(image), Geometry.from_sitk(image), series_uid=series,
                         study_uid=study, description=description, patient_id=patient_id, unsigned=True)
    return study, series, files
