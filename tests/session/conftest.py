"""Fixtures for the session contract tests, shared by every engine.

`ENGINES` lists the engine names the contract runs against; an engine whose weights
cannot exist here adds a tiny random-config factory to `ENGINE_FACTORIES` (named so).
"""

from __future__ import annotations

import numpy as np
import pytest

from medvl.engines import get_engine
from medvl.geometry import Geometry
from medvl.session import VolumeSession
from medvl.volume import Volume

ENGINE_FACTORIES = {
    "litemedsam": lambda **kw: get_engine("litemedsam", **kw),
}


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


@pytest.fixture(params=sorted(ENGINE_FACTORIES))
def engine_name(request):
    return request.param


@pytest.fixture
def make_session(engine_name):
    def factory(volume: Volume, **engine_options) -> VolumeSession:
        session = VolumeSession(ENGINE_FACTORIES[engine_name](**engine_options))
        session.set_volume(volume)
        return session
    return factory


def dice(a, b) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total
