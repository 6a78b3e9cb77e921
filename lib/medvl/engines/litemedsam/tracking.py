"""Propagation for box-prompted models: carry a box from slice to slice, stop where the object ends.

From each prompted slice the walk goes outward one slice at a time. The next slice's box
is the previous mask's bounding box grown by `margin_mm`, or on each side by the room the
user's box left around the model's answer on the prompted slice (`slack`, scaled by
`seed_slack`), whichever is more: a model that answers a nucleus's box with a smaller
mask keeps that room and the box does not shrink to nothing in a few slices. The walk
uses the object's view (whole slice or crop-and-zoom, chosen by its box: see
`LiteMedSAMEngine.decode_box`). The model answers every box with some mask, so each step
is checked before it is accepted (`accept`):

- the mask is not (nearly) empty,
- it overlaps the previous mask (objects move little between neighbouring slices),
- it does not balloon past the previous mask's area,
- its median intensity stays close to the object's on the prompted slices (beyond the
  object, a box around lung parenchyma yields a blob of a different intensity),
- for MR and other uncalibrated modalities, where intensity alone says little, it keeps
  part of the prompted object's contrast against its surrounding ring (as a ratio, and as
  the contrast lost measured in the object's own intensity spread),
- the model's own IoU estimate is not low.

The thresholds are chosen on the development benchmark with leave-one-group-out
cross-validation (`medvl.bench.stoprule`, `docs/interactive.md`).
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
    """Defaults: the rule fitted on the 40-target development benchmark (docs/interactive.md;
    `medvl bench-interactive --fit-stop-rule`, whose cross-validated numbers the docs report)."""

    margin_mm: float = 3.0  # the carried box grows by at least this much on every side
    min_area_mm2: float = 4.0  # smaller masks end a walk
    min_overlap: float = 0.7  # share of the new mask inside the previous mask dilated by margin
    max_growth: float = 4.0  # new area / previous area above this ends a walk
    max_intensity_z: float = 1.5  # |median - reference median| / reference spread above this ends a walk
    min_score: float = 0.0  # model IoU estimate below this ends a walk (0: not used)
    min_contrast_ratio: float = -math.inf  # non-CT: (inside - ring) contrast / the prompted slices' (-inf: off)
    ring_px: int = 4  # width of the ring around a mask that its contrast is measured against
    agree_iou: float = 0.8  # after a correction, a re-propagated slice agrees with the previous result ...
    box_memory: float = 0.0  # weight of the previous slice's box in the next one (see carried_box)
    agree_slices: int = 2  # ... and this many agreeing slices in a row end the walk (the rest is kept)
    max_contrast_loss: float = math.inf  # non-CT: contrast lost against the prompted slices, in spreads
    seed_slack: float = 1.0  # share of the prompted box's slack around its mask that the carried box keeps


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
    box: tuple | None = None  # the box this slice was decoded from
    contrast_loss: float = 0.0  # (prompted contrast - this contrast) / spread, signed so that losing it is > 0


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


def slack(box, mask: np.ndarray) -> tuple[float, float, float, float]:
    """How far the prompted `box` reaches past its mask on each side (x0, y0, x1, y1), in pixels:
    a model that answers this object's boxes with a smaller mask (a nucleus beside a ventricle)
    needs the same room on the next slice, or the carried box shrinks slice after slice."""
    b = bbox2d(mask)
    if box is None or b is None:
        return (0.0, 0.0, 0.0, 0.0)
    return (max(0.0, b[0] - box[0]), max(0.0, b[1] - box[1]), max(0.0, box[2] - b[2]), max(0.0, box[3] - b[3]))


def carried_box(prev: np.ndarray, prev_box, settings: TrackingSettings, pixel_mm: tuple[float, float],
                seed_slack=(0.0, 0.0, 0.0, 0.0)):
    """The box for the next slice: the previous mask's box grown on each side by `margin_mm` or by
    `seed_slack` x the prompted box's slack on that side, whichever is more; pulled towards the
    previous slice's box by `box_memory` (0: the mask alone decides)."""
    row_mm, col_mm = pixel_mm
    x0, y0, x1, y1 = bbox2d(prev)
    mx, my = settings.margin_mm / col_mm, settings.margin_mm / row_mm
    k = settings.seed_slack
    sx0, sy0, sx1, sy1 = (max(m, k * v) for m, v in zip((mx, my, mx, my), seed_slack))
    rows, cols = prev.shape
    box = (max(0, math.floor(x0 - sx0)), max(0, math.floor(y0 - sy0)),
           min(cols - 1, math.ceil(x1 + sx1)), min(rows - 1, math.ceil(y1 + sy1)))
    if prev_box is None or settings.box_memory <= 0:
        return box
    w = settings.box_memory
    return tuple(int(round((1 - w) * a + w * b)) for a, b in zip(box, prev_box))


