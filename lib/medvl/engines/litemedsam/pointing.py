"""Turning point prompts into a mask for a box-trained model (LiteMedSAM).

LiteMedSAM was trained with boxes only. Two strategies, compared by `medvl bench`:

- `sam_points`: SAM's own point encoding, multimask output, best predicted IoU.
- `box_search`: boxes of several physical sizes centred on the foreground points are
  decoded in one batch; the mask that contains the clicks, avoids the background clicks
  and has the best predicted IoU wins, and is refined once with its own bounding box.
"""

from __future__ import annotations

import numpy as np

from medvl.engines.base import SliceResult
from medvl.errors import PromptError
from medvl.slicing import bbox2d, slice_pixel_spacing

BOX_SIDES_MM = (10.0, 20.0, 35.0, 55.0, 80.0)  # candidate box sides around a click


def sam_points(engine, state, index: int, points: np.ndarray, labels: np.ndarray) -> SliceResult:
    logits, iou = engine.decode(state, index, points=points, labels=labels, multimask=True)
    best = int(np.argmax(iou[0]))
    return SliceResult(logits[0, best] > 0, float(iou[0, best]))


def _hits(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    r = np.clip(np.round(points[:, 1]).astype(int), 0, mask.shape[0] - 1)
    c = np.clip(np.round(points[:, 0]).astype(int), 0, mask.shape[1] - 1)
    return mask[r, c]


def box_search(engine, state, index: int, points: np.ndarray, labels: np.ndarray) -> SliceResult:
    fg, bg = points[labels == 1], points[labels == 0]
    if len(fg) == 0:
        raise PromptError("background points alone do not define an object: add a foreground point or a box")
    rows, cols = state.frame.rows, state.frame.cols
    row_mm, col_mm = slice_pixel_spacing(state.volume.geometry.spacing, state.axis)
    lo, hi = fg.min(axis=0), fg.max(axis=0)
    boxes = []
    for side in BOX_SIDES_MM:
        hx, hy = side / col_mm / 2, side / row_mm / 2
        boxes.append((max(0, lo[0] - hx), max(0, lo[1] - hy), min(cols - 1, hi[0] + hx), min(rows - 1, hi[1] + hy)))
    logits, iou = engine.decode(state, index, boxes=np.array(boxes))
    masks = logits[:, 0] > 0
    scores = iou[:, 0].copy()
    for n, m in enumerate(masks):
        if not m.any() or not _hits(m, fg).all() or (len(bg) and _hits(m, bg).any()):
            scores[n] -= 1.0  # keep as a last resort, ranked below every consistent mask
    best = int(np.argmax(scores))
    box = bbox2d(masks[best])
    if box is None:
        return SliceResult(masks[best], float(iou[best, 0]))
    logits, iou2 = engine.decode(state, index, boxes=[box], points=bg if len(bg) else None,
                                 labels=np.zeros(len(bg), dtype=np.int64) if len(bg) else None)
    refined = logits[0, 0] > 0
    if refined.any() and _hits(refined, fg).all():
        return SliceResult(refined, float(iou2[0, 0]))
    return SliceResult(masks[best], float(iou[best, 0]))
