"""Typed state of a `VolumeSession`: one `ObjectState` per object id, plus the results it returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medvl.engines.base import SlicePrompt

AXES = ("i", "j", "k")


@dataclass(frozen=True)
class PointPrompt:
    """A click as the caller gave it: ITK voxel index (i, j, k); the slicing axis is the object's."""

    ijk: tuple[int, int, int]  # ITK-order voxel index
    positive: bool  # foreground (True) or background click


@dataclass(frozen=True)
class BoxPrompt:
    """A box as the caller gave it: two inclusive ITK corners, equal on exactly one axis."""

    lo: tuple[int, int, int]  # ITK-order inclusive corner with the smaller indices
    hi: tuple[int, int, int]  # the other corner; equal to `lo` on exactly one axis

    @property
    def axis(self) -> str:
        return next(a for a, l, h in zip(AXES, self.lo, self.hi) if l == h)


Prompt = PointPrompt | BoxPrompt

# What a history step did (`Snapshot.kind`): undo reverts one step.
PROMPT, PROPAGATION, MASK = "prompt", "propagation", "mask"


@dataclass
class ObjectState:
    obj_id: int  # the label value this object gets in `VolumeSession.labels()` (1..255)
    axis: str  # slicing/propagation axis of every prompt of this object ("i", "j" or "k")
    engine_state: object  # the engine's bound state for (volume, axis); shared by objects on that axis
    prompts: dict[int, SlicePrompt] = field(default_factory=dict)  # slice index -> prompts there
    seeds: dict[int, np.ndarray] = field(default_factory=dict)  # prompted slice -> its 2D mask
    propagated: dict[int, np.ndarray] = field(default_factory=dict)  # other slice -> 2D mask from propagation
    history: list["Snapshot"] = field(default_factory=list)  # states before each step (prompt, ...), for undo
    log: list[Prompt] = field(default_factory=list)  # every prompt applied, in order, as the caller gave it
    clip: tuple[int, int, int, int, int, int] | None = None  # ITK (i0, i1, j0, j1, k0, k1): mask limited to it
    fixed: np.ndarray | None = field(default=None, repr=False)  # bool (k, j, i) set whole (a text result)
    scores: dict[int, float] = field(default_factory=dict)  # slice -> the engine's confidence in its mask
    last_seeds: dict[int, np.ndarray] = field(default_factory=dict)  # the seeds the last propagation started from

    def snapshot(self, kind: str) -> "Snapshot":
        """The state now, before a step of `kind` (PROMPT, PROPAGATION or MASK)."""
        return Snapshot(kind, {i: p.copy() for i, p in self.prompts.items()}, dict(self.seeds),
                        dict(self.propagated), list(self.log), self.clip, self.fixed, dict(self.scores),
                        dict(self.last_seeds))

    def restore(self, snap: "Snapshot") -> None:
        self.prompts, self.seeds, self.propagated = snap.prompts, snap.seeds, snap.propagated
        self.log, self.clip, self.fixed, self.scores = snap.log, snap.clip, snap.fixed, snap.scores
        self.last_seeds = snap.last_seeds

    def previous_result(self) -> dict[int, np.ndarray]:
        """The masks of the last propagation, seeds as they were then: what a correction edits."""
        return {**self.propagated, **self.last_seeds}

    def slice_masks(self) -> dict[int, np.ndarray]:
        """Every slice's 2D mask; prompted slices win over propagated ones."""
        return {**self.propagated, **self.seeds}


@dataclass
class Snapshot:
    kind: str  # the step taken after this state: PROMPT, PROPAGATION or MASK
    prompts: dict[int, SlicePrompt]  # copies of the object's prompts
    seeds: dict[int, np.ndarray]  # the object's seed masks (arrays are never mutated, so shared)
    propagated: dict[int, np.ndarray]  # the object's propagated masks
    log: list[Prompt]  # the prompt log
    clip: tuple[int, int, int, int, int, int] | None  # the clip region
    fixed: np.ndarray | None  # the whole-mask result (never mutated, so shared)
    scores: dict[int, float]  # the per-slice confidences
    last_seeds: dict[int, np.ndarray]  # the seeds of the last propagation


@dataclass
class PromptResult:
    """What `add_point` / `add_box` return: the immediate 2D answer on the prompted slice."""

    obj_id: int  # object the prompt went to
    axis: str  # slicing axis of the prompted slice
    slice_index: int  # index of the prompted slice along `axis`
    mask: np.ndarray  # bool 2D mask (rows, cols) of that slice, see medvl.slicing
    score: float  # engine's quality estimate in [0, 1]
    seconds: float  # wall time of the call (encoder only if the slice was not cached)
