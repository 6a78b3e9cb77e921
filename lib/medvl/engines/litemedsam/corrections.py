"""Clicks that edit a mask where they are placed, for a box-trained model (LiteMedSAM).

A click on a slice that has a mask (`SlicePrompt.prior`: propagated, or made by earlier
prompts there) edits that mask with that click alone. Otherwise the slice's mask is built
from its prompts: the slice's box, else the best mask around the first foreground click,
then each other click in order edits it:

- a foreground click outside the mask adds the region around it: candidate masks from the
  base's box stretched to the click and from boxes of several sizes centred on it are
  decoded in one batch; the candidate that contains the click, avoids every background
  click and has the best predicted IoU lends the connected part of it that holds the click;
- a background click inside the mask removes the region around it: the model re-decodes the
  mask's box with the background clicks; the connected part of what it dropped that holds
  the click is removed. When the model keeps the click's pixel, the part of the mask's
  connected component nearer the click than any foreground click (or, without one, than
  the component's core: its point farthest from the border) goes; the whole component
  goes when the click is on that core (the component is all wrong);
- a click already on the right side changes nothing.

So neither kind of click touches pixels away from it, and the mask of every other slice is
left alone (re-propagation from the edited slice is `tracking`'s job).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medvl.engines.base import SlicePrompt, SliceResult
from medvl.engines.litemedsam.pointing import BOX_SIDES_MM, box_search
from medvl.errors import PromptError
from medvl.slicing import bbox2d, slice_pixel_spacing

EIGHT = np.ones((3, 3), dtype=bool)


def _pixel(point, shape) -> tuple[int, int]:
    r = int(np.clip(round(point[1]), 0, shape[0] - 1))
    c = int(np.clip(round(point[0]), 0, shape[1] - 1))
    return r, c


def _part_at(mask: np.ndarray, rc: tuple[int, int]) -> np.ndarray:
    """The 8-connected component of `mask` holding pixel `rc` (empty when it is not in the mask)."""
    if not mask[rc]:
        return np.zeros_like(mask)
    labels, _ = ndimage.label(mask, structure=EIGHT)
    return labels == labels[rc]


def _grow(box, mx: float, my: float, rows: int, cols: int):
    x0, y0, x1, y1 = box
    return (max(0, x0 - mx), max(0, y0 - my), min(cols - 1, x1 + mx), min(rows - 1, y1 + my))


def add_around(engine, state, index: int, mask: np.ndarray, point, bg: np.ndarray, zoom: bool = False) -> np.ndarray:
    rc = _pixel(point, mask.shape)
    if mask[rc]:
        return mask
    rows, cols = mask.shape
    row_mm, col_mm = slice_pixel_spacing(state.volume.geometry.spacing, state.axis)
    boxes = []
    box = bbox2d(mask)
    if box is not None:  # the current object stretched to reach the click
        x0, y0, x1, y1 = box
        stretched = (min(x0, point[0]), min(y0, point[1]), max(x1, point[0]), max(y1, point[1]))
        boxes.append(_grow(stretched, 2.0 / col_mm, 2.0 / row_mm, rows, cols))
    for side in BOX_SIDES_MM:
        hx, hy = side / col_mm / 2, side / row_mm / 2
        boxes.append((max(0, point[0] - hx), max(0, point[1] - hy), min(cols - 1, point[0] + hx),
                      min(rows - 1, point[1] + hy)))
    logits, _ = engine.decode(state, index, boxes=np.array(boxes), zoom=zoom)
    best, smallest = None, None
    limit = int(mask.sum()) or mask.size  # a click adds at most the object's area on this slice
    for n in range(len(boxes)):  # the stretched object first, then boxes from small to large
        cand = logits[n, 0] > 0
        if cand[rc] and not any(cand[_pixel(q, mask.shape)] for q in bg):
            added = _part_at(cand & ~mask, rc)
            if added.sum() <= limit:
                best = added
                break
            if smallest is None or added.sum() < smallest.sum():
                smallest = added
    if best is None:  # every answer is too big (or none holds the click): keep a disc around the
        yy, xx = np.ogrid[:rows, :cols]  # click of the mask's own area, inside that answer if any
        disc = (yy - rc[0]) ** 2 + (xx - rc[1]) ** 2 <= max(4.0, limit / np.pi)
        best = _part_at((smallest | np.zeros_like(mask)) & disc if smallest is not None else disc, rc)
    return mask | (best & ~mask)


def remove_around(engine, state, index: int, mask: np.ndarray, point, fg: np.ndarray, bg: np.ndarray,
                  zoom: bool = False) -> np.ndarray:
    rc = _pixel(point, mask.shape)
    if not mask[rc]:
        return mask
    logits, _ = engine.decode(state, index, boxes=[bbox2d(mask)], points=np.concatenate([fg, bg]),
                              labels=np.array([1] * len(fg) + [0] * len(bg), dtype=np.int64), zoom=zoom)
    kept = logits[0, 0] > 0
    if not kept[rc]:
        return mask & ~_part_at(mask & ~kept, rc)
    part = _part_at(mask, rc)
    inside = [q for q in fg if part[_pixel(q, mask.shape)]]
    if not inside:  # the component's core (farthest from its border) anchors what stays ...
        dist = ndimage.distance_transform_edt(np.pad(part, 1))[1:-1, 1:-1]
        core = np.unravel_index(int(np.argmax(dist)), dist.shape)
        if np.hypot(core[0] - rc[0], core[1] - rc[1]) <= 0.5 * dist.max():
            return mask & ~part  # ... unless the click is on it: the whole component is wrong
        inside = [(core[1], core[0])]
    # split the component: pixels nearer the background click than every foreground click go
    rows, cols = np.nonzero(part)
    d_bg = (rows - rc[0]) ** 2 + (cols - rc[1]) ** 2
    d_fg = np.min([(rows - q[1]) ** 2 + (cols - q[0]) ** 2 for q in inside], axis=0)
    drop = np.zeros_like(mask)
    drop[rows[d_bg < d_fg], cols[d_bg < d_fg]] = True
    return mask & ~drop


def segment(engine, state, index: int, prompt: SlicePrompt, obj_id: int | None = None) -> SliceResult:
    """The slice's mask from its prompts (see the module docstring); a new box chooses the object's
    view (whole slice or zoomed, `LiteMedSAMEngine.decode_box`), which its clicks then use."""
    points = np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(prompt.labels, dtype=np.int64)
    fg, bg = points[labels == 1], points[labels == 0]
    if prompt.prior is not None and len(points):  # edit the current mask with the newest click only
        mask, score = prompt.prior.copy(), None
        points, labels = points[-1:], labels[-1:]
    elif prompt.boxes:
        logits, iou = engine.decode_box(state, index, prompt.boxes[-1], obj_id)
        mask, score = logits[0, 0] > 0, float(iou[0, 0])
    elif len(fg):  # the first foreground click makes the object, the other clicks edit it
        first = int(np.flatnonzero(labels == 1)[0])
        made = box_search(engine, state, index, points[first:first + 1], labels[first:first + 1])
        mask, score = made.mask, made.score
        points, labels = np.delete(points, first, axis=0), np.delete(labels, first)
    else:
        raise PromptError("background points alone do not define an object: add a foreground point or a box")
    zoom = engine.zoomed(state, obj_id)  # after a box on this slice chose the object's view
    for point, label in zip(points, labels):
        if label == 1:
            mask = add_around(engine, state, index, mask, point, bg, zoom)
        else:
            mask = remove_around(engine, state, index, mask, point, fg, bg, zoom)
    if score is None:  # a corrected mask: the model's estimate for its own box
        box = bbox2d(mask)
        score = float(engine.decode(state, index, boxes=[box], zoom=zoom)[1][0, 0]) if box is not None else 1.0
    return SliceResult(mask, score)
