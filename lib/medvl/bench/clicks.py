"""Simulated correction clicks, as the field evaluates interactive 3D segmentation.

As in the CVPR 2025 interactive 3D segmentation challenge and nnInteractive's evaluation:
the next click goes to the largest 3D error region (connected component of missed or of
false-positive voxels), foreground in a miss and background in a false positive, at the
region's centre: the point farthest from the region's border (largest inscribed circle)
on the slice where the region's cross-section is largest, over the allowed axes.
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


def _centre_2d(region2d: np.ndarray, pixel_mm: tuple[float, float]) -> tuple[int, int]:
    """(row, col) of the region pixel farthest from its border (ties: nearest the centroid)."""
    padded = np.pad(region2d, 1)
    dist = ndimage.distance_transform_edt(padded, sampling=pixel_mm)[1:-1, 1:-1]
    peak = dist.max()
    rows, cols = np.nonzero(dist >= peak - 1e-6)
    cy, cx = np.argwhere(region2d).mean(axis=0)
    n = int(np.argmin((rows - cy) ** 2 + (cols - cx) ** 2))
    return int(rows[n]), int(cols[n])


def next_click(pred: np.ndarray, truth: np.ndarray, spacing_ijk=(1.0, 1.0, 1.0),
               axes: tuple[str, ...] = AXES) -> Click | None:
    """The next simulated click for bool (k, j, i) `pred` against `truth`; None when equal."""
    found = _largest_region(np.asarray(pred, bool), np.asarray(truth, bool))
    if found is None:
        return None
    region, positive = found
    size = int(region.sum())
    best = None
    for axis in axes:
        nax = numpy_axis(axis)
        areas = region.sum(axis=tuple(a for a in range(3) if a != nax))
        index = int(np.argmax(areas))
        if best is None or areas[index] > best[2]:
            best = (axis, index, int(areas[index]))
    axis, index, area = best
    plane = take_slice(region, axis, index)
    # pixel size of that plane's (row, col): the two remaining numpy axes, in order
    kji_spacing = tuple(spacing_ijk[::-1])
    rest = [a for a in range(3) if a != numpy_axis(axis)]
    row, col = _centre_2d(plane, (kji_spacing[rest[0]], kji_spacing[rest[1]]))
    kji = [0, 0, 0]
    kji[numpy_axis(axis)] = index
    kji[rest[0]], kji[rest[1]] = row, col
    return Click((kji[2], kji[1], kji[0]), positive, axis, size, area)
