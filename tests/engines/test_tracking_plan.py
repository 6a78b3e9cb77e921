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
