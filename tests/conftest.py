"""Shared fixtures: the sample data folder and a seeded synthetic volume factory."""

from __future__ import annotations

from pathlib import Path

import importlib.util
import shutil

import numpy as np
import pytest

from medvl.geometry import Geometry
from medvl.volume import Volume

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The repository's sample_data folder (lung1, lung2, brain1 NIfTI + cases.json)."""
    return SAMPLE_DIR


def make_synthetic_volume(shape_kji=(12, 20, 16), geometry: Geometry | None = None, modality="CT",
                          seed=0, radius=4.0) -> Volume:
    """Seeded noise volume, numpy (k, j, i), with a bright ball at the centre.

    CT: background about -1000 HU, ball about +40 HU (int16); MR: background about 100,
    ball about 800 (int16). `volume.meta["truth"]` is the ball as a bool (k, j, i) mask.
    """
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape_kji)
    centre = [(n - 1) / 2 for n in shape_kji]
    ball = (k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2 <= radius**2
    low, high = (-1000, 40) if modality == "CT" else (100, 800)
    array = np.where(ball, high, low) + rng.normal(0, 10, shape_kji)
    volume = Volume(np.round(array).astype(np.int16), geometry or Geometry(spacing=(0.8, 0.8, 2.5)),
                    modality, name=f"synthetic{seed}")
    volume.meta["truth"] = ball
    return volume


@pytest.fixture
def synthetic_volume():
    """Factory: `synthetic_volume(shape_kji=..., geometry=..., modality=..., seed=...)` -> Volume."""
    return make_synthetic_volume


HAVE_SERVER_DEPS = importlib.util.find_spec("monailabel") is not None and importlib.util.find_spec("itk") is not None


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The running server: `.url`, `.studies`, `.alive()`; stopped after the last test."""
    if not (HAVE_SERVER_DEPS and (SAMPLE_DIR / 'lung2_image.nii.gz').is_file()):
        pytest.skip("needs monailabel + itk installed (requirements/server.txt) and sample_data/*.nii.gz")
    from medvl.server.launch import ServerProcess

    studies = tmp_path_factory.mktemp("studies")
    for image in sorted(SAMPLE_DIR.glob("*_image.nii.gz")):
        shutil.copy(image, studies / image.name)
    process = ServerProcess(studies, log_path=tmp_path_factory.mktemp("log") / "server.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()
