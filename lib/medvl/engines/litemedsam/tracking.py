"""Propagation for box-prompted models: carry a box from slice to slice, stop where the object ends.

From each prompted slice the walk goes outward one slice at a time. The next slice's box
is the previous mask's bounding box grown by `margin_mm`; the model answers every box with
some mask, so each step is checked before it is accepted (`accept`):

- the mask is not (nearly) empty,
- it overlaps the previous mask (objects move little between neighbouring slices),
- it does not balloon past the previous mask's area,
- its median intensity stays close to the object's on the prompted slices (beyond the
  object, a box around lung parenchyma yields a blob of a different intensity),
- for MR and other uncalibrated modalities, where intensity alone says little, it keeps
  part of the prompted object's contrast against its surrounding ring,
- the model's own IoU estimate is not low.

Between two prompted slices each gap is filled from both ends towards the middle.
Walks in both directions are interleaved so a UI sees progress on both sides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medvl.slicing import bbox2d, slice_pixel_spacing, take_slice


@dataclass(frozen=True)
class TrackingSettings:
    margin_mm: float = 3.0  # the carried box grows by this much on every side
    min_area_mm2: float = 4.0  # smaller masks end a walk
    min_overlap: float = 0.5  # share of the new mask inside the previous mask dilated by margin
    max_growth: float = 1.8  # new area / previous area above this ends a walk
    max_intensity_z: float = 3.0  # |mean - reference mean| / reference spread above this ends a walk
    min_score: float = 0.5  # model IoU estimate below this ends a walk
    min_contrast_ratio: float = 0.15  # non-CT: (inside - ring) contrast / the prompted slices' contrast
    ring_px: int = 4  # width of the ring around a mask that its contrast is measured against


@dataclass
class Step:
    index: int
    mask: np.ndarray
    score: float
    area: int
    overlap: float
    growth: float
    intensity_z: float
    contrast_ratio: float


@dataclass(frozen=True)
class Reference:
    """The object's intensity on its prompted slices, which every accepted slice is compared to."""

    median: float  # median raw intensity inside the prompted masks
    spread: float  # robust spread: half the 10-90 percentile range
    contrast: float  # median inside minus median of the surrounding ring (mean over prompted slices)


def contrast(image: np.ndarray, mask: np.ndarray, ring_px: int) -> float:
    """Median inside `mask` minus median of a ring `ring_px` wide around it (2D arrays)."""
    ring = ndimage.binary_dilation(mask, iterations=ring_px) & ~ndimage.binary_dilation(mask)
    if not ring.any() or not mask.any():
        return 0.0
    return float(np.median(image[mask]) - np.median(image[ring]))


def _reference(state, seeds: dict[int, np.ndarray], settings: TrackingSettings) -> Reference:
    slices = {i: take_slice(state.volume.array, state.axis, i).astype(np.float64) for i, m in seeds.items() if m.any()}
    values = np.concatenate([slices[i][seeds[i]] for i in slices] or [np.zeros(1)])
    lo, hi = np.percentile(values, [10, 90])
    spread = max((hi - lo) / 2.0, 1e-3 * max(1.0, abs(state.bounds[1] - state.bounds[0])))
    contrasts = [contrast(slices[i], seeds[i], settings.ring_px) for i in slices]
    return Reference(float(np.median(values)), float(spread), float(np.mean(contrasts)) if contrasts else 0.0)


def _grow(box, margin_px: tuple[float, float], rows: int, cols: int):
    mx, my = margin_px
    x0, y0, x1, y1 = box
    return (max(0, math.floor(x0 - mx)), max(0, math.floor(y0 - my)),
            min(cols - 1, math.ceil(x1 + mx)), min(rows - 1, math.ceil(y1 + my)))


def step(engine, state, index: int, prev: np.ndarray, ref: Reference, settings: TrackingSettings) -> Step:
    """Segment slice `index` from the previous slice's mask and measure the acceptance features."""
    rows, cols = prev.shape
    row_mm, col_mm = slice_pixel_spacing(state.volume.geometry.spacing, state.axis)
    margin = (settings.margin_mm / col_mm, settings.margin_mm / row_mm)
    box = _grow(bbox2d(prev), margin, rows, cols)
    logits, iou = engine.decode(state, index, boxes=[box])
    mask = logits[0, 0] > 0
    area = int(mask.sum())
    if area == 0:
        return Step(index, mask, float(iou[0, 0]), 0, 0.0, 0.0, math.inf, 0.0)
    reach = ndimage.binary_dilation(prev, iterations=max(1, round(max(margin))))
    overlap = float((mask & reach).sum()) / area
    growth = area / max(1, int(prev.sum()))
    image = take_slice(state.volume.array, state.axis, index).astype(np.float64)
    z = abs(float(np.median(image[mask])) - ref.median) / ref.spread
    ratio = contrast(image, mask, settings.ring_px) / ref.contrast if ref.contrast else 1.0
    return Step(index, mask, float(iou[0, 0]), area, overlap, growth, z, ratio)


def accept(s: Step, pixel_mm2: float, modality: str, settings: TrackingSettings) -> bool:
    calibrated = modality.upper() == "CT"  # Hounsfield units mean the same on every slice
    return (s.area * pixel_mm2 >= settings.min_area_mm2 and s.overlap >= settings.min_overlap
            and s.growth <= settings.max_growth and s.intensity_z <= settings.max_intensity_z
            and s.score >= settings.min_score
            and (calibrated or s.contrast_ratio >= settings.min_contrast_ratio))


def _walk(engine, state, start: int, stop: int, direction: int, seed: np.ndarray, ref, settings):
    """Yield accepted masks from start (exclusive) towards stop (inclusive)."""
    row_mm, col_mm = slice_pixel_spacing(state.volume.geometry.spacing, state.axis)
    prev, index = seed, start + direction
    while (index - stop) * direction <= 0 and prev.any():
        s = step(engine, state, index, prev, ref, settings)
        if not accept(s, row_mm * col_mm, state.volume.modality, settings):
            return
        yield index, s.mask
        prev, index = s.mask, index + direction


def propagate(engine, state, seeds: dict[int, np.ndarray], should_stop, settings: TrackingSettings):
    """Generator of (slice_index, mask) over unprompted slices, both directions interleaved."""
    order = sorted(i for i, m in seeds.items() if m.any())
    if not order:
        return
    ref = _reference(state, seeds, settings)
    last = engine.num_slices(state) - 1
    walks = [_walk(engine, state, order[0], 0, -1, seeds[order[0]], ref, settings),
             _walk(engine, state, order[-1], last, +1, seeds[order[-1]], ref, settings)]
    for a, b in zip(order, order[1:]):
        mid = (a + b) // 2
        walks.append(_walk(engine, state, a, mid, +1, seeds[a], ref, settings))
        walks.append(_walk(engine, state, b, mid + 1, -1, seeds[b], ref, settings))
    while walks:
        for walk in list(walks):
            if should_stop is not None and should_stop():
                return
            item = next(walk, None)
            if item is None:
                walks.remove(walk)
            else:
                yield item
