"""Which slices each walk of a propagation may fill (litemedsam tracking `_plan`), no model needed."""

from __future__ import annotations

import numpy as np

from medvl.engines.litemedsam.tracking import _plan

FULL, EMPTY = np.ones((2, 2), bool), np.zeros((2, 2), bool)


def _walks(seeds, changed=None, previous=None, last=20):
    return sorted((w.start, w.stop, w.direction) for w in _plan(seeds, last, set(changed or seeds), previous))


def test_two_seeds_meet_halfway_and_walk_out_to_the_ends():
    assert _walks({4: FULL, 10: FULL}) == [(4, 0, -1), (4, 7, 1), (10, 8, -1), (10, 20, 1)]


def test_an_emptied_seed_is_a_barrier_no_walk_crosses():
    assert _walks({4: EMPTY, 10: FULL}) == [(10, 5, -1), (10, 20, 1)]


def test_a_correction_walks_halfway_towards_an_unchanged_seed_and_not_past_the_result():
    previous = {i: FULL for i in range(6, 15)}
    walks = _walks({8: FULL, 12: FULL}, changed={8}, previous=previous)
    assert walks == [(8, 6, -1), (8, 10, 1)]  # 6..14 is the result's range; 9..10 is the click's half


def test_a_click_beyond_the_result_walks_on_outwards():
    previous = {i: FULL for i in range(6, 12)}
    assert _walks({8: FULL, 15: FULL}, changed={15}, previous=previous) == [(15, 12, -1), (15, 20, 1)]


def test_a_click_far_beyond_the_result_fills_the_whole_gap_to_it():
    previous = {i: FULL for i in range(6, 12)}
    assert _walks({8: FULL, 19: FULL}, changed={19}, previous=previous) == [(19, 12, -1), (19, 20, 1)]


def test_the_carried_box_keeps_the_prompted_boxs_slack_around_a_too_small_mask():
    from medvl.engines.litemedsam.tracking import TrackingSettings, carried_box, slack

    mask = np.zeros((40, 40), bool)
    mask[18:22, 18:22] = True  # the model answered a 20-px box with a 4-px mask
    box = (10, 10, 29, 29)
    room = slack(box, mask)
    assert room == (8.0, 8.0, 8.0, 8.0)
    plain = carried_box(mask, None, TrackingSettings(margin_mm=1.0), (1.0, 1.0))
    kept = carried_box(mask, None, TrackingSettings(margin_mm=1.0, seed_slack=1.0), (1.0, 1.0), room)
    assert plain == (17, 17, 22, 22) and kept == box


def test_contrast_loss_is_positive_when_a_slice_loses_the_prompted_contrast():
    from medvl.engines.litemedsam.tracking import Reference, Step, accept, TrackingSettings

    ref = Reference(median=800.0, spread=50.0, contrast=600.0)
    kept = 1.0 * (ref.contrast - 580.0) / ref.spread
    lost = 1.0 * (ref.contrast - 50.0) / ref.spread
    rule = TrackingSettings(max_contrast_loss=2.0, min_contrast_ratio=-np.inf)
    base = dict(index=0, mask=None, score=0.9, area=100, overlap=1.0, growth=1.0, intensity_z=0.0, contrast_ratio=1.0)
    assert accept(Step(**base, contrast_loss=kept), 1.0, "MR", rule)
    assert not accept(Step(**base, contrast_loss=lost), 1.0, "MR", rule)
    assert accept(Step(**base, contrast_loss=lost), 1.0, "CT", rule)  # HU: the intensity test covers CT
