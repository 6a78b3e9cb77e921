"""A quality signal with every mask: an estimate of its Dice and named warnings.

`assess` looks at one object's 2D masks along its axis, the engine's confidence per slice
(SAM's IoU head) and the volume:

- `estimate`: the engine's confidence averaged over slices, weighted by mask area, mapped
  through `QualitySettings.calibration` (piecewise linear, fitted on the development
  benchmark by `medvl bench-interactive`: a Dice-like number, not a raw model output);
- warnings, each a name and a sentence:
  `empty`, `too_small` (fewer voxels than `min_voxels`), `low_confidence` (estimate below
  `flag_below`), `leak_suspected` (the area jumps by more than `max_area_jump` between
  neighbouring slices, or the end slices are much larger than the object's median slice:
  the walk ran into a neighbour), `touches_edge` (the mask reaches the slice's border),
  `stopped_by_slice_limit` (it reaches the first or last slice: the object may go on past
  the scan), `gaps` (its slices are not contiguous).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medvl.slicing import num_slices


@dataclass(frozen=True)
class QualitySettings:
    min_voxels: int = 20
    max_area_jump: float = 2.5  # area ratio between neighbouring slices
    flag_below: float = 0.5  # estimates below this raise `low_confidence`
    # (raw area-weighted confidence, estimate) knots; identity until calibrated
    calibration: tuple[tuple[float, float], ...] = ((0.0, 0.0), (1.0, 1.0))


def _calibrate(raw: float, knots) -> float:
    xs, ys = zip(*knots)
    return float(np.interp(raw, xs, ys))


def assess(masks: dict[int, np.ndarray], scores: dict[int, float], shape_kji, axis: str,
           settings: QualitySettings = QualitySettings()) -> dict:
    """Quality of one object from its {slice index: 2D mask} and {slice index: confidence}."""
    areas = {i: int(m.sum()) for i, m in masks.items() if m.any()}
    warnings: list[dict] = []
    out = {"estimate": None, "raw_confidence": None, "voxels": int(sum(areas.values())),
           "slices": len(areas), "warnings": warnings}
    if not areas:
        warnings.append({"name": "empty", "message": "the mask is empty: nothing was found from this prompt"})
        return out
    order = sorted(areas)
    weights = np.array([areas[i] for i in order if i in scores], dtype=float)
    if weights.size:
        raw = float(np.dot(weights, [scores[i] for i in order if i in scores]) / weights.sum())
        out["raw_confidence"] = round(raw, 4)
        out["estimate"] = round(_calibrate(raw, settings.calibration), 4)
        if out["estimate"] < settings.flag_below:
            warnings.append({"name": "low_confidence", "message": f"estimated quality {out['estimate']:.2f} is "
                             f"below {settings.flag_below:.2f}: check the mask, add clicks where it is wrong"})
    if out["voxels"] < settings.min_voxels:
        warnings.append({"name": "too_small", "message": f"only {out['voxels']} voxels: the object was barely "
                         "found; try a tighter box or a click on its centre"})
    median = float(np.median([areas[i] for i in order]))
    jumps = [(a, b, max(areas[a], areas[b]) / max(1, min(areas[a], areas[b])))
             for a, b in zip(order, order[1:]) if b == a + 1]
    worst = max(jumps, key=lambda j: j[2], default=None)
    ends = [i for i in (order[0], order[-1]) if len(order) > 2 and areas[i] > settings.max_area_jump * median]
    if (worst and worst[2] > settings.max_area_jump) or ends:
        where = f"area jumps x{worst[2]:.1f} between slices {worst[0]} and {worst[1]}" if worst and \
            worst[2] > settings.max_area_jump else f"end slice {ends[0]} is {areas[ends[0]] / median:.1f}x the median"
        warnings.append({"name": "leak_suspected", "message": f"{where}: the mask may run into a neighbouring "
                         "structure; add a background click there"})
    if any(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any() for m in masks.values() if m.any()):
        warnings.append({"name": "touches_edge", "message": "the mask touches the image border: the object may "
                         "be cut off by the field of view"})
    last = num_slices(shape_kji, axis) - 1
    if order[0] == 0 or order[-1] == last:
        warnings.append({"name": "stopped_by_slice_limit", "message": f"the mask reaches slice "
                         f"{0 if order[0] == 0 else last}, the scan's end along {axis}: it may go on past the scan"})
    if order[-1] - order[0] + 1 != len(order):
        warnings.append({"name": "gaps", "message": f"{order[-1] - order[0] + 1 - len(order)} slices inside the "
                         "object have no mask"})
    return out
