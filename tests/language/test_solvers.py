"""Every concept solver on the real sample CTs; the nodule solver from text alone against the
expert labels (goals: Dice >= 0.70 on lung2, >= 0.60 on lung1)."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.language.errors import SolverError
from medvl.language.grounding import Grounder, ground
from medvl.language.solvers import SolveSettings, dice, solve
from medvl.language.solvers.anatomy import anatomy_for

KEYWORDS = Grounder(encoder=None)  # solver tests do not need the sentence encoder


def _solve(volume, text, **kw):
    return solve(volume, KEYWORDS.ground(text), **kw)


@pytest.mark.parametrize("case,text,min_dice", [
    ("lung2", "nodule", 0.70), ("lung2", "the tumour in the left lung", 0.70),
    ("lung1", "nodule", 0.60), ("lung1", "the tumour in the right lung", 0.60),
])
def test_nodule_from_text(request, case, text, min_dice):
    volume, label = request.getfixturevalue(case)
    res = _solve(volume, text)
    d = dice(res.mask, label)
    assert d >= min_dice, f"{case} {text!r}: Dice {d:.3f} < {min_dice} ({res.info['candidates'][:2]})"
    assert res.info["side"] == ("left" if case == "lung2" else "right")


def test_nodule_wrong_side_says_none_found(lung1):
    volume, _ = lung1
    with pytest.raises(SolverError, match="no nodule in the left lung: 1 candidate, in the right lung"):
        _solve(volume, "the mass in the left lung")


def test_lungs_split_and_sides(lung2):
    volume, label = lung2
    a = anatomy_for(volume)
    left, right, lungs = a.left_lung, a.right_lung, a.lungs
    assert not (left & right).any() and (lungs == (left | right)).all()
    ml = lambda m: m.sum() * a.voxel_ml  # noqa: E731
    assert 1000 < ml(left) < 3000 and 1200 < ml(right) < 3500 and ml(right) > ml(left)  # right lung is bigger
    # LPS: patient left is +x
    x = lambda m: volume.geometry.index_to_physical(np.argwhere(m).mean(0)[::-1])[0]  # noqa: E731
    assert x(left) > x(right)
    hu = a.hu[lungs]
    assert np.median(hu) < -700
    assert (lungs & a.body).sum() == lungs.sum()
    assert _solve(volume, "left lung").mask.sum() == left.sum()


def test_airway_is_trachea_and_bronchi(lung1):
    volume, _ = lung1
    a = anatomy_for(volume)
    air = _solve(volume, "trachea").mask
    ml = air.sum() * a.voxel_ml
    assert 5 < ml < 80
    top = int(np.flatnonzero(air.any(axis=(1, 2)))[-1])
    assert top == volume.array.shape[0] - 1  # reaches the most cranial slice (neck)
    assert np.median(a.hu[air]) < -900 and not (air & a.lungs).any()


def test_bone_fat_body(lung2):
    volume, _ = lung2
    a = anatomy_for(volume)
    bone = _solve(volume, "bone").mask
    fat = _solve(volume, "fat").mask
    body = _solve(volume, "body").mask
    assert np.percentile(a.hu[bone], 5) >= 250 and 200 < bone.sum() * a.voxel_ml < 2000
    assert (a.hu[fat] >= -190).all() and (a.hu[fat] <= -30).all() and fat.sum() * a.voxel_ml > 500
    assert not (fat & a.lungs).any()
    assert (bone & ~body).sum() == 0 and (fat & ~body).sum() == 0
    # the table under the patient is not body: the bottom rows are empty
    assert not body[:, -5:, :].any()


def test_mr_is_refused_with_a_fix(brain1):
    volume, _ = brain1
    with pytest.raises(SolverError, match="modality is 'MR'.*box/point prompt"):
        _solve(volume, "lungs")


def test_not_understood_raises(lung1):
    from medvl.language.errors import NotUnderstoodError

    with pytest.raises(NotUnderstoodError, match="nearest known concepts"):
        _solve(lung1[0], "the liver")


def test_bad_refine_mode(lung1):
    with pytest.raises(SolverError, match="refine='magic'"):
        _solve(lung1[0], "nodule", settings=SolveSettings(refine="magic"))


def test_synthetic_ct_nodule():
    """A seeded phantom: two lungs with one solid 'nodule' in the right one."""
    from medvl.geometry import Geometry
    from medvl.volume import Volume

    rng = np.random.default_rng(1)
    k, j, i = np.indices((24, 96, 96))
    body = ((j - 48) / 40.0) ** 2 + ((i - 48) / 44.0) ** 2 <= 1
    arr = np.where(body, 40, -1000) + rng.normal(0, 8, k.shape)
    for ci in (26, 70):
        lung = ((j - 48) / 26.0) ** 2 + ((i - ci) / 16.0) ** 2 + ((k - 12) / 13.0) ** 2 <= 1
        arr[lung] = -850 + rng.normal(0, 20, lung.sum())
    nod = (k - 12) ** 2 * 4 + (j - 44) ** 2 + (i - 26) ** 2 <= 36
    arr[nod] = 30
    vol = Volume(np.round(arr).astype(np.int16), Geometry(spacing=(1.5, 1.5, 3.0)), "CT", "phantom")
    res = solve(vol, KEYWORDS.ground("nodule in the right lung"))
    assert dice(res.mask, nod) > 0.8 and res.info["side"] == "right"


def test_refinement_on_a_modality_override_keeps_the_session():
    """A copy of the session's image that only overrides the modality (the server's `modality`
    param) is the same image: refining a text object must not restart the session and drop
    the user's other objects."""
    from dataclasses import replace

    from medvl.language.solvers import refine_with_session
    from medvl.session import VolumeSession
    from tests.conftest import make_synthetic_volume

    volume = make_synthetic_volume(shape_kji=(8, 32, 32), radius=6.0)
    session = VolumeSession("litemedsam")
    session.set_volume(volume)
    session.add_box((8, 8, 4), (24, 24, 4), obj_id=2)  # the user's object
    copy = replace(volume, modality="MR", meta=dict(volume.meta, modality_source="user"))
    mask = refine_with_session(copy, session, volume.meta["truth"], obj_id=1)
    assert mask.any() and set(session.objects) == {1, 2}
    other = make_synthetic_volume(shape_kji=(8, 32, 32), radius=6.0, seed=1)  # another image: starts over
    refine_with_session(other, session, other.meta["truth"], obj_id=1)
    assert session.volume is other and set(session.objects) == {1}
