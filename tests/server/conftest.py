"""Fixtures for the server tests: the real MONAI Label server, started once, and an HTTP client.

`server` (defined in tests/conftest.py, shared with the Slicer tests) starts `python -m monailabel.main start_server --app monailabel_app --studies TMP`
(through `medvl.server.launch`) on a free loopback port, with a temporary studies folder
holding copies of the sample images (`sample_data/*_image.nii.gz`; the expert labels stay
in sample_data/ for scoring). It is session-scoped: the suite pays the ~15 s start once.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from medvl.io import read_mask, read_volume
from medvl import metrics

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"
HAVE_MONAILABEL = importlib.util.find_spec("monailabel") is not None and importlib.util.find_spec("itk") is not None
HAVE_SAMPLES = (SAMPLE_DIR / "lung2_image.nii.gz").is_file()

requires_server = pytest.mark.skipif(
    not (HAVE_MONAILABEL and HAVE_SAMPLES),
    reason="needs monailabel + itk installed (requirements/server.txt) and sample_data/*.nii.gz",
)


@dataclass
class Reply:
    """One HTTP answer: status, JSON part (or error body), and the returned mask if any."""

    status: int
    json: dict
    mask: object = None  # medvl.volume.Volume (uint8 array (k, j, i) + geometry) or None
    seconds: float = 0.0  # client-side wall time of the request

    @property
    def detail(self) -> str:
        return str(self.json.get("detail", ""))


class Client:
    """`medvl.server.client.ServerClient`, with masks read back into Volumes for the checks."""

    def __init__(self, url: str, workdir: Path):
        from medvl.server.client import ServerClient

        self.url, self.workdir, self.api = url, workdir, ServerClient(url)

    def get(self, path: str, **params):
        return self.api.http.get(self.url + path, params=params, timeout=60)

    def infer(self, image: str | None, params, model: str = "medvl_interactive", upload: Path | None = None,
              raw_params: str | None = None, request_id: str | None = None) -> Reply:
        r = self.api.infer(image, params, model=model, upload=upload, raw_params=raw_params, request_id=request_id)
        mask = read_mask(r.save(Path(tempfile.mkdtemp(dir=self.workdir)) / r.filename)) if r.image else None
        return Reply(r.status, r.json, mask, r.seconds)

    def put_label(self, image: str, path: Path, tag: str = "final"):
        return self.api.put_label(image, path, tag)


@pytest.fixture(scope="session")
def client(server, tmp_path_factory) -> Client:
    return Client(server.url, tmp_path_factory.mktemp("replies"))


@pytest.fixture(scope="session")
def lung2():
    """lung2 image and expert label, plus prompts derived from the label (ITK (i, j, k))."""
    image = read_volume(SAMPLE_DIR / "lung2_image.nii.gz")
    label = read_mask(SAMPLE_DIR / "lung2_label.nii.gz").array.astype(bool)
    return {"image": image, "label": label, "point": inner_point(label), "roi": bbox_roi(label)}


def inner_point(label: np.ndarray) -> list[int]:
    """The label voxel nearest the centroid of its largest k slice, as ITK [i, j, k]."""
    k = int(np.argmax(label.sum(axis=(1, 2))))
    js, is_ = np.nonzero(label[k])
    n = int(np.argmin((js - js.mean()) ** 2 + (is_ - is_.mean()) ** 2))
    return [int(is_[n]), int(js[n]), k]


def bbox_roi(label: np.ndarray) -> list[int]:
    """The label's bounding box as the Slicer client's roi [i0, i1, j0, j1, k0, k1]."""
    k, j, i = np.nonzero(label)
    return [int(i.min()), int(i.max()), int(j.min()), int(j.max()), int(k.min()), int(k.max())]


def largest_slice_box(label: np.ndarray) -> list[list[int]]:
    """Corner pair [[i0, j0, k], [i1, j1, k]] of the label's bbox on its largest k slice."""
    k = int(np.argmax(label.sum(axis=(1, 2))))
    j, i = np.nonzero(label[k])
    return [[int(i.min()), int(j.min()), k], [int(i.max()), int(j.max()), k]]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """0.0 for two empty masks, so that a test never passes on an empty answer."""
    return metrics.dice(a, b, empty=0.0)


def empty_soon(folder: Path, timeout_s: float = 10.0) -> None:
    """Assert `folder` is empty within `timeout_s` (files removed by a background task after a reply)."""
    import time

    deadline = time.monotonic() + timeout_s
    while list(folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(folder.iterdir()), sorted(p.name for p in folder.iterdir())
