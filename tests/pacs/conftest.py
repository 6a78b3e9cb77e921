"""Fixtures for the PACS tests: a private Orthanc holding a CT series made from a lung2 crop.

`orthanc` starts `/usr/sbin/Orthanc` with a generated config (`tests/pacs/orthanc.py`:
loopback only, no DICOM listener, storage in a tmp folder, the DICOMweb plugin) and uploads
the series through Orthanc's REST API (`POST /instances`); it is stopped after the module.
Without the Debian packages every test here is skipped, naming the install command.
"""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from tests.pacs.dicom_series import write_ct_series
from tests.pacs.orthanc import OrthancProcess, missing_reason
from tests.server.conftest import HAVE_MONAILABEL, HAVE_SAMPLES, SAMPLE_DIR

CROP = (slice(314, 410), slice(326, 406), slice(12, 28))  # ITK (i, j, k): 96 x 80 x 16 around lung2's nodule

requires_orthanc = pytest.mark.skipif(bool(missing_reason()), reason=missing_reason() or "Orthanc installed")
requires_pacs_server = pytest.mark.skipif(
    not (HAVE_MONAILABEL and HAVE_SAMPLES),
    reason="needs monailabel + itk installed (requirements/server.txt) and sample_data/lung2_*.nii.gz")


@pytest.fixture(scope="module")
def lung2_crop(tmp_path_factory):
    """The crop as NIfTI image + expert label, and as a DICOM CT series: paths and UIDs."""
    folder = tmp_path_factory.mktemp("lung2_crop")
    image = sitk.ReadImage(str(SAMPLE_DIR / "lung2_image.nii.gz"))[CROP]
    label = sitk.ReadImage(str(SAMPLE_DIR / "lung2_label.nii.gz"))[CROP]
    sitk.WriteImage(image, str(folder / "lung2crop.nii.gz"))
    sitk.WriteImage(label, str(folder / "lung2crop_label.nii.gz"))
    study, series, files = write_ct_series(image, folder / "dicom")
    return {"image": folder / "lung2crop.nii.gz", "label": folder / "lung2crop_label.nii.gz",
            "study": study, "series": series, "files": files}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, lung2_crop):
    """A running private Orthanc with the crop's series stored in it."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with OrthancProcess(tmp_path_factory.mktemp("orthanc")) as process:
        process.upload(lung2_crop["files"])
        yield process
