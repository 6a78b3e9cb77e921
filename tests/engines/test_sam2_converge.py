"""The `sam2` engine's convergence stop (Sam2Settings.converge_stop) on a tiny random-weight SAM 2.1.

Random weights give arbitrary masks: these tests check the mechanics - where a corrected
walk stops, how many slices it re-tracks (the engine's `track_steps`), that the slices
before the stop equal full re-propagation and the slices beyond it the previous run.
The masks here cover ~20 low-res pixels, so one pixel moves IoU by ~0.05: the tests
use converge_iou=0.9 (the default 0.98 is for real masks).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sam2.sam2_video_predictor", reason="sam2 is not installed (make installs it; docs/sam2.md)")

from medvl.engines.base import SlicePrompt  # noqa: E402
from medvl.engines.sam2 import build_sam2_engine  # noqa: E402
from medvl.errors import EngineError  # noqa: E402

SHAPE = (40, 64, 64)  # (k, j, i): long enough for a walk to agree on num_maskmem (7) slices
CLICK = SlicePrompt(points=[(32.0, 32.0)], labels=[1])
FIX = SlicePrompt(points=[(40.0, 40.0)], labels=[0])


def make_engine(converge: bool):
    return build_sam2_engine(random_tiny=True, image_size=64, threads=1, stop_at_empty=False,
                             converge_stop=converge, converge_iou=0.9)


@pytest.fixture(scope="module")
def engines():
    return make_engine(False), make_engine(True)


@pytest.fixture
def volume(synthetic_volume):
    return synthetic_volume(shape_kji=SHAPE, radius=5.0)


def click_then_correct(engine, volume, fix_slice: int):
    """First click on slice 2, propagate; correction on `fix_slice`, propagate again."""
    state = engine.bind(volume, "k")

    def propagate(prompts):
        seeds = {i: engine.segment_slice(state, i, p, obj_id=1).mask for i, p in prompts.items()}
        return dict(engine.propagate(state, seeds, prompts, obj_id=1))

    first = propagate({2: CLICK})
    before = engine.stats(state)
    second = propagate({2: CLICK, fix_slice: FIX})
    after = engine.stats(state)
    return state, first, second, after["track_steps"] - before["track_steps"], after["converged_stops"]


def test_correction_far_from_the_end_stops_early(engines, volume):
    full_engine, stop_engine = engines
    _, _, full, full_steps, full_stops = click_then_correct(full_engine, volume, 10)
    state, first, second, steps, stops = click_then_correct(stop_engine, volume, 10)
    assert full_stops == 0 and full_steps == 3 + 29  # 10 -> 9..7 and 10 -> 11..39, every slice
    assert stops == 1 and steps < full_steps
    assert sorted(second) == sorted(full)  # every slice still answered
    layout = state.objects[1].layout
    kept = sorted(i for i in range(11, SHAPE[0]) if layout[i].run.origin == 2)  # continued along the old walk
    assert kept and kept[-1] == SHAPE[0] - 1 and kept == list(range(kept[0], SHAPE[0]))
    assert steps == 3 + (kept[0] - 11)  # re-tracked only up to the stop
    for i in kept:  # beyond the stop: the previous run's results
        assert np.array_equal(second[i], first[i])
    for i in (i for i in full if i < kept[0]):  # up to the stop: exactly what full re-propagation gives
        assert np.array_equal(second[i], full[i]), i


def test_correction_near_the_end_retracks_to_the_end(engines, volume):
    full_engine, stop_engine = engines
    _, _, full, full_steps, _ = click_then_correct(full_engine, volume, 35)
    state, _, second, steps, stops = click_then_correct(stop_engine, volume, 35)
    # 35 -> 36..39 is shorter than the memory bank; 35 -> 34..19 meets a walk going the other way
    assert (stops, steps) == (0, full_steps) and full_steps == 4 + 16
    assert all(np.array_equal(second[i], full[i]) for i in full)
    assert state.objects[1].layout[SHAPE[0] - 1].run.origin == 35


def test_bad_threshold_is_an_error_naming_it():
    with pytest.raises(EngineError, match="converge_iou=1.5"):
        build_sam2_engine(random_tiny=True, image_size=64, threads=1, converge_iou=1.5)
