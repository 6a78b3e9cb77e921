"""The session contract every engine keeps: directions, multi-slice, multi-object, undo,
cache bound, cancel, errors. Runs the real engine on small seeded synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.errors import PromptError, SessionError
from tests.session.conftest import blobs_volume, dice


def _box_on(truth, k):
    js, is_ = np.nonzero(truth[k])
    return (int(is_.min()), int(js.min()), k), (int(is_.max()), int(js.max()), k)


def test_box_propagates_both_ways_and_stops_at_the_object_end(make_session):
    vol = blobs_volume()
    truth = vol.meta["truth"][0]
    s = make_session(vol)
    r = s.add_box(*_box_on(truth, 4))
    assert r.slice_index == 4 and r.axis == "k" and r.mask.shape == (40, 40)
    seen = [idx for idx, _ in s.propagate()]
    assert min(seen) < 4 < max(seen), f"propagation must walk both ways, got {seen}"
    pred = s.mask(1)
    assert dice(pred, truth) >= 0.8
    true_k = set(np.flatnonzero(truth.any(axis=(1, 2))))
    pred_k = set(np.flatnonzero(pred.any(axis=(1, 2))))
    assert pred_k - true_k == set(), "no mask on slices without the object"


def test_propagation_encodes_only_object_slices_plus_one_each_side(make_session):
    vol = blobs_volume()
    truth = vol.meta["truth"][0]
    s = make_session(vol)
    s.add_box(*_box_on(truth, 4))
    s.run_propagation()
    n_object = int(truth.any(axis=(1, 2)).sum())
    assert s.stats()["encoder_passes"] <= n_object + 2


def test_point_prompt_gives_the_object(make_session):
    vol = blobs_volume()
    truth = vol.meta["truth"][0]
    s = make_session(vol)
    r = s.add_point((20, 20, 4), positive=True)
    assert r.mask[20, 20]
    s.run_propagation()
    assert dice(s.mask(1), truth) >= 0.7


def test_prompts_on_several_slices_are_merged(make_session):
    vol = blobs_volume(radii_kji=(4.5, 9, 9))
    truth = vol.meta["truth"][0]
    s = make_session(vol)
    s.add_box(*_box_on(truth, 2))
    s.add_box(*_box_on(truth, 7))
    filled = dict(s.propagate())
    assert {3, 4, 5, 6} <= set(filled), f"gap between prompted slices must be filled, got {sorted(filled)}"
    assert 2 not in filled and 7 not in filled, "prompted slices keep their own masks"
    assert dice(s.mask(1), truth) >= 0.8


def test_objects_are_independent(make_session):
    vol = blobs_volume(centres_kji=((4.5, 12, 12), (4.5, 28, 28)), radii_kji=(3.5, 6, 6))
    a, b = vol.meta["truth"]
    s = make_session(vol)
    s.add_box(*_box_on(a, 4), obj_id=1)
    s.add_box(*_box_on(b, 4), obj_id=2)
    s.run_propagation()
    labels = s.labels()
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    assert dice(labels == 1, a) >= 0.75 and dice(labels == 2, b) >= 0.75
    s.reset(2)
    assert s.objects == [1] and not (s.labels() == 2).any()


def test_undo_reverts_prompts_and_propagation(make_session):
    vol = blobs_volume()
    truth = vol.meta["truth"][0]
    s = make_session(vol)
    s.add_box(*_box_on(truth, 4))
    after_box = s.mask(1).copy()
    s.run_propagation()
    assert s.mask(1).sum() > after_box.sum()
    s.undo()
    assert np.array_equal(s.mask(1), after_box)
    s.add_point((20, 20, 4), positive=False)  # a background click inside changes the mask
    s.undo(1)
    assert np.array_equal(s.mask(1), after_box)
    s.undo(1)
    assert s.objects == []
    with pytest.raises(SessionError, match="nothing to undo"):
        s.undo()


def test_correction_click_reuses_the_cached_embedding(make_session):
    vol = blobs_volume()
    truth = vol.meta["truth"][0]
    s = make_session(vol)
    s.add_box(*_box_on(truth, 4))
    passes = s.stats()["encoder_passes"]
    s.add_point((20, 20, 4), positive=True)
    assert s.stats()["encoder_passes"] == passes


def test_cache_stays_inside_its_byte_budget(make_session):
    vol = blobs_volume()
    truth = vol.meta["truth"][0]
    s = make_session(vol, cache_bytes=2 * 256 * 64 * 64 * 4)  # room for two slices
    s.add_box(*_box_on(truth, 4))
    s.run_propagation()
    st = s.stats()
    assert st["cache_entries"] <= 2 and st["cache_bytes"] <= 2 * 256 * 64 * 64 * 4
    assert st["cache_evictions"] > 0
    passes = st["encoder_passes"]
    s.add_point((20, 20, 4))  # slice 4 was evicted: it is encoded again
    assert s.stats()["encoder_passes"] == passes + 1


def test_cancel_stops_propagation_and_keeps_what_was_done(make_session):
    vol = blobs_volume()
    truth = vol.meta["truth"][0]
    s = make_session(vol)
    s.add_box(*_box_on(truth, 4))
    got = []
    for idx, _ in s.propagate(should_stop=lambda: len(got) >= 1):
        got.append(idx)
    assert len(got) == 1
    assert set(np.flatnonzero(s.mask(1).any(axis=(1, 2)))) == {4, got[0]}


@pytest.mark.parametrize("axis", ["i", "j"])
def test_prompts_along_other_axes_land_on_the_right_voxels(make_session, axis):
    vol = blobs_volume(radii_kji=(3.5, 9, 9))
    truth = vol.meta["truth"][0]
    s = make_session(vol)
    r = s.add_point((20, 20, 4), positive=True, axis=axis)
    assert r.axis == axis and r.slice_index == 20
    assert r.mask.shape == (10, 40)  # rows k, cols i (axis j) or cols j (axis i)
    mask3d = s.mask(1)
    assert mask3d[4, 20, 20], "the clicked voxel is in the mask"
    assert (mask3d & ~truth).sum() <= 0.3 * mask3d.sum()


def test_bad_prompts_raise_named_errors(make_session):
    vol = blobs_volume()
    s = make_session(vol)
    with pytest.raises(PromptError, match="outside the volume"):
        s.add_point((40, 0, 0))
    with pytest.raises(PromptError, match="flat on exactly one axis"):
        s.add_box((1, 1, 1), (5, 5, 5))
    with pytest.raises(PromptError, match="flat on exactly one axis"):
        s.add_box((1, 1, 1), (1, 5, 1))
    s.add_point((20, 20, 4), axis="k")
    with pytest.raises(PromptError, match="axis k, not j"):
        s.add_point((20, 20, 4), axis="j")
    with pytest.raises(SessionError, match="unknown obj_id 9"):
        s.undo(9)
    with pytest.raises(PromptError, match="background"):
        s.add_point((20, 20, 4), positive=False, obj_id=3)  # refused first prompt of a new object
    assert s.objects == [1]
