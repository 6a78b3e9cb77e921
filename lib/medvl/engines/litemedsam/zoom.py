"""Crop-and-zoom: the model sees a window around the prompts, not the whole slice.

LiteMedSAM takes a 256x256 input. A whole 512x512 CT slice or a 229x193 brain slice
shrinks to it, so a 10 mm nucleus or nodule covers a few dozen model pixels and its
mask is coarse; boxes around thin or dark structures get answered with a neighbour.
`window_for` picks a square window (physical mm, so the model keeps the aspect) about
`factor` times the prompts' extent, at least `min_side_mm`, and the engine encodes that
window at the full 256 input instead (`LiteMedSAMEngine.decode`).

Windows are snapped (sides on a ladder of sqrt(2) steps, centres on a grid of 1/8 side)
so that neighbouring prompts on one slice reuse one encoded window; a window that would
cover most of the slice is the whole slice (shared by every object, as before).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ZoomSettings:
    factor: float = 2.0  # window side / the prompts' longer physical side; 0 turns zoom off
    min_side_mm: float = 32.0  # windows are never smaller than this
    full_share: float = 0.75  # a window reaching this share of both slice sides is the whole slice
    below: float = 0.8  # an object is zoomed only if the model rates its whole-slice mask below this


@dataclass(frozen=True)
class Window:
    """Rows r0:r1 and cols c0:c1 of a slice (half-open), the region the model is shown."""

    r0: int
    c0: int
    r1: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.r1 - self.r0, self.c1 - self.c0


def _snap_side(side_mm: float) -> float:
    """The smallest 16 mm x sqrt(2)^n at least `side_mm`."""
    n = max(0, math.ceil(2 * math.log2(max(side_mm, 16.0) / 16.0) - 1e-9))
    return 16.0 * math.sqrt(2) ** n


def window_for(extent, rows: int, cols: int, pixel_mm: tuple[float, float],
               settings: ZoomSettings = ZoomSettings()) -> Window | None:
    """The window for prompts spanning `extent` (x0, y0, x1, y1 inclusive voxels) on a slice of
    (rows, cols) voxels with pixel spacing (row_mm, col_mm); None: use the whole slice."""
    if settings.factor <= 0 or extent is None:
        return None
    row_mm, col_mm = pixel_mm
    x0, y0, x1, y1 = extent
    side_mm = _snap_side(max(settings.factor * max((x1 - x0 + 1) * col_mm, (y1 - y0 + 1) * row_mm),
                             settings.min_side_mm))
    h, w = min(rows, math.ceil(side_mm / row_mm)), min(cols, math.ceil(side_mm / col_mm))
    if h >= settings.full_share * rows and w >= settings.full_share * cols:
        return None
    r0 = _place((y0 + y1) / 2, h, rows)
    c0 = _place((x0 + x1) / 2, w, cols)
    return Window(r0, c0, r0 + h, c0 + w)


def _place(centre: float, size: int, limit: int) -> int:
    """Start of a `size`-long run centred near `centre` (snapped to size/8), inside [0, limit)."""
    grid = max(1, size // 8)
    start = round((centre - size / 2) / grid) * grid
    return int(min(max(0, start), limit - size))