def step(engine, state, index: int, prev: np.ndarray, ref: Reference, settings: TrackingSettings,
         prev_box=None, seed_slack=(0.0, 0.0, 0.0, 0.0), zoom: bool = False) -> Step:
    """Segment slice `index` from the previous slice's mask (and box) and measure the acceptance features."""
    row_mm, col_mm = slice_pixel_spacing(state.volume.geometry.spacing, state.axis)
    box = carried_box(prev, prev_box, settings, (row_mm, col_mm), seed_slack)
    margin = (settings.margin_mm / col_mm, settings.margin_mm / row_mm)
    logits, iou = engine.decode(state, index, boxes=[box], zoom=zoom)
    mask = logits[0, 0] > 0
    area = int(mask.sum())
    if area == 0:
        return Step(index, mask, float(iou[0, 0]), 0, 0.0, 0.0, math.inf, 0.0, box)
    reach = ndimage.binary_dilation(prev, iterations=max(1, round(max(margin))))
    overlap = float((mask & reach).sum()) / area
    growth = area / max(1, int(prev.sum()))
    image = take_slice(state.volume.array, state.axis, index).astype(np.float64)
    z = abs(float(np.median(image[mask])) - ref.median) / ref.spread
    c = contrast(image, mask, settings.ring_px)
    ratio = c / ref.contrast if ref.contrast else 1.0
    loss = math.copysign(1.0, ref.contrast) * (ref.contrast - c) / ref.spread
    return Step(index, mask, float(iou[0, 0]), area, overlap, growth, z, ratio, box, loss)


def accept(s: Step, pixel_mm2: float, modality: str, settings: TrackingSettings):
    """Whether a step passes every test; `s` may also hold a whole walk's features as numpy arrays
    (`medvl.bench.stoprule` scores rules that way), then the answer is an array."""
    ok = ((s.area * pixel_mm2 >= settings.min_area_mm2) & (s.overlap >= settings.min_overlap)
          & (s.growth <= settings.max_growth) & (s.intensity_z <= settings.max_intensity_z)
          & (s.score >= settings.min_score))
    if modality.upper() == "CT":  # Hounsfield units mean the same on every slice
        return ok
    return ok & (s.contrast_ratio >= settings.min_contrast_ratio) & (s.contrast_loss <= settings.max_contrast_loss)


def _iou(a: np.ndarray, b: np.ndarray | None) -> float:
    if b is None:
        return 0.0
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


@dataclass
class _Walk:
    """One walk from a seed towards `stop` (inclusive), one slice per `next()`."""

    start: int
    stop: int
    direction: int
    seed: np.ndarray
    previous: dict | None  # local mode: the previous result, to stop where the walk agrees with it
    slack: tuple = (0.0, 0.0, 0.0, 0.0)  # the seed's box slack around its mask (see `slack`)
    before: np.ndarray | None = None  # local mode: the seed slice's mask before the correction


def _direction_of_change(walk: _Walk) -> str | None:
    """Local mode: "add" when the corrected seed gained more than it lost against the previous
    result on its slice (a foreground click), "remove" otherwise (a background click)."""
    old = walk.before if walk.before is not None else (walk.previous or {}).get(walk.start)
    if walk.previous is None or old is None:
        return None
    return "add" if int((walk.seed & ~old).sum()) >= int((old & ~walk.seed).sum()) else "remove"


def _run(engine, state, walk: _Walk, ref, settings, scores, zoom: bool = False):
    """Yield accepted (index, mask) of `walk`; stop at a refusal, at `stop`, or (local mode) once
    `agree_slices` slices in a row agree with the previous result. In local mode a correction
    only ever moves the result its own way: after a foreground click a re-propagated slice is
    the previous mask plus the new one, after a background click the previous mask cut by it,
    so correct slices elsewhere are never lost to a weaker re-propagation."""
    row_mm, col_mm = slice_pixel_spacing(state.volume.geometry.spacing, state.axis)
    prev, box, index, agreeing = walk.seed, None, walk.start + walk.direction, 0
    change = _direction_of_change(walk)
    while (index - walk.stop) * walk.direction <= 0:
        s = step(engine, state, index, prev, ref, settings, box, walk.slack, zoom)
        if not accept(s, row_mm * col_mm, state.volume.modality, settings):
            return
        if scores is not None:
            scores[index] = s.score
        mask, old = s.mask, (walk.previous or {}).get(index)
        if change is not None and old is not None:
            mask = mask | old if change == "add" else mask & old
            if not mask.any():  # nothing of the previous mask is confirmed: keep it from here on
                return
        yield index, mask
        if walk.previous is not None:
            agreeing = agreeing + 1 if _iou(mask, old) >= settings.agree_iou else 0
            if agreeing >= settings.agree_slices:
                return
        prev, box, index = mask, s.box, index + walk.direction


