"""The SAM 2 side-by-side benchmark runs end to end (tiny volume; timings are not checked)."""

from __future__ import annotations

import pytest

pytest.importorskip("sam2.sam2_video_predictor", reason="sam2 is not installed (make installs it; docs/sam2.md)")

from medvl.bench.sam2 import run  # noqa: E402


def test_benchmark_reports_both_sides_and_ratios(tmp_path):
    report = run(str(tmp_path / "bench.json"), shape=(6, 64, 64), image_size=64, scenarios=("edge",), threads=1)
    entry = report["scenarios"]["edge"]
    ours, theirs = entry["ours"], entry["monailabel"]
    assert ours["slices_filled_first"] == theirs["slices_filled_first"] == 6
    assert ours["encoder_passes_correction"] == 0 < theirs["encoder_passes_correction"]
    assert 0 < ours["correction_gflop"] < theirs["correction_gflop"]
    assert set(entry["ratios"]) >= {"first_click_speedup", "correction_speedup", "peak_rss_ours_over_theirs",
                                    "correction_work_theirs_over_ours", "correction_speedup_bound_at_peak"}
    assert (tmp_path / "bench.json").is_file()
