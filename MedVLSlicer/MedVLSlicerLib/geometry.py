"""Click -> voxel: the one home of every RAS <-> IJK conversion on the Slicer side.

Conventions (the same as the server's `medvl.geometry`):

- Physical points are Slicer world coordinates, RAS millimetres, after every parent
  transform; a markups control point's `GetNthControlPointPositionWorld` is such a point.
- Voxel indices are ITK order (i, j, k) = (column, row, slice) of the volume's image data.
  Slicer's IJK is exactly the file's ITK index, so an index computed here is what the
  server's `SimpleITK` reading of the uploaded file means by (i, j, k).
- A numpy array of a volume (`slicer.util.arrayFromVolume`) is indexed (k, j, i).
- Voxel centres sit at integer indices; a continuous index rounds half up
  (`floor(x + 0.5)`), so a point anywhere inside a voxel's cell lands on that voxel.

The pure-numpy functions take a 4x4 `ijk_to_world` matrix (IJK -> world RAS, homogeneous)
and need no Slicer; the `volume_*` functions read that matrix from a MRML volume node,
including its parent transforms, and import `slicer`/`vtk` only when called.
"""

from __future__ import annotations

import numpy as np

from .errors import GeometryError, PromptError

_ROUND_TOL = 1e-6  # a continuous index within this of a cell border is snapped before rounding


def ijk_to_ras_matrix(origin, spacing, directions) -> np.ndarray:
    """4x4 IJK -> RAS matrix from an origin (RAS mm of voxel (0, 0, 0)), a spacing (mm along
    i, j, k) and a 3x3 `directions` whose column c is the RAS unit vector of index axis c."""
    d = np.asarray(directions, dtype=float).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = d @ np.diag(np.asarray(spacing, dtype=float))
    m[:3, 3] = np.asarray(origin, dtype=float)
    if abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise GeometryError(f"IJK->RAS matrix is singular (spacing {spacing}, directions {d.tolist()})")
    return m


def _points(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"points must have shape (3,) or (N, 3), got {np.shape(values)}")
    return arr


def world_to_continuous_ijk(points_world, ijk_to_world) -> np.ndarray:
    """World RAS points (N, 3) -> continuous ITK-order indices (N, 3) through the inverse of
    the 4x4 `ijk_to_world`; voxel centres come out as integers."""
    m = np.asarray(ijk_to_world, dtype=float)
    if m.shape != (4, 4) or abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise GeometryError(f"ijk_to_world must be an invertible 4x4 matrix, got {m.tolist()}")
    pts = _points(points_world)
    homog = np.c_[pts, np.ones(len(pts))]
    return (np.linalg.inv(m) @ homog.T).T[:, :3]


def ijk_to_world(indices, ijk_to_world) -> np.ndarray:
    """ITK-order indices (N, 3), integer or continuous -> world RAS points (N, 3)."""
    pts = _points(indices)
    return (np.asarray(ijk_to_world, dtype=float) @ np.c_[pts, np.ones(len(pts))].T).T[:, :3]


def round_index(continuous_ijk) -> np.ndarray:
    """Round continuous indices (N, 3) to the voxel whose cell holds them (half up), as int."""
    c = np.asarray(continuous_ijk, dtype=float)
    nearest = np.round(c)
    c = np.where(np.abs(c - nearest) < _ROUND_TOL, nearest, c)  # float noise at centres
    return np.floor(c + 0.5).astype(int)


def voxels_from_world(points_world, ijk_to_world, size_ijk, volume_name: str = "the volume") -> np.ndarray:
    """World RAS points (N, 3) -> the int (N, 3) ITK-order voxels they fall in.

    Raises PromptError naming the first point outside the volume of `size_ijk` = (ni, nj, nk).
    """
    ijk = round_index(world_to_continuous_ijk(points_world, ijk_to_world))
    return check_inside(ijk, points_world, size_ijk, volume_name)


