"""The quality signal every mask carries (medvl.session.quality)."""

from __future__ import annotations

import numpy as np

from medvl.session.quality import QualitySettings, assess


def _disc(r: int, shape=(64, 64), centre=(32, 32)) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def _names(q) -> set[str]:
    return {w["name"] for w in q["warnings"]}


def test_a_clean_object_has_no_warning_and_its_estimate_is_the_area_weighted_confidence():
    masks = {i: _disc(r) for i, r in zip(range(10, 15), (4, 6, 7, 6, 4))}
    scores = {i: 0.9 for i in masks} | {12: 0.6}
    q = assess(masks, scores, (30, 64, 64), "k", QualitySettings(calibration=((0.0, 0.0), (1.0, 1.0))))
    assert _names(q) == set()
    areas = {i: m.sum() for i, m in masks.items()}
    expected = sum(scores[i] * areas[i] for i in masks) / sum(areas.values())
    assert abs(q["estimate"] - expected) < 1e-3 and q["slices"] == 5


def test_a_leak_through_a_neighbour_is_named():
    masks = {i: _disc(5) for i in range(10, 16)}
    masks[16] = _disc(20)  # the walk ran into a big neighbour on its last slices
    masks[17] = _disc(22)
    q = assess(masks, {i: 0.9 for i in masks}, (30, 64, 64), "k")
    assert "leak_suspected" in _names(q)
    assert "16" in next(w["message"] for w in q["warnings"] if w["name"] == "leak_suspected")


def test_tiny_empty_edge_and_slice_limit_warnings():
    assert _names(assess({}, {}, (30, 64, 64), "k")) == {"empty"}
    tiny = assess({5: _disc(1)}, {5: 0.9}, (30, 64, 64), "k")
    assert "too_small" in _names(tiny)
    edge = {0: _disc(6, centre=(3, 32)), 1: _disc(6, centre=(3, 32))}
    assert {"touches_edge", "stopped_by_slice_limit"} <= _names(assess(edge, {0: 0.9, 1: 0.9}, (30, 64, 64), "k"))
    gaps = {3: _disc(5), 4: _disc(5), 7: _disc(5)}
    assert "gaps" in _names(assess(gaps, {i: 0.9 for i in gaps}, (30, 64, 64), "k"))


def test_low_confidence_uses_the_calibration():
    masks = {i: _disc(6) for i in range(5, 9)}
    settings = QualitySettings(calibration=((0.0, 0.0), (0.8, 0.3), (1.0, 0.9)))
    q = assess(masks, {i: 0.8 for i in masks}, (30, 64, 64), "k", settings)
    assert abs(q["estimate"] - 0.3) < 1e-6 and q["raw_confidence"] == 0.8
    assert "low_confidence" in _names(q)
