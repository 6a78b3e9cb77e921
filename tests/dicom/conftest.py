"""Fixtures for the DICOM tests: lung2 written as a DICOM CT series (once per session), geometries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medvl.geometry import Geometry
from medvl.bench.dicom_series import write_series

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"
HAVE_LUNG2 = (SAMPLE_DIR / "lung2_image.nii.gz").is_file()
requires_lung2 = pytest.mark.skipif(not HAVE_LUNG2, reason="needs sample_data/lung2_image.nii.gz (make_sample_data.py)")

ROTATED = (0.6, -0.8, 0.0, 0.8, 0.6, 0.0, 0.0, 0.0, 1.0)  # 3-4-5 rotation about z: exact in DICOM text
GEOMETRIES = {
    "axial": Geometry((-120.5, -80.25, -300.0), (0.7, 0.7, 2.5)),
    # row +x, column -y, slices towards feet (-z): right-handed, k runs against z
    "flipped": Geometry((10.0, 40.0, 50.0), (0.8, 0.6, 3.0), (1, 0, 0, 0, -1, 0, 0, 0, -1)),
    "oblique": Geometry((-100.5, 20.25, -300.0), (0.5, 0.75, 2.5),
                        np.array([[0.6, 0.8 * 0.8, 0.8 * 0.6], [-0.8, 0.6 * 0.8, 0.6 * 0.6], [0.0, -0.6, 0.8]]).ravel()),
}


@pytest.fixture(scope="session")
def lung2():
    """(image Volume, expert label Volume) of sample_data/lung2 (NIfTI)."""
    if not HAVE_LUNG2:
        pytest.skip("needs sample_data/lung2_*.nii.gz")
    from medvl.io import read_mask, read_volume

    return read_volume(SAMPLE_DIR / "lung2_image.nii.gz"), read_mask(SAMPLE_DIR / "lung2_label.nii.gz")


@pytest.fixture(scope="session")
def lung2_dicom(lung2, tmp_path_factory) -> Path:
    """lung2 as a 61-slice DICOM CT series (files written in shuffled order), its exact geometry."""
    image, _ = lung2
    folder = tmp_path_factory.mktemp("lung2_dicom") / "series"
    write_series(folder, image.array, image.geometry, order="shuffled", description="lung2 CT")
    return folder
