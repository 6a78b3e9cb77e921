"""Simulated correction clicks, as the field evaluates interactive 3D segmentation.

As in the CVPR 2025 interactive 3D segmentation challenge and nnInteractive's evaluation:
the next click goes to the largest 3D error region (connected component of missed or of
false-positive voxels), foreground in a miss and background in a false positive, at the
region's centre: the voxel farthest from the region's border in 3D (the centre of its
largest inscribed ball, in mm), placed on the slice through it along whichever allowed axis
cuts the region's largest cross-section there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medvl.slicing import AXES, numpy_axis, take_slice


@dataclass(frozen=True)
class Click:
    ijk: tuple[int, int, int]  # ITK voxel index of the click
    positive: bool  # True: foreground (the region was missed); False: background (false positive)
    axis: str  # axis of the slice the click is placed on
    region_voxels: int  # size of the 3D error region it corrects
    slice_area: int  # the region's cross-section on that slice (pixels)


def _largest_region(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, bool] | None:
    best = None
    for errors, positive in ((truth & ~pred, True), (pred & ~truth, False)):
        if not errors.any():
            continue
        labels, n = ndimage.label(errors)
        sizes = np.bincount(labels.ravel())[1:]
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (int(sizes[k]), labels == k + 1, positive)
    return None if best is None else (best[1], best[2])


def centre(region: np.ndarray, sampling) -> tuple[int, ...]:
    """Index of the region voxel farthest from its border (in mm; ties: nearest the centroid)."""
    nz = np.argwhere(region)
    lo, hi = nz.min(axis=0), nz.max(axis=0) + 1
    crop = region[tuple(slice(a, b) for a, b in zip(lo, hi))]
    dist = ndimage.distance_transform_edt(np.pad(crop, 1), sampling=sampling)
    dist = dist[tuple(slice(1, -1) for _ in range(crop.ndim))]
    peaks = np.argwhere(dist >= dist.max() - 1e-6)
    n = int(np.argmin(((peaks - (nz.mean(axis=0) - lo)) ** 2).sum(axis=1)))
    return tuple(int(v) for v in peaks[n] + lo)


def next_click(pred: np.ndarray, truth: np.ndarray, spacing_ijk=(1.0, 1.0, 1.0),
               axes: tuple[str, ...] = AXES) -> Click | None:
    """The next simulated click for bool (k, j, i) `pred` against `truth`; None when equal.

    The click is the largest error region's centre (3D, in mm); its slice is the one through
    that voxel, along whichever of `axes` cuts the region's largest cross-section there."""
    found = _largest_region(np.asarray(pred, bool), np.asarray(truth, bool))
    if found is None:
        return None
    region, positive = found
    kji = centre(region, tuple(spacing_ijk[::-1]))
    best = None
    for axis in axes:
        area = int(take_slice(region, axis, kji[numpy_axis(axis)]).sum())
        if best is None or area > best[1]:
            best = (axis, area)
    return Click((kji[2], kji[1], kji[0]), positive, best[0], int(region.sum()), best[1])
