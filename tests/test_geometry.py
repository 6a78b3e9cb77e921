"""medvl.geometry: index <-> LPS/RAS conversions, validation, SimpleITK agreement."""

import numpy as np
import pytest
import SimpleITK as sitk

from medvl.errors import GeometryError
from medvl.geometry import Geometry, ijk_to_kji, kji_to_ijk, lps_to_ras, ras_to_lps


def _rotation(axis, degrees):
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    x, y, z = np.asarray(axis, float) / np.linalg.norm(axis)
    return np.array([  # Rodrigues' formula
        [c + x * x * (1 - c), x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
        [y * x * (1 - c) + z * s, c + y * y * (1 - c), y * z * (1 - c) - x * s],
        [z * x * (1 - c) - y * s, z * y * (1 - c) + x * s, c + z * z * (1 - c)],
    ])


GEOMETRIES = {
    "identity": Geometry(),
    "flipped": Geometry((10.0, -20.0, 30.0), (0.7, 0.7, 3.0), np.diag([-1.0, -1.0, 1.0])),
    "permuted": Geometry((-5.0, 2.5, 100.0), (1.0, 2.0, 3.0), [[0, 0, 1], [1, 0, 0], [0, -1, 0]]),
    "oblique": Geometry((-120.3, 45.1, -700.0), (0.57, 0.57, 5.0), _rotation((1, 2, 3), 27)),
    "anisotropic": Geometry((0.0, 0.0, 0.0), (0.3, 1.7, 6.5), np.eye(3)),
}


def _sitk_image(geometry, size=(7, 6, 5)):
    return geometry.apply_to_sitk(sitk.Image(list(size), sitk.sitkUInt8))


@pytest.mark.parametrize("name", GEOMETRIES)
def test_index_physical_round_trip(name):
    geometry = GEOMETRIES[name]
    rng = np.random.default_rng(0)
    ijk = rng.uniform(-5, 60, size=(50, 3))
    back = geometry.physical_to_index(geometry.index_to_physical(ijk))
    np.testing.assert_allclose(back, ijk, atol=1e-9)
    integer = rng.integers(0, 60, size=(50, 3))
    np.testing.assert_array_equal(geometry.round_index(geometry.index_to_physical(integer)), integer)
    one = geometry.index_to_physical((1, 2, 3))
    assert one.shape == (3,)
    assert tuple(geometry.round_index(one)) == (1, 2, 3)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_agrees_with_simpleitk(name):
    geometry = GEOMETRIES[name]
    image = _sitk_image(geometry)
    for ijk in [(0, 0, 0), (6, 5, 4), (3, 1, 2)]:
        np.testing.assert_allclose(
            geometry.index_to_physical(ijk), image.TransformIndexToPhysicalPoint(ijk), atol=1e-9)
    for cont in [(0.3, 4.9, 1.5), (2.5, 2.5, 2.5), (-1.2, 0.0, 7.7)]:
        point = image.TransformContinuousIndexToPhysicalPoint(cont)
        np.testing.assert_allclose(geometry.physical_to_index(point), cont, atol=1e-9)
        assert tuple(geometry.round_index(point)) == image.TransformPhysicalPointToIndex(point)
    assert Geometry.from_sitk(image) == geometry


def test_axis_order_helpers_and_permuted_direction():
    geometry = GEOMETRIES["permuted"]  # i -> +y (L-P), j -> -z, k -> +x
    step = geometry.index_to_physical([(1, 0, 0), (0, 1, 0), (0, 0, 1)]) - geometry.origin
    np.testing.assert_allclose(step, [(0, 1, 0), (0, 0, -2), (3, 0, 0)])
    assert tuple(kji_to_ijk((3, 2, 1))) == (1, 2, 3)
    np.testing.assert_array_equal(ijk_to_kji([[1, 2, 3], [4, 5, 6]]), [[3, 2, 1], [6, 5, 4]])


def test_lps_ras():
    lps = np.array([[10.0, -20.0, 30.0], [-1.0, 2.0, -3.0]])
    np.testing.assert_array_equal(lps_to_ras(lps), [[-10, 20, 30], [1, -2, -3]])
    np.testing.assert_array_equal(ras_to_lps(lps_to_ras(lps)), lps)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_matrices(name):
    geometry = GEOMETRIES[name]
    ijk = np.array([2.0, 3.0, 4.0, 1.0])
    np.testing.assert_allclose((geometry.ijk_to_lps_matrix() @ ijk)[:3], geometry.index_to_physical(ijk[:3]))
    ras = geometry.ijk_to_ras_matrix() @ ijk
    np.testing.assert_allclose(ras[:3], lps_to_ras(geometry.index_to_physical(ijk[:3])))
    back = Geometry.from_ijk_to_ras_matrix(geometry.ijk_to_ras_matrix())
    assert back.same_as(geometry, tol=1e-12)


def test_same_as_tolerance():
    g = GEOMETRIES["oblique"]
    moved = Geometry(np.add(g.origin, 1e-6), g.spacing, g.direction)
    assert g.same_as(moved) and not g.same_as(moved, tol=1e-7)
    assert not g.same_as(Geometry(g.origin, (0.57, 0.57, 5.01), g.direction))
    assert "spacing" in g.describe_difference(Geometry(g.origin, (0.57, 0.57, 5.01), g.direction))


@pytest.mark.parametrize("kwargs, words", [
    ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be positive"),
    ({"spacing": (1.0, -2.0, 1.0)}, "spacing must be positive"),
    ({"direction": [[1, 0, 0], [1, 0, 0], [0, 0, 1]]}, "singular"),
    ({"origin": (0.0, 0.0)}, "3 origin"),
    ({"origin": (0.0, np.nan, 0.0)}, "non-finite"),
])
def test_invalid_geometry(kwargs, words):
    with pytest.raises(GeometryError, match=words):
        Geometry(**kwargs)


def test_from_sitk_rejects_2d():
    with pytest.raises(GeometryError, match="2D"):
        Geometry.from_sitk(sitk.Image([4, 4], sitk.sitkUInt8))
