"""The engine interface every segmentation engine implements (`litemedsam`, `sam2`).

A session (`medvl.session.VolumeSession`) owns the prompts, object ids, undo history and
the result volume; an engine owns the model, its per-slice feature cache and the way masks
travel from the prompted slices to their neighbours. The session calls these
methods:

- `bind(volume, axis)`   - start working on one volume along one slicing axis; returns an
                           opaque engine state that the session keeps and passes back.
- `segment_slice(...)`   - the immediate 2D answer for one slice's prompts (what a UI shows
                           right after a click).
- `propagate(...)`       - a generator of `(slice_index, mask2d)` walking away from the
                           prompted slice(s) in both directions, stopping by itself where
                           the object ends.

2D conventions. A slice along axis "k" is `array[k, :, :]` (rows j, cols i); along "j" it
is `array[:, j, :]` (rows k, cols i); along "i" it is `array[:, :, i]` (rows k, cols j).
2D points are (col, row) = (x, y), boxes are (x0, y0, x1, y1) inclusive, all in that
slice's voxel grid; `medvl.session.prompts` converts ITK (i, j, k) prompts into them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import numpy as np

from medvl.volume import Volume


@dataclass
class SlicePrompt:
    """Every prompt of one object on one slice, in that slice's 2D voxel grid."""

    points: list[tuple[float, float]] = field(default_factory=list)  # (x=col, y=row)
    labels: list[int] = field(default_factory=list)  # 1 foreground, 0 background, per point
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # (x0, y0, x1, y1) inclusive
    # the slice's mask before the newest click (a propagated or earlier prompted mask being
    # corrected), None after a box or on a new object: engines with local corrections apply
    # only the newest point to it
    prior: np.ndarray | None = field(default=None, repr=False)

    def is_empty(self) -> bool:
        return not self.points and not self.boxes

    def copy(self) -> "SlicePrompt":
        return SlicePrompt(list(self.points), list(self.labels), list(self.boxes), self.prior)


@dataclass
class SliceResult:
    """One 2D mask with the engine's confidence in it."""

    mask: np.ndarray  # bool (rows, cols) in the slice's voxel grid
    score: float  # model's own quality estimate in [0, 1] (SAM's IoU head)


# A callable the session passes so a propagation can be cancelled between slices.
CancelCheck = Callable[[], bool]


class Engine(Protocol):
    """What `VolumeSession` needs from an engine. See the module docstring."""

    name: str

    def bind(self, volume: Volume, axis: str) -> object:
        """Prepare for `volume` sliced along `axis` ("i", "j" or "k"); return engine state."""

    def segment_slice(self, state: object, slice_index: int, prompt: SlicePrompt,
                      obj_id: int | None = None) -> SliceResult:
        """The 2D mask of object `obj_id` on one slice from its prompts there.

        Engines with per-object memory (sam2) use `obj_id` to refine a propagated mask;
        stateless engines (litemedsam) ignore it."""

    def propagate(
        self,
        state: object,
        seeds: dict[int, np.ndarray],
        prompts: dict[int, SlicePrompt],
        should_stop: CancelCheck | None = None,
        obj_id: int | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Masks of one object on unprompted slices, walking out from `seeds` both ways.

        `seeds` maps each prompted slice index to its 2D mask (from `segment_slice`);
        `prompts` the same slices to their prompts (engines with memory use them as
        conditioning). Yields `(slice_index, bool mask)`; an empty mask ends a direction.
        """

    def forget(self, state: object, obj_id: int) -> None:
        """Drop whatever the engine remembers of one object (called on reset and undo)."""

    # Optional: an engine with `local_corrections = True` takes two more keywords in
    # `propagate`: `previous` (slice index -> the object's 2D mask from its last propagation,
    # seeds included; None or empty: propagate from scratch), so a corrected seed is
    # re-propagated only until it agrees with the previous result, which is kept beyond and
    # yielded again; and `scores` (a dict the engine fills with its confidence per yielded slice).

    def stats(self, state: object) -> dict:
        """Counters for benchmarks and latencies: encoder passes, cache bytes, seconds."""
