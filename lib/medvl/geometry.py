"""Image geometry: the one home of every voxel-index <-> physical-point conversion.

Conventions (read these before passing arrays anywhere):

- Physical points are in LPS millimetres (DICOM / ITK / SimpleITK), unless a function
  says RAS (NIfTI / 3D Slicer). `lps_to_ras` and `ras_to_lps` flip the signs of x and y.
- Voxel indices are ITK order (i, j, k) = (column, row, slice). A numpy array from
  `SimpleITK.GetArrayFromImage` (and `Volume.array`) is indexed (k, j, i); use
  `kji_to_ijk` / `ijk_to_kji` to move between the two orders.
- `direction` is the 3x3 direction cosine matrix, row-major, as `Image.GetDirection()`
  gives it: column c is the physical unit vector of index axis c (i, j or k).

    physical = origin + direction @ diag(spacing) @ (i, j, k)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from medvl.errors import GeometryError

logger = logging.getLogger(__name__)

_LPS_RAS = np.array([-1.0, -1.0, 1.0])  # sign flip for x and y; its own inverse


def kji_to_ijk(index):
    """Reverse a numpy-order (k, j, i) index (shape (3,) or (N, 3)) into ITK order (i, j, k)."""
    return np.asarray(index)[..., ::-1]


def ijk_to_kji(index):
    """Reverse an ITK-order (i, j, k) index (shape (3,) or (N, 3)) into numpy order (k, j, i)."""
    return np.asarray(index)[..., ::-1]


def lps_to_ras(points):
    """Physical points (x, y, z), shape (3,) or (N, 3), from LPS to RAS (negate x and y)."""
    return np.asarray(points, dtype=float) * _LPS_RAS


def ras_to_lps(points):
    """Physical points (x, y, z), shape (3,) or (N, 3), from RAS to LPS (negate x and y)."""
    return np.asarray(points, dtype=float) * _LPS_RAS


def _as_points(values, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.shape[-1:] != (3,) or arr.ndim not in (1, 2):
        raise ValueError(f"{what} must have shape (3,) or (N, 3), got {arr.shape}")
    return arr


@dataclass(frozen=True)
class Geometry:
    """Origin, spacing and direction of a 3D image in LPS space, index axes in ITK order (i, j, k).

    `origin` is the physical LPS point (mm) of voxel (0, 0, 0); `spacing` the voxel size (mm)
    along i, j, k; `direction` 9 floats, row-major 3x3 (a 3x3 nested sequence or array is
    accepted and flattened). Raises GeometryError for non-positive spacing or a singular
    direction. The image size is not part of the geometry: `Volume.array.shape` carries it.
    """

    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self):
        origin = np.asarray(self.origin, dtype=float).ravel()
        spacing = np.asarray(self.spacing, dtype=float).ravel()
        direction = np.asarray(self.direction, dtype=float).ravel()
        if origin.size != 3 or spacing.size != 3 or direction.size != 9:
            raise GeometryError(
                f"geometry needs 3 origin, 3 spacing and 9 direction values, got "
                f"{origin.size}, {spacing.size} and {direction.size}"
            )
        if not np.all(np.isfinite(np.concatenate([origin, spacing, direction]))):
            raise GeometryError(f"geometry has non-finite values: origin {origin}, spacing {spacing}")
        if np.any(spacing <= 0):
            raise GeometryError(f"spacing must be positive along i, j, k, got {tuple(spacing)}")
        if abs(np.linalg.det(direction.reshape(3, 3))) < 1e-6:
            raise GeometryError(f"direction matrix is singular: {tuple(direction)}")
        object.__setattr__(self, "origin", tuple(float(v) for v in origin))
        object.__setattr__(self, "spacing", tuple(float(v) for v in spacing))
        object.__setattr__(self, "direction", tuple(float(v) for v in direction))

    # ---- matrices -------------------------------------------------------------------
    @property
    def direction_matrix(self) -> np.ndarray:
        """3x3 direction cosines; column c is the LPS unit vector of index axis c (i, j, k)."""
        return np.array(self.direction).reshape(3, 3)

    def ijk_to_lps_matrix(self) -> np.ndarray:
        """4x4 affine taking homogeneous ITK-order (i, j, k, 1) to LPS (x, y, z, 1)."""
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix * np.array(self.spacing)  # scale column c by spacing[c]
        m[:3, 3] = self.origin
        return m

    def ijk_to_ras_matrix(self) -> np.ndarray:
        """4x4 affine taking (i, j, k, 1) to RAS (x, y, z, 1): 3D Slicer's IJKToRAS matrix."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.ijk_to_lps_matrix()

    @classmethod
    def from_ijk_to_ras_matrix(cls, matrix) -> "Geometry":
        """Geometry from a 4x4 IJKToRAS affine (e.g. Slicer's `GetIJKToRASMatrix`, as numpy)."""
        m = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(matrix, dtype=float).reshape(4, 4)
        spacing = np.linalg.norm(m[:3, :3], axis=0)
        if np.any(spacing <= 0):
            raise GeometryError(f"IJKToRAS matrix has a zero column: {m[:3, :3].tolist()}")
        return cls(origin=m[:3, 3], spacing=spacing, direction=m[:3, :3] / spacing)

    # ---- point conversions ----------------------------------------------------------
    def index_to_physical(self, ijk) -> np.ndarray:
        """Continuous ITK-order index (i, j, k), shape (3,) or (N, 3) -> LPS points, same shape.

        A numpy (k, j, i) index must be reversed first (`kji_to_ijk`).
        """
        ijk = _as_points(ijk, "index (i, j, k)")
        m = self.ijk_to_lps_matrix()
        return ijk @ m[:3, :3].T + m[:3, 3]

    def physical_to_index(self, xyz) -> np.ndarray:
        """LPS points (x, y, z), shape (3,) or (N, 3) -> continuous ITK-order index (i, j, k).

        Voxel centres are at integer indices; use `round_index` for the containing voxel.
        """
        xyz = _as_points(xyz, "physical point (x, y, z)")
        m = self.ijk_to_lps_matrix()
        return (xyz - m[:3, 3]) @ np.linalg.inv(m[:3, :3]).T

    def round_index(self, xyz) -> np.ndarray:
        """LPS points, shape (3,) or (N, 3) -> integer ITK-order index (i, j, k) of the nearest voxel.

        Halves round up, as ITK's TransformPhysicalPointToIndex does. No bounds check:
        see `Volume.contains_index`.
        """
        return np.floor(self.physical_to_index(xyz) + 0.5).astype(np.int64)

    # ---- comparison and SimpleITK ---------------------------------------------------
    def same_as(self, other: "Geometry", tol: float = 1e-4) -> bool:
        """True when origin (mm), spacing (mm) and direction agree with `other` within `tol`."""
        return all(
            np.allclose(getattr(self, name), getattr(other, name), rtol=0.0, atol=tol)
            for name in ("origin", "spacing", "direction")
        )

    def describe_difference(self, other: "Geometry") -> str:
        """One line naming what differs from `other` (for error messages)."""
        parts = [
            f"{name} {tuple(round(v, 6) for v in getattr(self, name))} vs "
            f"{tuple(round(v, 6) for v in getattr(other, name))}"
            for name in ("origin", "spacing", "direction")
            if not np.allclose(getattr(self, name), getattr(other, name), rtol=0.0, atol=1e-4)
        ]
        return "; ".join(parts) or "no difference"

    @classmethod
    def from_sitk(cls, image) -> "Geometry":
        """Geometry of a 3D SimpleITK image (or ImageFileReader after ReadImageInformation)."""
        if image.GetDimension() != 3:
            raise GeometryError(f"need a 3D image for a Geometry, got {image.GetDimension()}D")
        return cls(image.GetOrigin(), image.GetSpacing(), image.GetDirection())

    def apply_to_sitk(self, image):
        """Set this geometry on a 3D SimpleITK image in place; returns the image."""
        if image.GetDimension() != 3:
            raise GeometryError(f"need a 3D image to apply a Geometry, got {image.GetDimension()}D")
        image.SetOrigin(self.origin)
        image.SetSpacing(self.spacing)
        image.SetDirection(self.direction)
        return image


