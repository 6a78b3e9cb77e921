"""Choosing the stop rule, carry mode and view on traces (medvl.bench.stoprule), no model needed."""

from __future__ import annotations

import math

import numpy as np

from medvl.bench.stoprule import BASELINE, Trace, TraceStep, _policy_trace, cross_validate, dice_for
from medvl.engines.litemedsam.tracking import Step, TrackingSettings


def _step(score, tp, pred, truth, growth=1.0):
    return TraceStep(Step(0, None, score, pred, 1.0, growth, 0.0, 1.0), tp, pred, truth)


def _trace(target, group, carry, walk, seed_iou=(0.9, 0.5)):
    return Trace(target, group, "CT", 1.0, 90, 100, 300, [walk, []], carry, seed_iou)


def test_dice_counts_the_walk_up_to_the_first_refused_step():
    walk = [_step(0.9, 90, 100, 100), _step(0.2, 0, 100, 100), _step(0.9, 90, 100, 100)]
    t = _trace("a", "lung lesion", (0.0, 0.0, "whole"), walk)
    assert math.isclose(dice_for(t, TrackingSettings(min_score=0.5)), 2 * 180 / (200 + 300))
    assert math.isclose(dice_for(t, TrackingSettings(min_score=0.0)), 2 * 270 / (400 + 300))


def test_a_zoom_policy_falls_back_to_the_whole_slice_trace_above_its_bound():
    whole = _trace("a", "g", (0.0, 0.0, "whole"), [], seed_iou=(0.9, 0.95))
    chosen = _trace("a", "g", (0.0, 0.0, "chosen"), [], seed_iou=(0.9, 0.95))
    by_key = {("a", whole.carry): whole, ("a", chosen.carry): chosen}
    assert _policy_trace(by_key, "a", (0.0, 0.0, "chosen", 0.8)) is whole
    assert _policy_trace(by_key, "a", (0.0, 0.0, "chosen", math.inf)) is chosen


def test_each_held_out_group_is_scored_with_a_rule_chosen_without_it():
    # group A's walks are good until a low-score step; group B's good steps all score low: what
    # suits B (no score test) hurts A, so B's held-out rule comes from A and vice versa
    good, bad, low_good = _step(0.9, 90, 100, 100), _step(0.35, 0, 100, 100), _step(0.35, 90, 100, 100)
    traces = []
    for n in range(3):
        for carry in ((0.0, 0.0, "whole"), (0.0, 0.0, "chosen")):
            traces.append(_trace(f"A{n}", "lung lesion", carry, [good, bad, bad, bad]))
            traces.append(_trace(f"B{n}", "cortex-like", carry, [low_good, low_good, low_good]))
    report = cross_validate(traces)
    assert set(report["folds"]) == {"lung lesion", "cortex-like"}
    a_rule = report["folds"]["cortex-like"]["rule"]  # chosen on group A alone
    assert a_rule["min_score"] > 0.35
    # B under A's rule keeps only its prompted slice; A under B's rule takes its bad steps too
    assert math.isclose(report["cross_validated_per_group"]["cortex-like"], 2 * 90 / (100 + 300), abs_tol=1e-4)
    assert math.isclose(report["cross_validated_per_group"]["lung lesion"], 2 * 180 / (500 + 300), abs_tol=1e-4)
    assert report["baseline_mean_dice"] is not None and BASELINE[0] == (0.0, 0.0, "whole")
    assert np.isfinite(report["cross_validated_mean_dice"])
