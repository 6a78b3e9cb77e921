"""Binary morphology in millimetres on numpy (k, j, i) masks with anisotropic voxels.

Every function takes `spacing_kji`, the voxel size in mm in numpy axis order (k, j, i)
(reverse of `Geometry.spacing`, which is ITK order (i, j, k)). Radii are in mm, so the
same call means the same physical operation on a 0.6 mm x 0.6 mm x 5 mm CT and on an
isotropic 1 mm MR. Distance transforms (exact Euclidean) replace large structuring
elements: a 30 mm closing costs two distance transforms, not a 100-voxel ball.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

Spacing = tuple[float, float, float]  # mm per voxel along numpy axes (k, j, i)


def bbox_slices(mask: np.ndarray, pad=(0, 0, 0)) -> tuple[slice, ...] | None:
    """Bounding box of the True voxels of a (k, j, i) mask as numpy slices, padded and clipped."""
    if not mask.any():
        return None
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(int(idx[0]) - pad[axis], 0), min(int(idx[-1]) + 1 + pad[axis], mask.shape[axis])))
    return tuple(out)


_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]  # 4-connected within an axial slice, never across k


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """Fill holes slice by slice along k (a (k, j, i) mask; holes closed in each axial plane).

    Same result as `binary_fill_holes` per slice: background not 4-connected to the slice
    border is a hole. One labelling of the cropped volume does every slice at once.
    """
    out = mask.copy()
    box = bbox_slices(mask, (0, 1, 1))
    if box is None:
        return out
    labels, n = ndi.label(~mask[box], structure=_IN_PLANE)
    outside = np.zeros(n + 1, bool)
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        outside[np.unique(edge)] = True
    outside[0] = True  # label 0 is the mask itself
    out[box] |= ~outside[labels]
    return out


def largest_components(mask: np.ndarray, n: int = 1, min_voxels: int = 1) -> list[np.ndarray]:
    """The `n` largest 3D (6-connected) components of `mask`, largest first, each >= min_voxels."""
    labels, count = ndi.label(mask)
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1][:n]
    return [labels == (c + 1) for c in order if sizes[c] >= min_voxels]


def remove_small(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """Drop the 3D components of `mask` smaller than `min_voxels`."""
    labels, count = ndi.label(mask)
    if count == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def open_2d(mask: np.ndarray, radius_mm: float, spacing_kji: Spacing) -> np.ndarray:
    """Opening with a disk of `radius_mm` in every axial (k) slice: removes structures thinner
    than the disk's diameter (vessels, septa) and keeps what a disk fits in, exactly shaped."""
    sp2 = spacing_kji[1:]
    pad = int(np.ceil(radius_mm / min(sp2))) + 2
    out = np.zeros_like(mask)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        box = bbox_slices(mask[k], (pad, pad))
        sub = mask[k][box]
        core = ndi.distance_transform_edt(sub, sampling=sp2) > radius_mm
        if core.any():
            out[k][box] = (ndi.distance_transform_edt(~core, sampling=sp2) <= radius_mm) & sub
    return out


def open_3d(mask: np.ndarray, radius_mm: float, spacing_kji: Spacing) -> np.ndarray:
    """Opening with a ball of `radius_mm` (ellipsoid in voxels when spacing is anisotropic)."""
    core = ndi.distance_transform_edt(mask, sampling=spacing_kji) >= radius_mm
    if not core.any():
        return np.zeros_like(mask)
    return (ndi.distance_transform_edt(~core, sampling=spacing_kji) <= radius_mm) & mask


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing_kji: Spacing) -> np.ndarray:
    """Dilation by a ball of `radius_mm` (exact Euclidean, anisotropic spacing)."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    return ndi.distance_transform_edt(~mask, sampling=spacing_kji) <= radius_mm


def close_3d(mask: np.ndarray, radius_mm: float, spacing_kji: Spacing, step: int = 2) -> np.ndarray:
    """Closing with a ball of `radius_mm`, computed on a grid subsampled by `step` in-plane.

    Fills concavities narrower than the ball (a tumour pressed into the lung surface) and
    leaves wide ones (the heart's impression) open. The subsampled result is expanded back
    and OR-ed with `mask`, so no voxel of `mask` is lost.
    """
    box = bbox_slices(mask, (int(np.ceil(radius_mm / spacing_kji[0])) + 1,
                             int(np.ceil(radius_mm / spacing_kji[1])) + 2 * step,
                             int(np.ceil(radius_mm / spacing_kji[2])) + 2 * step))
    out = mask.copy()
    if box is None:
        return out
    sub = mask[box]
    small = sub[:, ::step, ::step]
    sp = (spacing_kji[0], spacing_kji[1] * step, spacing_kji[2] * step)
    grown = ndi.distance_transform_edt(~small, sampling=sp) <= radius_mm
    closed = ndi.distance_transform_edt(grown, sampling=sp) > radius_mm
    closed = np.repeat(np.repeat(closed, step, axis=1), step, axis=2)[:, : sub.shape[1], : sub.shape[2]]
    out[box] |= closed
    return out
