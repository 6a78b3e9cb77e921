"""Lesion candidates that are lesions, on the real sample CTs: the expert lesion is the only
candidate that passes; the hilum that "the largest nodule" used to return is rejected with
its reason; qualifiers choose only among passing candidates and say when none matches."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.language.errors import SolverError
from medvl.language.grounding import Grounder, ground_for_volume
from medvl.language.solvers import SolveSettings, dice, solve
from medvl.language.solvers.anatomy import anatomy_for
from medvl.language.solvers.nodule import Candidate, choose, find_candidates, regrow, shape_of

KEYWORDS = Grounder(encoder=None)
HU = SolveSettings(refine="hu")


def _solve(volume, text):
    return solve(volume, ground_for_volume(text, volume, KEYWORDS), None, HU)  # in the CT's context


@pytest.mark.parametrize("case", ["lung1", "lung2"])
def test_only_the_expert_lesion_passes(request, case):
    volume, label = request.getfixturevalue(case)
    a = anatomy_for(volume)
    cands = find_candidates(a)
    passing = [c for c in cands if c.passed]
    assert len(passing) == 1, [c.summary() for c in passing]
    assert dice(regrow(a, passing[0]), label) >= 0.85
    assert all(c.rejected for c in cands[1:]) and len(cands) > 20  # the rest were checked and named


def test_lung1_hilum_is_not_a_lesion(lung1):
    """The 15.7 mL right-hilar region (slices 12-21) that "the largest nodule" returned."""
    volume, label = lung1
    hilum = [c for c in find_candidates(anatomy_for(volume)) if c.volume_ml > 10 and not c.touches_scan_end]
    assert hilum and all(not c.passed for c in hilum)
    assert any("lobulated" in c.rejected for c in hilum), [c.rejected for c in hilum]


@pytest.mark.parametrize("case,text", [
    ("lung1", "the largest nodule"), ("lung1", "the biggest mass"), ("lung1", "smallest nodule"),
    ("lung1", "the tumour in the right lung"), ("lung2", "the largest nodule"),
    ("lung2", "the tumour in the left lung"), ("lung2", "lower lobe mass"),
])
def test_modifiers_pick_the_expert_lesion(request, case, text):
    volume, label = request.getfixturevalue(case)
    res = _solve(volume, text)
    assert dice(res.mask, label) >= 0.85, (text, res.info["why"])
    assert res.info["passing_candidates"] == 1


@pytest.mark.parametrize("case,text,match", [
    ("lung1", "the nodule in the left lung", r"no nodule in the left lung: 1 candidate, in the right lung"),
    ("lung1", "the lower nodule", r"no nodule in the lower zone: 1 candidate, in the right lung \(upper zone\)"),
    ("lung2", "mass in the right lung", r"no nodule in the right lung: 1 candidate, in the left lung"),
])
def test_a_modifier_that_matches_none_says_so(request, case, text, match):
    volume, _ = request.getfixturevalue(case)
    with pytest.raises(SolverError, match=match):
        _solve(volume, text)


def _cand(volume_ml, side, z, rejected=""):
    return Candidate(box=(slice(0, 1),) * 3, mask=np.ones((1, 1, 1), bool), radius_mm=5.0, volume_ml=volume_ml,
                     ratio=1.5, lung_shell=0.9, outside_shell=0.0, touches_scan_end=False, side=side,
                     centroid_lps=(0.0, 0.0, z), rejected=rejected)


def test_choose_never_takes_a_rejected_candidate():
    big_bad = _cand(20.0, "right", 50.0, rejected="lobulated")
    small = _cand(1.0, "right", 50.0)
    other = _cand(2.0, "left", 10.0)
    z = (0.0, 90.0)
    assert choose([small, other, big_bad], rank="largest", z_range=z)[0] is other
    assert choose([small, other, big_bad], side="right", rank="largest", z_range=z)[0] is small
    best, why = choose([small, big_bad], side="left", z_range=z)
    assert best is None and why.startswith("no nodule in the left lung: 1 candidate, in the right lung")
    assert choose([big_bad], z_range=z) == (None, "no lesion candidate passed the checks")
    best, why = choose([small, other], level="upper", z_range=z)
    assert best is None and "no nodule in the upper zone: 2 candidates" in why


def test_shape_of_a_ball_and_a_rod():
    sp = (5.0, 0.7, 0.7)
    k, j, i = np.indices((9, 80, 80))
    ball = ((k - 4) * 5.0) ** 2 + ((j - 40) * 0.7) ** 2 + ((i - 40) * 0.7) ** 2 <= 15.0 ** 2
    axes, fill = shape_of(ball, sp)
    assert axes[0] == pytest.approx(30.0, rel=0.15) and axes[0] / axes[1] < 1.2 and fill > 0.9
    rod = np.zeros_like(ball)
    rod[1:8, 38:42, 38:42] = True  # 35 mm along k, 2.8 mm across: a vessel crossing the slices
    axes, _ = shape_of(rod, sp)
    assert axes[0] / axes[1] > 2.5
