"""What a response carries besides latencies: mask statistics, the changed-box crop, the file.

Arrays are numpy (k, j, i) as everywhere in medvl; offsets and sizes sent to clients are
ITK order (i, j, k). A crop is written with the image's spacing and direction and its
origin moved to the crop's first voxel (`medvl.geometry`), so it overlays in place.
"""

from __future__ import annotations

import numpy as np

from medvl.geometry import Geometry, kji_to_ijk
from medvl.io import write_mask
from medvl.slicing import numpy_axis


def bbox_kji(mask: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """Inclusive (lo, hi) numpy-order (k, j, i) bounds of the nonzero voxels, or None if empty."""
    lo, hi = [], []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        lo.append(int(hits[0]))
        hi.append(int(hits[-1]))
    return tuple(lo), tuple(hi)


def mask_stats(mask: np.ndarray, spacing_ijk, axis: str) -> dict:
    """voxels, volume_ml and the inclusive slice range along `axis` of a (k, j, i) mask."""
    voxels = int(np.count_nonzero(mask))
    along = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != numpy_axis(axis))))
    return {
        "voxels": voxels,
        "volume_ml": round(voxels * float(np.prod(spacing_ijk)) / 1000.0, 4),
        "slice_range": [int(along[0]), int(along[-1])] if along.size else None,
        "slices": int(along.size),
    }


def changed_crop(before: np.ndarray | None, after: np.ndarray):
    """The box of voxels that differ between two (k, j, i) label arrays, cut from `after`.

    Returns (offset_ijk, crop (k, j, i)) or None when nothing changed.
    """
    diff = after != 0 if before is None else before != after
    box = bbox_kji(diff)
    if box is None:
        return None
    (k0, j0, i0), (k1, j1, i1) = box
    return (i0, j0, k0), after[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1]


def crop_geometry(geometry: Geometry, offset_ijk) -> Geometry:
    """The geometry of a sub-grid starting at ITK index `offset_ijk` of `geometry`."""
    origin = geometry.index_to_physical(np.asarray(offset_ijk, dtype=float))
    return Geometry(origin=origin, spacing=geometry.spacing, direction=geometry.direction)


def write_labels(path: str, labels: np.ndarray, geometry: Geometry) -> str:
    """Write a uint8 (k, j, i) label array with `geometry` (compressed NRRD/NIfTI by extension)."""
    return str(write_mask(path, labels, like=geometry))


def size_ijk(array: np.ndarray) -> list[int]:
    """ITK-order size (i, j, k) of a numpy (k, j, i) array, as a JSON list."""
    return [int(v) for v in kji_to_ijk(array.shape)]
