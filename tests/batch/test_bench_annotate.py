"""`medvl bench-annotate`: its dataset (distinct cases, right geometry, boxes on the expert label)
and one quick end-to-end run (local executor only; Ray is tested elsewhere)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from medvl.batch.annotator import to_voxel
from medvl.batch.inputs import read_manifest
from medvl.bench.annotate_data import SAMPLE_DIR, axial_axis, build
from medvl.cli import main
from medvl.io import read_volume


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Six tiny cases (two per source scan: plain crop, and resampled 1.5x in-plane)."""
    out = tmp_path_factory.mktemp("bench_data")
    return out, build(out, count=6, half_ij=14, half_k=1)


def test_cases_are_distinct(tiny_dataset):
    out, data = tiny_dataset
    cases = data["cases"]
    assert len(cases) == 6
    assert len({c["case_id"] for c in cases}) == 6
    assert len({c["sha256"] for c in cases}) == 6, "two cases have the same bytes"
    assert len({tuple(c["direction"]) for c in cases}) >= 4, "orientations should vary"
    assert {c["source"] for c in cases} == {"lung1", "lung2", "brain1"}
    assert {c["axial_axis"] for c in cases} >= {"i", "k"}, "some cases must be stored with z off the k axis"
    jobs = read_manifest(out / "manifest.json")
    assert [j.case_id for j in jobs] == [c["case_id"] for c in cases]
    assert all(len(j.objects) == 1 and j.objects[0].space == "LPS" for j in jobs)


def test_written_geometry_matches_the_source_in_space(tiny_dataset):
    """Every voxel of a case holds what the source scan holds at the same physical point."""
    out, data = tiny_dataset
    for case in data["cases"]:
        image = sitk.ReadImage(str(out / case["image"]))
        volume = read_volume(out / case["image"])
        assert np.allclose(volume.geometry.direction, case["direction"], atol=1e-5), case["case_id"]
        assert np.allclose(volume.geometry.spacing, case["spacing"], atol=1e-4), case["case_id"]
        source = sitk.ReadImage(str(SAMPLE_DIR / f"{case['source']}_image.nii.gz"))
        resampled = case["recipe"]["spacing_scale"] != [1.0, 1.0, 1.0]
        interp = sitk.sitkLinear if resampled else sitk.sitkNearestNeighbor
        expected = sitk.GetArrayFromImage(sitk.Resample(source, image, sitk.Transform(), interp, -9999))
        got = sitk.GetArrayFromImage(image)
        assert (expected != -9999).all(), f"{case['case_id']} lies outside its source scan"
        if resampled:
            assert np.abs(expected.astype(float) - got).max() <= 1.0, case["case_id"]
        else:
            assert np.array_equal(expected, got), case["case_id"]


def test_box_is_the_expert_label_on_its_largest_axial_slice(tiny_dataset):
    out, data = tiny_dataset
    jobs = {j.case_id: j for j in read_manifest(out / "manifest.json")}
    for case in data["cases"]:
        volume = read_volume(out / case["image"])
        label = sitk.ReadImage(str(out / case["label"]))
        lab = sitk.GetArrayFromImage(label) > 0  # (k, j, i)
        axis = axial_axis(label)
        assert "ijk"[axis] == case["axial_axis"]
        (c0, c1), _ = to_voxel(jobs[case["case_id"]].objects[0], volume.geometry)
        assert c0[axis] == c1[axis], f"{case['case_id']}: box not flat on the axial axis {'ijk'[axis]}"
        area = lab.sum(axis=tuple(2 - a for a in range(3) if a != axis))
        assert area[c0[axis]] == area.max() > 0
        on_slice = np.argwhere(np.take(lab, c0[axis], axis=2 - axis))  # rows: the other two ITK axes, reversed
        others = [a for a in range(3) if a != axis]
        for col, a in enumerate(reversed(others)):
            lo, hi = sorted((c0[a], c1[a]))
            assert lo <= on_slice[:, col].min() and on_slice[:, col].max() <= hi, case["case_id"]


def test_quick_bench_end_to_end(tmp_path):
    """`medvl bench-annotate --quick`: 3 tiny volumes through a real `medvl annotate` subprocess,
    then its resume (well under 60 s)."""
    assert main(["bench-annotate", "--quick", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "b.json")]) == 0
    res = json.loads((tmp_path / "b.json").read_text())
    assert res["dataset"]["volumes"] == 3 and res["dataset"]["distinct_files"] == 3
    local = res["runs"]["local"]
    assert local["exit_code"] == 0 and local["ok"] == 3 and local["volumes"] == 3
    assert [v["status"] for v in local["per_volume"]] == ["ok"] * 3
    assert all(v["worker_s"] > 0 for v in local["per_volume"])
    assert local["peak_rss_mb"] > 100 and local["peak_rss_mb_at_half"] <= local["peak_rss_mb"]
    assert local["cpu_s"] > 0 and local["steady_s_per_volume"] > 0
    resume = res["resume"]
    assert resume["exit_code"] == 0 and resume["skipped"] == 3 and resume["volumes"] == 0
    assert res["goals"]["resume_skipped_all"]["met"] is True
    assert "ray1_overhead_steady_pct" in res["goals_not_measured"] and res["all_goals_met"] is False
    # the physical (LPS) box lands on the lesion in every re-oriented copy
    assert all(d["min"] > 0.5 for d in res["expert_dice_local"].values()), res["expert_dice_local"]