def check_inside(ijk, points_world, size_ijk, volume_name: str = "the volume") -> np.ndarray:
    """Return int voxels `ijk` (N, 3); PromptError naming the first one outside `size_ijk`."""
    ijk = np.asarray(ijk, dtype=int)
    size = np.asarray(size_ijk, dtype=int)
    outside = np.any((ijk < 0) | (ijk >= size), axis=1)
    if outside.any():
        n = int(np.argmax(outside))
        ras = np.round(_points(points_world)[n], 2).tolist()
        raise PromptError(
            f"point {n + 1} at RAS {ras} falls on voxel {ijk[n].tolist()}, outside {volume_name} "
            f"(size {size.tolist()}): move it onto the image"
        )
    return ijk


def box_from_world_corners(corners_world, ijk_to_world, size_ijk) -> tuple[np.ndarray, np.ndarray]:
    """Corner points (N, 3) of a world-space box -> inclusive ITK-order voxel bounds (lo, hi);
    see `box_from_index_corners`."""
    return box_from_index_corners(world_to_continuous_ijk(corners_world, ijk_to_world), size_ijk)


def box_from_index_corners(corners_ijk, size_ijk) -> tuple[np.ndarray, np.ndarray]:
    """Continuous ITK-order corners (N, 3) -> inclusive voxel bounds (lo, hi) of their bounding
    box, rounded to voxels and clipped to the volume; PromptError when nothing is inside."""
    c = np.asarray(corners_ijk, dtype=float)
    lo = round_index(c.min(axis=0)[None])[0]
    hi = round_index(c.max(axis=0)[None])[0]
    size = np.asarray(size_ijk, dtype=int)
    if np.any(hi < 0) or np.any(lo >= size):
        raise PromptError(
            f"box spans voxels {lo.tolist()}..{hi.tolist()}, outside the volume (size {size.tolist()}): "
            "move the ROI onto the image"
        )
    return np.clip(lo, 0, size - 1), np.clip(hi, 0, size - 1)


# --- MRML: matrices from nodes (Slicer or slicer-core) ---------------------------------------


def _np_from_vtk(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_size_ijk(volume_node) -> tuple[int, int, int]:
    """(ni, nj, nk) of a volume node's image data; GeometryError when it has none."""
    image = volume_node.GetImageData() if volume_node is not None else None
    if image is None:
        raise GeometryError("the volume node has no image data: load a volume first")
    return tuple(int(n) for n in image.GetDimensions())


def volume_ijk_to_world(volume_node) -> np.ndarray:
    """4x4 IJK -> world RAS of a volume node: its IJKToRAS, then every (linear) parent transform.

    Raises GeometryError when a parent transform is non-linear; `volume_world_to_ijk` handles
    those point by point.
    """
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    ijk_to_ras = _np_from_vtk(m)
    parent = volume_node.GetParentTransformNode()
    if parent is None:
        return ijk_to_ras
    if not parent.IsTransformToWorldLinear():
        raise GeometryError(
            f"volume '{volume_node.GetName()}' is under the non-linear transform "
            f"'{parent.GetName()}': harden it or use volume_world_to_ijk"
        )
    to_world = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(to_world)
    return _np_from_vtk(to_world) @ ijk_to_ras


def volume_world_to_ijk(volume_node, points_world) -> np.ndarray:
    """World RAS points (N, 3) -> continuous ITK-order indices (N, 3) of `volume_node`,
    through any parent transform chain, linear or not."""
    parent = volume_node.GetParentTransformNode()
    if parent is None or parent.IsTransformToWorldLinear():
        return world_to_continuous_ijk(points_world, volume_ijk_to_world(volume_node))
    import slicer
    import vtk

    world_to_local = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, parent, world_to_local)
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    local = np.array([world_to_local.TransformPoint(*p) for p in _points(points_world)])
    return world_to_continuous_ijk(local, _np_from_vtk(m))


def volume_voxels_from_world(volume_node, points_world) -> np.ndarray:
    """World RAS points (N, 3) -> int (N, 3) ITK-order voxels of `volume_node`; PromptError
    naming the first point outside the volume."""
    ijk = round_index(volume_world_to_ijk(volume_node, points_world))
    return check_inside(ijk, points_world, volume_size_ijk(volume_node), f"'{volume_node.GetName()}'")
