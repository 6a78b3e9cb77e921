"""Corrections with the real LiteMedSAM: a click edits the result where it is placed.

On lung2 (box on the tumour's largest slice, propagation): a background click on a slice
the propagation leaked to removes the object there and past it, and nothing else; a ROI
box plus a background click on another slice, sent together before any propagation (what
the stock MONAI Label client sends), is a correction, not an error; a foreground click
changes only slices near it. Plus a Dice floor on a few development-benchmark targets.
"""

from __future__ import annotations

import numpy as np
import pytest

from medvl.metrics import dice
from medvl.bench.interactive import initial_prompt
from medvl.io import read_mask, read_volume
from medvl.session import VolumeSession
from tests.conftest import SAMPLE_DIR


@pytest.fixture(scope="module")
def lung2():
    volume = read_volume(SAMPLE_DIR / "lung2_image.nii.gz")
    return volume, read_mask(SAMPLE_DIR / "lung2_label.nii.gz", like=volume).array > 0


@pytest.fixture(scope="module")
def session(lung2):
    s = VolumeSession("litemedsam")
    s.set_volume(lung2[0])
    return s


def _boxed(session, label):
    session.reset()
    initial_prompt(session, label, "k", "box")
    session.run_propagation(1)
    return session.mask(1)


def _centre(mask2d):
    ys, xs = np.nonzero(mask2d)
    n = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    return int(xs[n]), int(ys[n])


def test_background_click_on_a_leaked_slice_cuts_the_object_there_and_past_it(session, lung2):
    _, label = lung2
    before = _boxed(session, label)
    true_slices = np.flatnonzero(label.any(axis=(1, 2)))
    leaked = [k for k in np.flatnonzero(before.any(axis=(1, 2))) if k < true_slices[0]]
    assert leaked, "lung2's propagation is expected to run one slice past the tumour's first slice"
    k = int(leaked[-1])
    x, y = _centre(before[k])
    session.add_point((x, y, k), positive=False, obj_id=1)
    session.run_propagation(1)
    after = session.mask(1)
    assert not after[: k + 1].any()  # gone there and towards the outer end
    assert np.array_equal(after[k + 1:], before[k + 1:])  # untouched elsewhere
    assert dice(after, label) >= dice(before, label)


def test_foreground_click_changes_only_slices_near_it(session, lung2):
    _, label = lung2
    before = _boxed(session, label)
    seed = int(np.argmax(label.sum(axis=(1, 2))))
    k = int(np.flatnonzero(label.any(axis=(1, 2)))[0])  # the tumour's first slice: partly missed
    missed = label[k] & ~before[k]
    assert missed.any()
    x, y = _centre(missed)
    session.add_point((x, y, k), positive=True, obj_id=1)
    session.run_propagation(1)
    after = session.mask(1)
    assert after[k, y, x]
    halfway = (k + seed) // 2
    assert np.array_equal(after[halfway + 1:], before[halfway + 1:])  # the box's half stays as it was
    assert dice(after, label) >= dice(before, label) - 0.02


def test_roi_box_and_background_click_together_are_a_correction_not_an_error(session, lung2):
    volume, label = lung2
    seen = _boxed(session, label)  # what the user saw before clicking: the leak below the tumour
    far = int(np.flatnonzero(label.any(axis=(1, 2)))[0]) - 1
    assert seen[far].any()
    x, y = _centre(seen[far])
    s = VolumeSession(session.engine)  # a fresh session gets box and click at once (a server replay)
    s.set_volume(volume)
    k = int(np.argmax(label.sum(axis=(1, 2))))
    ys, xs = np.nonzero(label[k])
    s.add_box((int(xs.min()), int(ys.min()), k), (int(xs.max()), int(ys.max()), k))
    s.add_point((x, y, far), positive=False)  # background, on a slice not propagated yet
    s.run_propagation()
    mask = s.mask(1)
    assert not mask[: far + 1].any() and dice(mask, label) >= dice(seen, label)


def test_background_click_alone_still_defines_nothing(lung2):
    s = VolumeSession("litemedsam")
    s.set_volume(lung2[0])
    with pytest.raises(Exception, match="background points alone"):
        s.add_point((100, 100, 20), positive=False)
    assert s.objects == []


def test_undo_of_a_correction_brings_the_previous_result_back(session, lung2):
    _, label = lung2
    before = _boxed(session, label)
    k = int(np.flatnonzero(before.any(axis=(1, 2)))[-1])
    session.add_point((*_centre(before[k]), k), positive=False, obj_id=1)
    session.run_propagation(1)
    assert not np.array_equal(session.mask(1), before)
    session.undo(1)  # the propagation
    session.undo(1)  # the click
    assert np.array_equal(session.mask(1), before)


@pytest.mark.parametrize("name,floor", [("sample:lung2", 0.90), ("sample:brain1", 0.70), ("dk:Left-Putamen", 0.65)])
def test_one_box_dice_floor_on_development_targets(name, floor):
    from medvl.bench.devset import SPECS, load_target

    target = load_target(next(s for s in SPECS if s.name == name), "axial")
    s = VolumeSession("litemedsam")
    s.set_volume(target.volume)
    initial_prompt(s, target.label, "k", "box")
    s.run_propagation(1)
    assert dice(s.mask(1), target.label) >= floor
    quality = s.quality(1)
    assert quality["estimate"] is not None and 0.0 <= quality["estimate"] <= 1.0
