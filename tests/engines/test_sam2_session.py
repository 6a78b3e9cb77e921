"""The session contract's mechanics with the `sam2` engine behind `VolumeSession`.

Same volumes and calls as tests/session (directions, several slices, objects, undo,
cache bound, cancel, axes), on a tiny random-weight SAM 2.1: random weights cannot
meet the contract's Dice thresholds, so what is checked here is where masks go and
what gets encoded - the quality half runs when a real checkpoint is configured
(`test_real_checkpoint_segments_the_blob`).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("sam2.sam2_video_predictor", reason="sam2 is not installed (make installs it; docs/sam2.md)")

from medvl.engines.sam2 import available, build_sam2_engine  # noqa: E402
from medvl.session import VolumeSession  # noqa: E402
from tests.session.conftest import blobs_volume, dice  # noqa: E402

SLICES = 10  # blobs_volume() is (10, 40, 40) (k, j, i)


def session_with(volume, **options) -> VolumeSession:
    engine = build_sam2_engine(random_tiny=True, image_size=64, threads=1, stop_at_empty=False, **options)
    session = VolumeSession(engine)
    session.set_volume(volume)
    return session


def box_on(truth, k):
    js, is_ = np.nonzero(truth[k])
    return (int(is_.min()), int(js.min()), k), (int(is_.max()), int(js.max()), k)


def test_box_propagates_both_ways():
    vol = blobs_volume()
    s = session_with(vol)
    r = s.add_box(*box_on(vol.meta["truth"][0], 4))
    assert (r.slice_index, r.axis, r.mask.shape) == (4, "k", (40, 40))
    seen = [i for i, _ in s.propagate()]
    assert sorted(seen) == [i for i in range(SLICES) if i != 4] and seen[:2] == [3, 5]


def test_prompts_on_several_slices_fill_the_gap_once():
    vol = blobs_volume(radii_kji=(4.5, 9, 9))
    truth = vol.meta["truth"][0]
    s = session_with(vol)
    s.add_box(*box_on(truth, 2))
    s.add_box(*box_on(truth, 7))
    filled = [i for i, _ in s.propagate()]
    assert sorted(filled) == [0, 1, 3, 4, 5, 6, 8, 9]


def test_objects_are_independent_and_reset_forgets_one():
    vol = blobs_volume(centres_kji=((4.5, 12, 12), (4.5, 28, 28)), radii_kji=(3.5, 6, 6))
    a, b = vol.meta["truth"]
    s = session_with(vol)
    s.add_box(*box_on(a, 4), obj_id=1)
    s.add_box(*box_on(b, 4), obj_id=2)
    s.run_propagation()
    assert s.stats()["encoder_passes"] == SLICES  # two objects, one encoder pass per slice
    assert set(np.unique(s.labels())) <= {0, 1, 2}
    s.reset(2)
    assert s.objects == [1] and not (s.labels() == 2).any()


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


def test_cache_stays_inside_its_byte_budget():
    vol = blobs_volume()
    probe = session_with(vol)
    probe.add_point((20, 20, 4))
    per_slice = probe.stats()["cache_bytes"]
    s = session_with(vol, cache_bytes=2 * per_slice)
    s.add_box(*box_on(vol.meta["truth"][0], 4))
    s.run_propagation()
    st = s.stats()
    assert st["cache_entries"] <= 2 and st["cache_bytes"] <= 2 * per_slice and st["cache_evictions"] > 0
    s.add_point((20, 20, 4))  # slice 4 was evicted: encoded again
    assert s.stats()["encoder_passes"] == st["encoder_passes"] + 1


def test_cancel_keeps_what_was_done():
    vol = blobs_volume()
    s = session_with(vol)
    s.add_box(*box_on(vol.meta["truth"][0], 4))
    got = []
    for index, _ in s.propagate(should_stop=lambda: len(got) >= 1):
        got.append(index)
    assert len(got) == 1


@pytest.mark.parametrize("axis", ["i", "j"])
def test_prompts_along_other_axes_keep_the_slice_grid(axis):
    s = session_with(blobs_volume())
    r = s.add_point((20, 20, 4), positive=True, axis=axis)
    assert (r.axis, r.slice_index, r.mask.shape) == (axis, 20, (10, 40))
    assert s.run_propagation() == 39  # every other slice along that axis


@pytest.mark.skipif(not available(), reason="no SAM 2 checkpoint configured (set MEDVL_SAM2_CHECKPOINT)")
def test_real_checkpoint_segments_the_blob():
    vol = blobs_volume()
    truth = vol.meta["truth"][0]
    s = VolumeSession(build_sam2_engine())
    s.set_volume(vol)
    s.add_box(*box_on(truth, 4))
    s.run_propagation()
    assert dice(s.mask(1), truth) >= 0.8, os.environ.get("MEDVL_SAM2_CHECKPOINT")
