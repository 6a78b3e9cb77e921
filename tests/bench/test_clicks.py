"""The simulated correction clicks of `medvl bench-interactive` (medvl.bench.clicks)."""

from __future__ import annotations

import numpy as np

from medvl.bench.clicks import next_click


def _cube(shape, lo, hi):
    m = np.zeros(shape, dtype=bool)
    m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return m


def test_no_click_when_the_mask_is_right():
    truth = _cube((10, 10, 10), (2, 2, 2), (6, 6, 6))
    assert next_click(truth, truth) is None


def test_a_miss_gets_a_foreground_click_at_its_centre():
    truth = _cube((20, 20, 20), (2, 2, 2), (15, 15, 15))
    pred = _cube((20, 20, 20), (2, 2, 2), (15, 15, 8))  # misses i in 8..14
    click = next_click(pred, truth)
    i, j, k = click.ijk
    assert click.positive and not pred[k, j, i] and truth[k, j, i]
    assert i == 11 and 7 <= j <= 9 and 7 <= k <= 9  # the centre of the missed slab, not its border
    assert click.axis == "i" and click.slice_area == 13 * 13
    assert click.region_voxels == 13 * 13 * 7


def test_the_largest_error_wins_and_a_false_positive_gets_a_background_click():
    truth = _cube((30, 30, 30), (5, 5, 5), (10, 10, 10))
    pred = truth | _cube((30, 30, 30), (15, 15, 15), (25, 25, 25))  # a big false positive
    pred[5, 5, 5] = False  # and a one-voxel miss
    click = next_click(pred, truth)
    i, j, k = click.ijk
    assert not click.positive and pred[k, j, i] and not truth[k, j, i]
    assert click.region_voxels == 1000


def test_the_click_goes_on_the_axis_where_the_region_is_largest():
    truth = np.zeros((40, 40, 40), dtype=bool)
    pred = truth.copy()
    truth[10:30, 18:21, 5:35] = True  # flat in j: largest cross-section on a j slice
    click = next_click(pred, truth)
    assert click.axis == "j" and click.slice_area == 20 * 30
    restricted = next_click(pred, truth, axes=("k",))  # an engine that only prompts along k
    assert restricted.axis == "k" and restricted.slice_area == 3 * 30
    i, j, k = restricted.ijk
    assert truth[k, j, i]


def test_anisotropic_spacing_moves_the_centre_along_the_thin_axis():
    truth = np.zeros((9, 40, 40), dtype=bool)
    truth[:, 5:35, 5:15] = True  # 9 slices x 30 rows x 10 cols
    click = next_click(np.zeros_like(truth), truth, spacing_ijk=(3.0, 1.0, 1.0), axes=("k",))
    i, j, k = click.ijk
    # cols are 3 mm, so the region is 30 mm wide and tall: the centre is the middle of both
    assert 9 <= i <= 10 and 19 <= j <= 20 and k == 4
