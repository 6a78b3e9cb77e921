"""Fixtures for the session contract tests, shared by every engine.

`ENGINES` lists each engine under test with the traits in which engines legitimately
differ. The mechanics (test_session_mechanics.py) run on `MECHANICS_ENGINES`, every
engine: one whose checkpoint cannot exist here runs them with a tiny random-weight
config, named so ("sam2-random-tiny", "sam3-random-tiny"), and with its real checkpoint where one is
configured. The quality half (test_session_quality.py) runs on `QUALITY_ENGINES`, the
trained ones. An engine whose checkpoint is not configured is skipped, visibly, with
the reason.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch

from medvl.engines import get_engine
from medvl.geometry import Geometry
from medvl.metrics import dice  # noqa: F401  (tests import it from here)
from medvl.session import VolumeSession
from medvl.volume import Volume

NO_SAM2 = "sam2 is not installed (make installs it; docs/sam2.md)"
NO_SAM2_CHECKPOINT = "no SAM 2 checkpoint configured (set MEDVL_SAM2_CHECKPOINT)"


def _sam2_missing() -> str | None:
    try:
        import sam2.sam2_video_predictor  # noqa: F401
    except ImportError:
        return NO_SAM2
    return None


def _sam2_checkpoint_missing() -> str | None:
    from medvl.engines.sam2 import available

    return _sam2_missing() or (None if available() else NO_SAM2_CHECKPOINT)


def _sam2_random_tiny(**options):
    """TESTS ONLY: SAM 2.1 with random weights at 64 px; every walk runs to the volume's edge."""
    from medvl.engines.sam2 import build_sam2_engine

    return build_sam2_engine(random_tiny=True, image_size=64, threads=1, stop_at_empty=False, **options)


@functools.lru_cache(maxsize=1)
def tiny_random_sam3_checkpoint() -> str:
    """TESTS ONLY: one tiny RANDOM-weight SAM 3 checkpoint folder per test process (same classes
    and key layout as the public facebook/sam3 folder; medvl.bench.sam3_tiny_random)."""
    from medvl.bench.sam3_tiny_random import write_tiny_random_sam3

    folder = tempfile.mkdtemp(prefix="medvl-sam3-tiny-random-")
    atexit.register(shutil.rmtree, folder, True)
    return str(write_tiny_random_sam3(folder))


def _sam3_random_tiny(**options):
    """TESTS ONLY: SAM 3 with random weights at 56 px; every walk runs to the volume's edge."""
    from medvl.engines.sam3 import build_sam3_engine

    return build_sam3_engine(tiny_random_sam3_checkpoint(), threads=1, stop_at_empty=False, **options)


@dataclass(frozen=True)
class EngineCase:
    """An engine under test: how to build it, and where its behaviour legitimately differs."""

    build: Callable[..., object]  # engine options (cache_bytes=...) -> engine
    trained: bool  # real weights: the quality tests' Dice thresholds apply
    stops_at_object_end: bool  # propagation ends where the object ends (else it walks to the volume's edges)
    refuses_background_only: bool  # background points alone are refused as an object's first prompt
    missing: Callable[[], str | None] = lambda: None  # why it cannot run here, None when it can


ENGINES = {
    "litemedsam": EngineCase(lambda **kw: get_engine("litemedsam", **kw), trained=True,
                             stops_at_object_end=True, refuses_background_only=True),  # box_search needs a box
    "sam2-random-tiny": EngineCase(_sam2_random_tiny, trained=False, stops_at_object_end=False,
                                   refuses_background_only=False, missing=_sam2_missing),
    "sam2": EngineCase(lambda **kw: get_engine("sam2", **kw), trained=True, stops_at_object_end=True,
                       refuses_background_only=False, missing=_sam2_checkpoint_missing),
    "sam3-random-tiny": EngineCase(_sam3_random_tiny, trained=False, stops_at_object_end=False,
                                   refuses_background_only=False),
}
MECHANICS_ENGINES = ("litemedsam", "sam2-random-tiny", "sam2", "sam3-random-tiny")  # sam2: real checkpoint, where configured
QUALITY_ENGINES = tuple(name for name, case in ENGINES.items() if case.trained)


def _params(names) -> list:
    params = []
    for name in names:
        reason = ENGINES[name].missing()
        params.append(pytest.param(name, id=name, marks=pytest.mark.skipif(reason is not None, reason=reason or "")))
    return params


def blobs_volume(centres_kji=((4.5, 20, 20),), radii_kji=(3.5, 9, 9), shape=(10, 40, 40), seed=0) -> Volume:
    """CT-like (k, j, i) volume: -800 HU background, +60 HU ellipsoids; truth masks in meta['truth']."""
    rng = np.random.default_rng(seed)
    k, j, i = np.indices(shape)
    array = np.full(shape, -800.0) + rng.normal(0, 15, shape)
    truths = []
    for c in centres_kji:
        inside = sum(((g - cc) / r) ** 2 for g, cc, r in zip((k, j, i), c, radii_kji)) <= 1.0
        array[inside] = 60 + rng.normal(0, 15, int(inside.sum()))
        truths.append(inside)
    vol = Volume(array.astype(np.int16), Geometry(spacing=(1.0, 1.0, 3.0)), "CT", name=f"blobs{seed}")
    vol.meta["truth"] = truths
    return vol


def box_on(truth, k):
    """The (i, j, k) corners of the bounding box of `truth` on slice k."""
    js, is_ = np.nonzero(truth[k])
    return (int(is_.min()), int(js.min()), k), (int(is_.max()), int(js.max()), k)


def _session_factory(engine_name: str):
    def factory(volume: Volume, **engine_options) -> VolumeSession:
        session = VolumeSession(ENGINES[engine_name].build(**engine_options))
        session.set_volume(volume)
        return session
    return factory


@pytest.fixture
def _torch_threads():
    """An engine built with `threads=` sets torch's process-wide thread count: put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=_params(MECHANICS_ENGINES))
def engine_name(request):
    return request.param


@pytest.fixture
def traits(engine_name) -> EngineCase:
    return ENGINES[engine_name]


@pytest.fixture
def make_session(engine_name, _torch_threads):
    return _session_factory(engine_name)


@pytest.fixture(params=_params(QUALITY_ENGINES))
def trained_engine_name(request):
    return request.param


@pytest.fixture
def make_trained_session(trained_engine_name, _torch_threads):
    return _session_factory(trained_engine_name)