def _plan(seeds: dict[int, np.ndarray], last: int, changed: set[int], previous, slacks=None,
          befores=None) -> list[_Walk]:
    """The walks: out of every non-empty seed in `changed`, up to the next seed (halfway when that
    one walks too, or when correcting: the other half stays as the other seed made it); an
    empty seed is a barrier that no walk crosses. A correction on a slice inside the previous
    result's slice range does not walk past that range (a click beyond it does)."""
    order = sorted(seeds)
    extent = [i for i, m in (previous or {}).items() if m.any()]
    lo, hi = (min(extent), max(extent)) if extent else (None, None)
    walks = []
    for n, s in enumerate(order):
        if s not in changed or not seeds[s].any():
            continue
        for d in (-1, +1):
            m = n + d
            if m < 0 or m >= len(order):
                stop = 0 if d < 0 else last
            else:
                other = order[m]
                halfway = (s + other) // 2 + (1 if d < 0 else 0)
                walks_too = other in changed or previous is not None  # (correcting: the other half is kept)
                stop = halfway if walks_too and seeds[other].any() else other - d
            if lo is not None and lo <= s <= hi:  # a correction inside the result does not extend it
                stop = max(stop, lo) if d < 0 else min(stop, hi)
            elif lo is not None and (s > hi) == (d < 0):  # a click beyond the result fills the gap to it
                stop = min(stop, hi + 1) if d < 0 else max(stop, lo - 1)
            if (stop - s) * d > 0:
                walks.append(_Walk(s, stop, d, seeds[s], previous, (slacks or {}).get(s, (0.0, 0.0, 0.0, 0.0)),
                                   (befores or {}).get(s)))
    return walks


def propagate(engine, state, seeds: dict[int, np.ndarray], should_stop, settings: TrackingSettings,
              previous: dict[int, np.ndarray] | None = None, scores: dict | None = None, prompts=None,
              zoom: bool = False):
    """Generator of (slice_index, mask) over unprompted slices, both directions interleaved.

    Without `previous`: every seed walks out. With `previous` (the object's last result,
    seeds as they were): only the seeds that changed walk, each until it agrees with the
    previous result (or halfway to the next seed, or until a slice is refused); the rest of
    the previous result is kept and yielded after the walks, except past a seed that a
    background click emptied, towards the object's outer end: the object ends there.
    """
    if not any(m.any() for m in seeds.values()):
        return
    ref = _reference(state, seeds, settings)
    last = engine.num_slices(state) - 1
    local = bool(previous)
    changed = {i for i in seeds if not local or previous.get(i) is not seeds[i]}
    slacks = {i: slack(p.boxes[-1], seeds[i]) for i, p in (prompts or {}).items()
              if i in seeds and getattr(p, "boxes", None)}
    befores = {i: p.prior for i, p in (prompts or {}).items() if getattr(p, "prior", None) is not None}
    walks = _plan(seeds, last, changed, previous if local else None, slacks, befores)
    runs = [(w, _run(engine, state, w, ref, settings, scores, zoom)) for w in walks]
    done: set[int] = set()
    while runs:
        for item in list(runs):
            if should_stop is not None and should_stop():
                return
            out = next(item[1], None)
            if out is None:
                runs.remove(item)
            else:
                done.add(out[0])
                yield out
    if not local:
        return
    dropped: set[int] = set()
    order = sorted(seeds)
    for s in changed:  # an emptied seed cuts the object towards its outer end
        if seeds[s].any():
            continue
        for d in (-1, +1):
            if not any((i - s) * d > 0 for i in order):
                dropped.update(i for i in previous if (i - s) * d > 0)
    for index in sorted(previous):
        if index in seeds or index in done or index in dropped:
            continue
        yield index, previous[index]
