"""`sam2` behind `VolumeSession`, beyond the session contract that every engine keeps.

The shared contract runs in tests/session: its mechanics on a tiny random-weight SAM 2.1
("sam2-random-tiny"), its quality half when a real checkpoint is configured. What is
left here is sam2's own: a correction on a propagated slice refines it with the memory
that produced it, and undoing that correction restores the earlier propagation from the
kept walks, without encoding a slice again (litemedsam refuses the background-only
click this starts from).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sam2.sam2_video_predictor", reason="sam2 is not installed (make installs it; docs/sam2.md)")

from medvl.session import VolumeSession  # noqa: E402
from tests.session.conftest import ENGINES, blobs_volume, box_on  # noqa: E402

SLICES = 10  # blobs_volume() is (10, 40, 40) (k, j, i)


def session_with(volume, **options) -> VolumeSession:
    session = VolumeSession(ENGINES["sam2-random-tiny"].build(**options))
    session.set_volume(volume)
    return session


def test_undo_after_a_correction_restores_without_encoding():
    vol = blobs_volume()
    s = session_with(vol)
    s.add_box(*box_on(vol.meta["truth"][0], 4))
    s.run_propagation()
    propagated = s.mask(1).copy()
    s.add_point((20, 20, 7), positive=False)
    s.run_propagation()
    passes = s.stats()["encoder_passes"]
    s.undo(1)  # the second propagation
    s.undo(1)  # the correction click
    s.run_propagation()
    assert np.array_equal(s.mask(1), propagated)
    assert s.stats()["encoder_passes"] == passes == SLICES