# ---- DICOM slice planes ---------------------------------------------------------------
def dicom_plane(geometry: Geometry, k: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(ImageOrientationPatient, ImagePositionPatient) of slice `k` (ITK index) of `geometry`.

    Orientation is the row direction (index axis i) then the column direction (axis j), both
    LPS unit vectors; the position is the LPS centre of voxel (0, 0, k).
    """
    d = geometry.direction_matrix
    orientation = tuple(float(v) for v in (*d[:, 0], *d[:, 1]))
    return orientation, tuple(float(v) for v in geometry.index_to_physical((0.0, 0.0, float(k))))


def slice_normal(orientation) -> np.ndarray:
    """Unit normal (row x column) of a DICOM ImageOrientationPatient (6 values)."""
    o = np.asarray(orientation, dtype=float).reshape(2, 3)
    n = np.cross(o[0], o[1])
    return n / np.linalg.norm(n)


def geometry_from_dicom(orientation, first_position, pixel_spacing, slice_gap: float) -> Geometry:
    """Geometry of a DICOM slice stack sorted along its normal (the ITK / DICOM convention).

    `orientation`: ImageOrientationPatient (row then column direction cosines, LPS);
    `first_position`: ImagePositionPatient of the slice with k = 0; `pixel_spacing`: DICOM
    PixelSpacing (row spacing = along j, column spacing = along i); `slice_gap`: distance (mm)
    between consecutive slices along the normal. Index axes: i along the row direction, j along
    the column direction, k along row x column.
    """
    o = np.asarray(orientation, dtype=float).reshape(2, 3)
    direction = np.column_stack([o[0], o[1], slice_normal(orientation)])
    spacing = (float(pixel_spacing[1]), float(pixel_spacing[0]), float(slice_gap))
    return Geometry(origin=tuple(float(v) for v in first_position), spacing=spacing, direction=direction.ravel())
