"""Report facts against brute-force references, on a seeded phantom and the real lung2 label."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medvl.geometry import Geometry
from medvl.language.measure import longest_diameter, perpendicular_diameter, recist
from medvl.language.report import build_report, object_facts, write_report
from medvl.volume import Volume


def brute_long(mask2d, sy, sx):
    rc = np.argwhere(mask2d).astype(float)
    p = rc * [sy, sx]
    d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))
    return float(d.max())


def brute_perp(mask2d, sy, sx, u, tol):
    """Longest segment between two voxel centres whose direction is within `tol` mm of
    perpendicular to the unit vector `u` (mm)."""
    p = np.argwhere(mask2d).astype(float) * [sy, sx]
    diff = p[:, None] - p[None]
    along = np.abs(diff @ u)
    length = np.sqrt((diff ** 2).sum(-1))
    return float(length[along <= tol].max())


def _ellipse(rng, shape=(64, 64)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx, ry, rx, th = *rng.uniform(24, 40, 2), *rng.uniform(3, 18, 2), rng.uniform(0, np.pi)
    a = (yy - cy) * np.cos(th) + (xx - cx) * np.sin(th)
    b = -(yy - cy) * np.sin(th) + (xx - cx) * np.cos(th)
    return (a / ry) ** 2 + (b / rx) ** 2 <= 1


@pytest.mark.parametrize("seed", range(12))
def test_diameters_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    m = _ellipse(rng)
    if seed % 3 == 0:  # irregular: union with a second blob
        m |= _ellipse(rng)
    sy, sx = rng.uniform(0.4, 1.2, 2)
    d = longest_diameter(m, sy, sx)
    assert d.length_mm == pytest.approx(brute_long(m, sy, sx), abs=1e-6)
    p = perpendicular_diameter(m, sy, sx, d)
    u = (np.array(d.p1) - np.array(d.p0)) * [sy, sx]
    u /= np.linalg.norm(u)
    ref = brute_perp(m, sy, sx, u, tol=min(sy, sx))
    assert abs(p.length_mm - ref) <= max(sy, sx), (p.length_mm, ref)  # within one voxel
    ends = (np.array(p.p1) - np.array(p.p0)) * [sy, sx]
    assert abs(ends @ u) <= min(sy, sx) + 1e-9  # the chord is at right angles to the long axis


def test_recist_picks_the_slice_with_the_longest_diameter():
    m = np.zeros((4, 40, 40), bool)
    m[1, 10:20, 10:20] = True
    m[2, 5:35, 18:22] = True  # longest on slice 2
    r = recist(m, (5.0, 0.5, 0.5))
    assert r.slice_k == 2 and r.long.length_mm == pytest.approx(brute_long(m[2], 0.5, 0.5))


def test_facts_on_phantom_exact():
    geo = Geometry(origin=(-10.0, 20.0, -50.0), spacing=(0.7, 0.9, 2.5))
    arr = np.full((10, 30, 40), -800, np.int16)
    m = np.zeros(arr.shape, bool)
    m[3:6, 8:20, 12:30] = True
    rng = np.random.default_rng(3)
    arr[m] = rng.integers(-50, 80, m.sum())
    vol = Volume(arr, geo, "CT", "phantom")
    f = object_facts(vol, m, "box", "lesion", "mask: box")
    assert f.voxels == m.sum() == 3 * 12 * 18
    assert f.volume_ml == pytest.approx(m.sum() * 0.7 * 0.9 * 2.5 / 1000, rel=1e-12)
    assert f.slice_range_k == [3, 5]
    assert f.bbox_size_mm == pytest.approx([18 * 0.7, 12 * 0.9, 3 * 2.5])
    assert f.bbox_lps_mm[0] == pytest.approx([-10 + 12 * 0.7, 20 + 8 * 0.9, -50 + 3 * 2.5])
    assert f.long_axis_mm == pytest.approx(np.hypot(17 * 0.7, 11 * 0.9))
    assert f.mean == pytest.approx(arr[m].mean()) and f.sd == pytest.approx(arr[m].std())
    # without CT anatomy the side is relative to the image centre (i = 19.5): 10 of 18 columns
    # are on the +x (patient left) side, so the box straddles the midline
    assert f.unit == "HU" and f.side == "bilateral"
    assert f.centroid_lps_mm[0] == pytest.approx(-10 + 20.5 * 0.7)


def test_lung2_label_facts_vs_brute_force(lung2):
    volume, label = lung2
    f = object_facts(volume, label, "tumour", "lesion", "mask: label")
    sp = volume.geometry.spacing  # (i, j, k)
    assert f.voxels == 24644
    assert f.volume_ml == pytest.approx(24644 * sp[0] * sp[1] * sp[2] / 1000, rel=1e-12)
    assert f.slice_range_k == [15, 25]
    best = max(range(15, 26), key=lambda k: brute_long(label[k], sp[1], sp[0]) if label[k].any() else 0)
    assert f.axis_slice_k == best
    assert abs(f.long_axis_mm - brute_long(label[best], sp[1], sp[0])) <= max(sp[:2])
    u = np.array(f.long_axis_ijk[1][:2][::-1], float) - np.array(f.long_axis_ijk[0][:2][::-1], float)
    u = u * [sp[1], sp[0]]
    u /= np.linalg.norm(u)
    ref = brute_perp(label[best], sp[1], sp[0], u, tol=min(sp[:2]))
    assert abs(f.short_axis_mm - ref) <= max(sp[:2])
    vals = volume.array[label].astype(float)
    assert f.mean == pytest.approx(vals.mean()) and f.sd == pytest.approx(vals.std())
    assert f.side == "left"


def test_full_report_from_text(lung2, tmp_path):
    volume, label = lung2
    r = build_report(volume, {"expert": label}, texts=["the tumour in the left lung", "lungs", "the liver"])
    names = [o.name for o in r.objects]
    assert names == ["expert", "nodule", "lungs"]
    assert any("liver" in n for n in r.notes)  # not understood -> a note, not a failure
    assert r.narrative_check["unchecked"] == [] and not r.narrative_check["fallback"]
    assert "left lung" in r.impression
    paths = write_report(r, volume, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["objects"][1]["volume_ml"] == pytest.approx(r.objects[1].voxels * np.prod(volume.geometry.spacing) / 1000)
    md = paths["md"].read_text()
    assert "| lung mass | lower zone of the left lung |" in md  # long axis > 30 mm: a mass
    assert [o.kind for o in r.objects] == ["lesion", "lesion", "anatomy"]  # the expert mask is the candidate
    from PIL import Image

    img = Image.open(paths["png"])
    assert img.size[0] >= 3 * 300 and img.mode == "RGB"


def test_label_map_becomes_one_object_per_value(lung1):
    volume, label = lung1
    lab = label.astype(np.uint8)
    lab[:, :, :100][volume.array[:, :, :100] > 300] = 2
    r = build_report(volume, {"seg": lab})
    assert [o.name for o in r.objects] == ["seg:1", "seg:2"]


def test_mr_report_from_mask(brain1, tmp_path):
    """MR: no CT anatomy and no HU; facts, percentile-windowed overview, prompts refused as notes."""
    volume, label = brain1
    r = build_report(volume, {"lesion": label}, texts=["nodule"])
    (o,) = r.objects
    assert o.unit == "a.u." and o.voxels == 4137 and o.zone == ""
    (note,) = [n for n in r.notes if n.startswith("'nodule'")]
    assert "not applicable" in note and "this volume is MR" in note, note  # a chest-CT concept on a head MR
    assert r.narrative_check["unchecked"] == []
    paths = write_report(r, volume, tmp_path)
    assert paths["png"].stat().st_size > 0


def test_anatomy_is_not_a_lesion(lung2):
    """Tissue from text and a clicked structure are anatomy: no RECIST axes, never "lesion"."""
    volume, label = lung2
    from medvl.language.solvers.anatomy import anatomy_for

    left = anatomy_for(volume).left_lung
    r = build_report(volume, {"clicked": left}, texts=["lungs"], kinds={"clicked": "anatomy"})
    assert [o.kind for o in r.objects] == ["anatomy", "anatomy"]
    for o in r.objects:
        assert o.long_axis_mm is None and o.short_axis_mm is None and o.long_axis_ijk is None
    assert "lies in" not in r.narrative and " mm" not in r.narrative and "No lesion" in r.narrative
    assert "nodule" not in r.impression.lower() and "lesion" not in r.objects[0].label
    # a user mask that is no lesion candidate (here: the left lung, kind not given) is a region
    r2 = build_report(volume, {"clicked": left})
    assert r2.objects[0].kind == "unknown" and r2.objects[0].long_axis_mm is None
    assert r2.objects[0].label == "region clicked"


def test_nodule_and_mass_by_long_axis(lung1, lung2):
    r1 = build_report(lung1[0], {"expert": lung1[1]})
    r2 = build_report(lung2[0], {"expert": lung2[1]})
    (o1,), (o2,) = r1.objects, r2.objects
    assert o1.kind == o2.kind == "lesion"
    assert o1.long_axis_mm <= 30 and o1.label == "lung nodule"
    assert o2.long_axis_mm > 30 and o2.label == "lung mass"


def _ct_without_lungs():
    """A seeded abdomen-like phantom: soft tissue, fat rim, one denser organ; no air inside."""
    rng = np.random.default_rng(5)
    k, j, i = np.indices((20, 96, 96))
    body = ((j - 48) / 40.0) ** 2 + ((i - 48) / 44.0) ** 2 <= 1
    arr = np.where(body, -100, -1000) + rng.normal(0, 10, k.shape)
    inner = ((j - 48) / 34.0) ** 2 + ((i - 48) / 38.0) ** 2 <= 1
    arr[inner] = 40 + rng.normal(0, 10, inner.sum())
    organ = ((k - 10) / 5.0) ** 2 + ((j - 50) / 10.0) ** 2 + ((i - 30) / 9.0) ** 2 <= 1
    arr[organ] = 70
    vol = Volume(np.round(arr).astype(np.int16), Geometry(spacing=(1.0, 1.0, 3.0)), "CT", "abdomen")
    return vol, organ


def test_report_on_a_ct_without_lungs(tmp_path):
    vol, organ = _ct_without_lungs()
    r = build_report(vol, {"organ": organ})
    (o,) = r.objects
    assert o.kind == "unknown" and o.zone == "" and "lung" not in o.location
    assert o.location in ("left side of the body", "right side of the body", "midline", "both sides")
    assert o.voxels == organ.sum() and o.long_axis_mm is None
    assert r.narrative_check["unchecked"] == [] and "lung" not in r.narrative
    paths = write_report(r, vol, tmp_path)
    assert paths["png"].stat().st_size > 0
    # the default chest prompts find nothing here: notes, not a failure
    r2 = build_report(vol, texts=["lungs", "nodule"])
    assert r2.objects == [] and len(r2.notes) == 2
