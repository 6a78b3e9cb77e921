"""Click -> voxel in pure numpy: oblique, flipped, permuted, anisotropic and transformed grids.

Each case places a point at the world RAS centre of chosen voxels and requires the exact
(i, j, k) back (0 off-by-one), then moves the point inside the voxel's cell (still that
voxel) and just past its border (the neighbour).
"""

from __future__ import annotations

import numpy as np
import pytest

from MedVLSlicerLib.errors import GeometryError, PromptError
from MedVLSlicerLib.geometry import (
    box_from_world_corners,
    ijk_to_ras_matrix,
    ijk_to_world,
    round_index,
    voxels_from_world,
    world_to_continuous_ijk,
)

SIZE = (37, 29, 11)  # (ni, nj, nk), odd and unequal so a swapped axis shows


def rotation(axis, degrees):
    """3x3 rotation about x, y or z."""
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    r = {"x": [[1, 0, 0], [0, c, -s], [0, s, c]], "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]], "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]]}
    return np.array(r[axis])


def affine(rot, translation, scale=(1, 1, 1)):
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag(scale)
    m[:3, 3] = translation
    return m


GRIDS = {
    # as Slicer shows an LPS file read from NRRD/NIfTI: i -> -R (L), j -> -A (P), k -> S
    "lps_axial": ijk_to_ras_matrix((170.5, 324.5, -360.0), (0.627, 0.627, 5.0), np.diag([-1, -1, 1])),
    "flipped": ijk_to_ras_matrix((-10.0, 20.0, 30.0), (0.8, 1.1, 2.5), np.diag([1, -1, -1])),
    "permuted_sagittal": ijk_to_ras_matrix((5.0, -7.0, 11.0), (1.0, 0.7, 3.0), [[0, 0, 1], [1, 0, 0], [0, -1, 0]]),
    "oblique": ijk_to_ras_matrix((1.5, -2.5, 3.5), (0.9, 0.6, 4.0), rotation("z", 27) @ rotation("x", -19) @ rotation("y", 8)),
    "oblique_left_handed": ijk_to_ras_matrix((0, 0, 0), (0.5, 0.5, 5.0), rotation("y", 33) @ np.diag([1, 1, -1])),
    # a parent transform (rotation + shift, and an anisotropic scale) on top of a grid
    "parent_transformed": affine(rotation("x", 40) @ rotation("z", -65), (12.0, -30.0, 7.5))
    @ ijk_to_ras_matrix((170.5, 324.5, -360.0), (0.627, 0.627, 5.0), np.diag([-1, -1, 1])),
    "parent_scaled": affine(rotation("y", 15), (0, 5, 0), scale=(1.3, 0.8, 1.1))
    @ ijk_to_ras_matrix((1.5, -2.5, 3.5), (0.9, 0.6, 4.0), rotation("z", 27)),
}

VOXELS = np.array([[0, 0, 0], [36, 28, 10], [0, 28, 0], [36, 0, 10], [18, 14, 5], [7, 23, 2], [30, 3, 9]])


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_voxel_centre_lands_exactly(name):
    m = GRIDS[name]
    world = ijk_to_world(VOXELS, m)
    np.testing.assert_array_equal(voxels_from_world(world, m, SIZE), VOXELS)


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_point_inside_cell_keeps_voxel_and_past_border_moves(name):
    m = GRIDS[name]
    rng = np.random.default_rng(7)
    inner = VOXELS[4] + rng.uniform(-0.49, 0.49, size=(50, 3))
    got = voxels_from_world(ijk_to_world(inner, m), m, SIZE)
    assert (got == VOXELS[4]).all()
    for axis in range(3):
        step = np.zeros(3)
        step[axis] = 0.51
        moved = voxels_from_world(ijk_to_world(VOXELS[4] + step, m), m, SIZE)[0]
        expected = VOXELS[4].copy()
        expected[axis] += 1
        np.testing.assert_array_equal(moved, expected)


def test_rounding_is_half_up_not_bankers():
    np.testing.assert_array_equal(round_index([[0.5, 1.5, 2.5]]), [[1, 2, 3]])
    np.testing.assert_array_equal(round_index([[-0.4999999, 2.0000001, 9.9999999]]), [[0, 2, 10]])


def test_continuous_index_is_inverse_of_matrix():
    m = GRIDS["oblique"]
    pts = np.array([[1.25, 2.5, 3.75], [-0.3, 40.0, 2.0]])
    np.testing.assert_allclose(world_to_continuous_ijk(ijk_to_world(pts, m), m), pts, atol=1e-9)


@pytest.mark.parametrize("bad", [[-1, 0, 0], [0, 29, 0], [0, 0, 11], [37, 28, 10]])
def test_point_outside_volume_names_point_and_size(bad):
    m = GRIDS["lps_axial"]
    world = ijk_to_world([[1, 1, 1], bad], m)
    with pytest.raises(PromptError, match=r"point 2 at RAS .* falls on voxel .*outside .*size \[37, 29, 11\]"):
        voxels_from_world(world, m, SIZE)


def test_singular_matrix_is_refused():
    with pytest.raises(GeometryError, match="singular"):
        ijk_to_ras_matrix((0, 0, 0), (1, 0, 1), np.eye(3))
    with pytest.raises(GeometryError, match="invertible"):
        world_to_continuous_ijk([0, 0, 0], np.zeros((4, 4)))


@pytest.mark.parametrize("name", ["permuted_sagittal", "oblique", "parent_transformed"])
def test_box_corners_give_inclusive_voxel_bounds(name):
    m = GRIDS[name]
    lo, hi = np.array([4, 6, 3]), np.array([20, 15, 3])
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    got_lo, got_hi = box_from_world_corners(ijk_to_world(corners, m), m, SIZE)
    np.testing.assert_array_equal(got_lo, lo)
    np.testing.assert_array_equal(got_hi, hi)


def test_box_is_clipped_to_volume_and_refused_when_outside():
    m = GRIDS["flipped"]
    lo, hi = box_from_world_corners(ijk_to_world([[-5, -5, 2], [50, 10, 2]], m), m, SIZE)
    np.testing.assert_array_equal(lo, [0, 0, 2])
    np.testing.assert_array_equal(hi, [36, 10, 2])
    with pytest.raises(PromptError, match="outside the volume"):
        box_from_world_corners(ijk_to_world([[40, 0, 0], [50, 5, 0]], m), m, SIZE)
