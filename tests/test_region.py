"""medvl.region: body region from the sample cases and seeded synthetic volumes."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.geometry import Geometry
from medvl.io import read_volume
from medvl.region import infer_region
from medvl.volume import Volume


@pytest.mark.parametrize("case, expected", [("lung1", "chest"), ("lung2", "chest"), ("brain1", "head")])
def test_sample_cases(sample_dir, case, expected):
    path = sample_dir / f"{case}_image.nii.gz"
    if not path.exists():
        pytest.skip(f"{case} missing: run python sample_data/make_sample_data.py")
    guess = infer_region(read_volume(path))
    assert guess.region == expected, guess.reason
    assert guess.reason


def _ellipse(shape_ji, spacing, a_mm, b_mm):
    j, i = np.indices(shape_ji)
    cj, ci = (shape_ji[0] - 1) / 2, (shape_ji[1] - 1) / 2
    return ((j - cj) * spacing / b_mm) ** 2 + ((i - ci) * spacing / a_mm) ** 2 <= 1


def _volume(slices, spacing=2.0, modality="CT", thickness=5.0):
    return Volume(np.stack(slices).astype(np.int16), Geometry(spacing=(spacing, spacing, thickness)), modality)


def test_synthetic_head_ct_is_head_and_abdomen_ct_is_abdomen():
    rng = np.random.default_rng(0)
    sp, shape = 2.0, (128, 128)
    outer, inner = _ellipse(shape, sp, 75, 95), _ellipse(shape, sp, 68, 88)
    head = np.where(inner, 35, np.where(outer, 900, -1000)) + rng.normal(0, 10, (10,) + shape)
    assert infer_region(_volume(list(head), sp)).region == "head"
    sp, shape = 2.0, (200, 200)
    body = _ellipse(shape, sp, 170, 120)
    gas = _ellipse(shape, sp, 15, 15)  # a little bowel gas
    abdomen = np.where(body & ~gas, 40, -1000) + rng.normal(0, 10, (10,) + shape)
    guess = infer_region(_volume(list(abdomen), sp))
    assert guess.region == "abdomen", guess.reason
    lungs = np.where(body & ~(_ellipse(shape, sp, 150, 100) & ~_ellipse(shape, sp, 30, 100)), 40, -850)
    assert infer_region(_volume([lungs] * 10, sp)).region == "chest"


def test_mr_head_sized_field_is_head_and_a_trunk_is_unknown():
    sp, shape = 2.0, (150, 150)
    head = np.where(_ellipse(shape, sp, 70, 90), 600, 0)
    assert infer_region(_volume([head] * 8, sp, "MR")).region == "head"
    trunk = np.where(_ellipse(shape, sp, 145, 100), 600, 0)
    guess = infer_region(_volume([trunk] * 8, sp, "MR"))
    assert guess.region == "unknown" and "wider than a head" in guess.reason
    assert infer_region(Volume(np.zeros((2, 4, 4), np.int16), Geometry(), "MR")).region == "unknown"
