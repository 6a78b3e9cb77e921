"""Measurements of a mask: volume, extents, RECIST-style diameters, intensity statistics.

Arrays are numpy (k, j, i); `spacing_kji` is mm per voxel along (k, j, i). Diameters are
measured between voxel centres in the axial plane (array[k]), in mm with the in-plane
spacing (rows j: spacing_kji[1], columns i: spacing_kji[2]); the direction matrix being
orthonormal, in-plane distances do not depend on it.

RECIST: on every slice the longest diameter is the largest distance between two voxel
centres (found on the convex hull of the slice's mask, which contains every farthest
pair); the slice with the longest one is the measurement slice. The perpendicular (short
axis) is the longest chord at right angles to it on that slice: voxel centres are grouped
by their position along the long axis in bins one pixel wide, and the widest group across
the long axis wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError


@dataclass
class Diameter:
    length_mm: float
    p0: tuple[int, int]  # (row j, col i) voxel of one end
    p1: tuple[int, int]  # (row j, col i) voxel of the other end


def _points_mm(rc: np.ndarray, sy: float, sx: float) -> np.ndarray:
    return np.stack([rc[:, 0] * sy, rc[:, 1] * sx], axis=1)


def longest_diameter(mask2d: np.ndarray, sy: float, sx: float) -> Diameter:
    """Largest distance between two voxel centres of a 2D (row, col) mask; sy/sx mm per row/col."""
    rc = np.argwhere(mask2d)
    if len(rc) == 0:
        return Diameter(0.0, (0, 0), (0, 0))
    edge = rc if len(rc) < 16 else np.argwhere(mask2d & ~ndi.binary_erosion(mask2d))
    pts = _points_mm(edge, sy, sx)
    try:
        hull = edge[ConvexHull(pts).vertices] if len(edge) >= 3 else edge
    except QhullError:  # all on one line
        hull = edge
    hp = _points_mm(hull, sy, sx)
    d2 = ((hp[:, None, :] - hp[None, :, :]) ** 2).sum(-1)
    a, b = np.unravel_index(int(np.argmax(d2)), d2.shape)
    return Diameter(float(np.sqrt(d2[a, b])), tuple(int(v) for v in hull[a]), tuple(int(v) for v in hull[b]))


def perpendicular_diameter(mask2d: np.ndarray, sy: float, sx: float, long: Diameter) -> Diameter:
    """Longest chord of the mask at right angles to `long` (see the module docstring)."""
    rc = np.argwhere(mask2d)
    if len(rc) < 2 or long.length_mm == 0:
        p = tuple(int(v) for v in rc[0]) if len(rc) else (0, 0)
        return Diameter(0.0, p, p)
    pts = _points_mm(rc, sy, sx)
    u = _points_mm(np.array([long.p1]), sy, sx)[0] - _points_mm(np.array([long.p0]), sy, sx)[0]
    u /= np.linalg.norm(u)
    w = np.array([-u[1], u[0]])
    t, s = pts @ u, pts @ w
    bins = np.floor(t / min(sy, sx) + 0.5).astype(np.int64)
    order = np.lexsort((s, bins))
    b_sorted = bins[order]
    starts = np.flatnonzero(np.r_[True, b_sorted[1:] != b_sorted[:-1]])
    ends = np.r_[starts[1:], len(order)] - 1
    widths = s[order[ends]] - s[order[starts]]
    g = int(np.argmax(widths))
    lo, hi = order[starts[g]], order[ends[g]]
    return Diameter(float(np.hypot(*(pts[hi] - pts[lo]))), tuple(int(v) for v in rc[lo]), tuple(int(v) for v in rc[hi]))


@dataclass
class Recist:
    slice_k: int  # axial slice of the measurement
    long: Diameter
    short: Diameter


def recist(mask: np.ndarray, spacing_kji) -> Recist:
    """RECIST long and short axes of a (k, j, i) mask on its slice with the longest diameter."""
    sy, sx = spacing_kji[1], spacing_kji[2]
    best = None
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        d = longest_diameter(mask[k], sy, sx)
        if best is None or d.length_mm > best[1].length_mm:
            best = (int(k), d)
    if best is None:
        zero = Diameter(0.0, (0, 0), (0, 0))
        return Recist(0, zero, zero)
    k, d = best
    return Recist(k, d, perpendicular_diameter(mask[k], sy, sx, d))


def intensity_stats(values: np.ndarray) -> tuple[float, float]:
    """(mean, population SD) of the masked intensities, in float64."""
    v = np.asarray(values, dtype=np.float64)
    return (float(v.mean()), float(v.std())) if v.size else (0.0, 0.0)
