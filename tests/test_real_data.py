"""Real-data Dice floor through the CLI: one box on lung2 -> 3D mask with the image's geometry."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from medvl.io import read_mask, read_volume
from medvl import metrics
from medvl.slicing import bbox2d

pytestmark = pytest.mark.slow


def dice(a, b):
    return metrics.dice(a, b, empty=0.0)


def test_lung2_box_through_the_cli(sample_dir, tmp_path):
    image = sample_dir / "lung2_image.nii.gz"
    volume = read_volume(image)
    label = read_mask(sample_dir / "lung2_label.nii.gz", like=volume).array > 0
    k = int(np.argmax(label.sum(axis=(1, 2))))
    x0, y0, x1, y1 = bbox2d(label[k])
    out = tmp_path / "mask.nrrd"
    proc = subprocess.run([sys.executable, "-m", "medvl.cli", "segment", str(image), "--out", str(out),
                           "--box", f"{x0},{y0},{k},{x1},{y1},{k}"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    mask = read_mask(out)
    assert mask.geometry.same_as(volume.geometry, tol=1e-6)
    assert mask.array.dtype == np.uint8 and set(np.unique(mask.array)) <= {0, 1}
    assert dice(mask.array > 0, label) >= 0.85
    assert summary["voxels"] == int((mask.array > 0).sum())
    lo, hi = summary["slice_range_k"]
    assert lo <= 16 and hi >= 24  # the tumour spans slices 15-25
    # propagation encodes only the slices it segments, plus the one beyond each end
    assert summary["engine"]["encoder_passes"] <= (hi - lo + 1) + 2
    q = summary["quality"]["1"]  # every object carries its quality estimate and named warnings
    assert 0.0 <= q["estimate"] <= 1.0 and q["slices"] == hi - lo + 1
    assert {w["name"] for w in q["warnings"]} <= {"leak_suspected", "low_confidence", "touches_edge",
                                                 "stopped_by_slice_limit", "gaps", "too_small", "empty"}
