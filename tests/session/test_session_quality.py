"""The session contract's quality half: the masks lie on the object (Dice thresholds).

Only trained engines can meet these: litemedsam always, sam2 when a real checkpoint is
configured (`MEDVL_SAM2_CHECKPOINT`; otherwise its parameter is skipped, with that
reason). Random weights cannot, so the engines tested here with random weights run the
mechanics only (test_session_mechanics.py), which hold for every engine. Runs the real
engine on small seeded synthetic volumes.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.session.conftest import blobs_volume, box_on, dice


def test_box_propagation_covers_the_object_and_stops_at_its_end(make_trained_session):
    vol = blobs_volume()
    truth = vol.meta["truth"][0]
    s = make_trained_session(vol)
    s.add_box(*box_on(truth, 4))
    s.run_propagation()
    pred = s.mask(1)
    assert dice(pred, truth) >= 0.8
    true_k = set(np.flatnonzero(truth.any(axis=(1, 2))))
    pred_k = set(np.flatnonzero(pred.any(axis=(1, 2))))
    assert pred_k - true_k == set(), "no mask on slices without the object"


def test_point_prompt_gives_the_object(make_trained_session):
    vol = blobs_volume()
    truth = vol.meta["truth"][0]
    s = make_trained_session(vol)
    r = s.add_point((20, 20, 4), positive=True)
    assert r.mask[20, 20]
    s.run_propagation()
    assert dice(s.mask(1), truth) >= 0.7


def test_prompts_on_several_slices_give_the_object(make_trained_session):
    vol = blobs_volume(radii_kji=(4.5, 9, 9))
    truth = vol.meta["truth"][0]
    s = make_trained_session(vol)
    s.add_box(*box_on(truth, 2))
    s.add_box(*box_on(truth, 7))
    s.run_propagation()
    assert dice(s.mask(1), truth) >= 0.8


def test_each_object_gets_its_own_blob(make_trained_session):
    vol = blobs_volume(centres_kji=((4.5, 12, 12), (4.5, 28, 28)), radii_kji=(3.5, 6, 6))
    a, b = vol.meta["truth"]
    s = make_trained_session(vol)
    s.add_box(*box_on(a, 4), obj_id=1)
    s.add_box(*box_on(b, 4), obj_id=2)
    s.run_propagation()
    labels = s.labels()
    assert set(np.unique(labels)) == {0, 1, 2}
    assert dice(labels == 1, a) >= 0.75 and dice(labels == 2, b) >= 0.75


def test_cancelled_propagation_keeps_masks_on_its_slices(make_trained_session):
    vol = blobs_volume()
    s = make_trained_session(vol)
    s.add_box(*box_on(vol.meta["truth"][0], 4))
    got = []
    for index, _ in s.propagate(should_stop=lambda: len(got) >= 1):
        got.append(index)
    assert set(np.flatnonzero(s.mask(1).any(axis=(1, 2)))) == {4, got[0]}


@pytest.mark.parametrize("axis", ["i", "j"])
def test_prompts_along_other_axes_land_on_the_object(make_trained_session, axis):
    vol = blobs_volume(radii_kji=(3.5, 9, 9))
    truth = vol.meta["truth"][0]
    s = make_trained_session(vol)
    s.add_point((20, 20, 4), positive=True, axis=axis)
    mask3d = s.mask(1)
    assert mask3d[4, 20, 20], "the clicked voxel is in the mask"
    assert (mask3d & ~truth).sum() <= 0.3 * mask3d.sum()
