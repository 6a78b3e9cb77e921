"""The session contract's mechanics, which every engine keeps: directions, several slices,
several objects, undo, the feature cache and its budget, cancel, other axes, errors.

These hold whatever the weights, so they run on every engine, including those whose
checkpoint cannot exist here (a tiny random-weight config, "sam2-random-tiny"): what is
checked is where masks go, what is kept and what gets encoded, not whether a mask is
right - random weights cannot meet Dice thresholds, so segmentation quality is checked
on trained engines only (test_session_quality.py). Where engines legitimately differ
(where propagation stops, which first prompts are refused) the test says so through the
engine's traits (`EngineCase` in conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from medvl.errors import PromptError, SessionError
from tests.session.conftest import blobs_volume, box_on

SLICES = 10  # blobs_volume() is (10, 40, 40) (k, j, i)


def _along(axis: str, index: int):
    """The numpy (k, j, i) index of slice `index` along `axis`."""
    return {"k": np.s_[index, :, :], "j": np.s_[:, index, :], "i": np.s_[:, :, index]}[axis]


def _stacked(shape, axis: str, slices: dict) -> np.ndarray:
    """A bool (k, j, i) volume holding the 2D masks `slices` (index -> mask) along `axis`."""
    out = np.zeros(shape, dtype=bool)
    for index, mask in slices.items():
        out[_along(axis, index)] = mask
    return out


def test_box_propagates_both_ways(make_session, traits):
    vol = blobs_volume()
    s = make_session(vol)
    r = s.add_box(*box_on(vol.meta["truth"][0], 4))
    assert r.slice_index == 4 and r.axis == "k" and r.mask.shape == (40, 40)
    yielded = list(s.propagate())
    order = [index for index, _ in yielded]
    assert order[:2] == [3, 5], f"the two directions interleave, got {order}"
    assert len(order) == len(set(order)) and 4 not in order
    if not traits.stops_at_object_end:
        assert sorted(order) == [i for i in range(SLICES) if i != 4]
    assert np.array_equal(s.mask(1), _stacked(vol.array.shape, "k", {4: r.mask, **dict(yielded)}))


def test_propagation_encodes_each_slice_at_most_once(make_session, traits):
    vol = blobs_volume()
    truth = vol.meta["truth"][0]
    s = make_session(vol)
    s.add_box(*box_on(truth, 4))
    kept = s.run_propagation()
    passes = s.stats()["encoder_passes"]
    if traits.stops_at_object_end:
        assert passes <= int(truth.any(axis=(1, 2)).sum()) + 2, "only object slices plus one each side"
        assert passes <= 1 + kept + 2, "the prompted slice, the kept ones and the one that ends each walk"
    else:
        assert passes == SLICES, "walks to both edges, one encoder pass per slice"


def test_prompts_on_several_slices_fill_the_gap_once(make_session, traits):
    vol = blobs_volume(radii_kji=(4.5, 9, 9))
    truth = vol.meta["truth"][0]
    s = make_session(vol)
    r2 = s.add_box(*box_on(truth, 2))
    r7 = s.add_box(*box_on(truth, 7))
    order = [index for index, _ in s.propagate()]
    assert {3, 4, 5, 6} <= set(order), f"gap between prompted slices must be filled, got {sorted(order)}"
    assert 2 not in order and 7 not in order, "prompted slices keep their own masks"
    assert len(order) == len(set(order)), f"each slice is filled once, got {order}"
    if not traits.stops_at_object_end:
        assert sorted(order) == [0, 1, 3, 4, 5, 6, 8, 9]
    assert np.array_equal(s.mask(1)[2], r2.mask) and np.array_equal(s.mask(1)[7], r7.mask)


def test_objects_are_independent_and_reset_forgets_one(make_session, traits):
    vol = blobs_volume(centres_kji=((4.5, 12, 12), (4.5, 28, 28)), radii_kji=(3.5, 6, 6))
    a, b = vol.meta["truth"]
    s = make_session(vol)
    s.add_box(*box_on(a, 4), obj_id=1)
    s.run_propagation()
    alone = s.mask(1).copy()
    s.add_box(*box_on(b, 4), obj_id=2)
    s.run_propagation()
    assert s.objects == [1, 2]
    assert np.array_equal(s.mask(1), alone), "a second object leaves the first as it was"
    passes = s.stats()["encoder_passes"]
    assert passes <= SLICES, "objects share one encoder pass per slice"
    if not traits.stops_at_object_end:
        assert passes == SLICES
    s.reset(2)
    assert s.objects == [1] and not (s.labels() == 2).any()
    assert np.array_equal(s.mask(1), alone)


def test_labels_are_uint8_object_ids(make_session):
    vol = blobs_volume(centres_kji=((4.5, 12, 12), (4.5, 28, 28)), radii_kji=(3.5, 6, 6))
    a, b = vol.meta["truth"]
    s = make_session(vol)
    s.add_box(*box_on(a, 4), obj_id=1)
    s.add_box(*box_on(b, 4), obj_id=2)
    labels = s.labels()
    assert labels.dtype == np.uint8 and labels.shape == vol.array.shape
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert np.array_equal(labels == 2, s.mask(2)), "the higher id wins where objects overlap"
    assert np.array_equal(labels == 1, s.mask(1) & ~s.mask(2))


def test_undo_reverts_prompts_and_propagation(make_session):
    vol = blobs_volume()
    s = make_session(vol)
    s.add_box(*box_on(vol.meta["truth"][0], 4))
    after_box = s.mask(1).copy()
    s.run_propagation()
    assert s.mask(1).sum() > after_box.sum()
    s.undo()
    assert np.array_equal(s.mask(1), after_box)
    s.add_point((20, 20, 4), positive=False)  # a background click inside changes the mask
    assert not np.array_equal(s.mask(1), after_box)
    s.undo(1)
    assert np.array_equal(s.mask(1), after_box)
    s.undo(1)
    assert s.objects == []
    with pytest.raises(SessionError, match="nothing to undo"):
        s.undo()


def test_correction_click_reuses_the_cached_features(make_session):
    vol = blobs_volume()
    s = make_session(vol)
    s.add_box(*box_on(vol.meta["truth"][0], 4))
    passes = s.stats()["encoder_passes"]
    assert passes == 1
    s.add_point((20, 20, 4), positive=True)
    assert s.stats()["encoder_passes"] == passes


def test_cache_stays_inside_its_byte_budget(make_session):
    vol = blobs_volume()
    probe = make_session(vol)
    probe.add_point((20, 20, 4))
    per_slice = probe.stats()["cache_bytes"]  # the features of one slice, whatever the engine keeps
    assert per_slice > 0
    s = make_session(vol, cache_bytes=2 * per_slice)  # room for two slices
    s.add_box(*box_on(vol.meta["truth"][0], 4))
    s.run_propagation()
    st = s.stats()
    assert st["cache_entries"] <= 2 and st["cache_bytes"] <= 2 * per_slice
    assert st["cache_evictions"] > 0
    s.add_point((20, 20, 4))  # slice 4 was evicted: it is encoded again
    assert s.stats()["encoder_passes"] == st["encoder_passes"] + 1


def test_cancel_stops_propagation_and_keeps_what_was_done(make_session):
    vol = blobs_volume()
    s = make_session(vol)
    r = s.add_box(*box_on(vol.meta["truth"][0], 4))
    got = {}
    for index, mask in s.propagate(should_stop=lambda: len(got) >= 1):
        got[index] = mask
    assert len(got) == 1
    assert s.stats()["encoder_passes"] == 2, "nothing is encoded after the cancel"
    assert np.array_equal(s.mask(1), _stacked(vol.array.shape, "k", {4: r.mask, **got}))


@pytest.mark.parametrize("axis", ["i", "j"])
def test_prompts_along_other_axes_land_on_the_right_slice(make_session, traits, axis):
    vol = blobs_volume(radii_kji=(3.5, 9, 9))
    s = make_session(vol)
    r = s.add_point((20, 20, 4), positive=True, axis=axis)
    assert r.axis == axis and r.slice_index == 20 and s.object_axis(1) == axis
    assert r.mask.shape == (10, 40)  # rows k, cols i (axis j) or cols j (axis i)
    assert np.array_equal(s.mask(1), _stacked(vol.array.shape, axis, {20: r.mask}))
    filled = dict(s.propagate())
    assert all(m.shape == (10, 40) for m in filled.values())
    reached = sorted(filled) + [20]
    assert sorted(reached) == list(range(min(reached), max(reached) + 1)), "walks leave no slice out"
    if not traits.stops_at_object_end:
        assert len(filled) == 39  # every other slice along that axis
    assert np.array_equal(s.mask(1), _stacked(vol.array.shape, axis, {20: r.mask, **filled}))


def test_point_outside_the_volume_is_refused(make_session):
    s = make_session(blobs_volume())
    with pytest.raises(PromptError, match="outside the volume"):
        s.add_point((40, 0, 0))
    assert s.objects == []


def test_box_must_be_flat_on_exactly_one_axis(make_session):
    s = make_session(blobs_volume())
    with pytest.raises(PromptError, match="flat on exactly one axis"):
        s.add_box((1, 1, 1), (5, 5, 5))
    with pytest.raises(PromptError, match="flat on exactly one axis"):
        s.add_box((1, 1, 1), (1, 5, 1))
    assert s.objects == []


def test_an_object_keeps_its_axis(make_session):
    s = make_session(blobs_volume())
    s.add_point((20, 20, 4), axis="k")
    with pytest.raises(PromptError, match="axis k, not j"):
        s.add_point((20, 20, 4), axis="j")
    assert s.objects == [1] and s.object_axis(1) == "k"


def test_unknown_object_is_named(make_session):
    s = make_session(blobs_volume())
    s.add_point((20, 20, 4))
    with pytest.raises(SessionError, match="unknown obj_id 9"):
        s.undo(9)
    with pytest.raises(SessionError, match="unknown obj_id 9"):
        s.reset(9)
    assert s.objects == [1]


def test_nothing_to_undo_on_a_new_session(make_session):
    s = make_session(blobs_volume())
    with pytest.raises(SessionError, match="nothing to undo"):
        s.undo()


def test_background_points_alone_as_a_first_prompt(make_session, traits):
    s = make_session(blobs_volume())
    s.add_point((20, 20, 4))
    if traits.refuses_background_only:  # litemedsam's box_search needs a foreground point to place a box
        with pytest.raises(PromptError, match="background"):
            s.add_point((20, 20, 4), positive=False, obj_id=3)
        assert s.objects == [1], "a refused first prompt leaves no object behind"
    else:
        r = s.add_point((20, 20, 4), positive=False, obj_id=3)
        assert r.obj_id == 3 and r.mask.shape == (40, 40)
        assert s.objects == [1, 3]
