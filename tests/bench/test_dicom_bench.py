"""`medvl bench-dicom`, bounded (no model run, one repeat): every goal it reports holds on lung2."""

from __future__ import annotations

import argparse
import json

from medvl.bench.dicom import add_arguments, run
from tests.dicom.conftest import requires_lung2


@requires_lung2
def test_bench_dicom_without_the_click_meets_its_goals():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = run(parser.parse_args(["--no-click", "--repeats", "1"]))
    assert out["goals"] == {"series_round_trip": True, "seg_voxel_exact_all_readers": True,
                            "sr_equals_report": True, "broken_series_one_line": True}
    assert out["expert_label_seg"]["voxels"] == 24644 and out["expert_label_seg"]["slices"] == 11
    assert "box_click_seg" not in out
    errors = out["broken_series_errors"]
    assert "missing slices" in errors["missing"] and "single frame" in errors["single"]
    assert "holds 2 DICOM series" in errors["two"] and "6 slices" in errors["two"] and "--series UID" in errors["two"]
    json.dumps(out)  # the result is JSON
