"""Intensity mapping per modality: fixed HU windows for CT, volume percentiles for MR."""

import numpy as np
import pytest

from medvl.errors import MedVLError
from medvl.intensity import IntensitySettings, ct_window_bounds, intensity_bounds, to_unit


def test_ct_window_is_fixed_in_hounsfield_units():
    a = np.array([[[-2000, -1000, 0, 1000, 3000]]], dtype=np.int16)
    lo, hi = intensity_bounds(a, "CT", IntensitySettings(ct_window="wide"))
    assert (lo, hi) == (-1000.0, 1000.0)
    assert np.allclose(to_unit(a, (lo, hi)), [[[0, 0, 0.5, 1, 1]]])
    assert ct_window_bounds((40, 400)) == (-160.0, 240.0)
    assert ct_window_bounds("lung") == (-1350.0, 150.0)


def test_mr_uses_volume_percentiles():
    rng = np.random.default_rng(0)
    a = rng.normal(500, 100, (8, 16, 16)).astype(np.float32)
    a[0, 0, 0] = 1e6  # one hot voxel must not squash the mapping
    lo, hi = intensity_bounds(a, "MR", IntensitySettings(mr_percentiles=(0.5, 99.5)))
    assert 150 < lo < 300 and 700 < hi < 850
    u = to_unit(a, (lo, hi))
    assert u.dtype == np.float32 and u.min() == 0.0 and u.max() == 1.0 and u.shape == a.shape


def test_bad_window_names_the_fix():
    with pytest.raises(MedVLError, match="unknown CT window 'liver'"):
        ct_window_bounds("liver")
    with pytest.raises(MedVLError, match="width"):
        ct_window_bounds((0, 0))
