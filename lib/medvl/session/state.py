"""Typed state of a `VolumeSession`: one `ObjectState` per object id, plus the results it returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medvl.engines.base import SlicePrompt


@dataclass
class ObjectState:
    obj_id: int  # the label value this object gets in `VolumeSession.labels()` (1..255)
    axis: str  # slicing/propagation axis of every prompt of this object ("i", "j" or "k")
    engine_state: object  # the engine's bound state for (volume, axis); shared by objects on that axis
    prompts: dict[int, SlicePrompt] = field(default_factory=dict)  # slice index -> prompts there
    seeds: dict[int, np.ndarray] = field(default_factory=dict)  # prompted slice -> its 2D mask
    propagated: dict[int, np.ndarray] = field(default_factory=dict)  # other slice -> 2D mask from propagation
    history: list["Snapshot"] = field(default_factory=list)  # states before each prompt/propagation, for undo

    def snapshot(self) -> "Snapshot":
        return Snapshot({i: SlicePrompt(list(p.points), list(p.labels), list(p.boxes))
                         for i, p in self.prompts.items()}, dict(self.seeds), dict(self.propagated))

    def restore(self, snap: "Snapshot") -> None:
        self.prompts, self.seeds, self.propagated = snap.prompts, snap.seeds, snap.propagated

    def slice_masks(self) -> dict[int, np.ndarray]:
        """Every slice's 2D mask; prompted slices win over propagated ones."""
        return {**self.propagated, **self.seeds}


@dataclass
class Snapshot:
    prompts: dict[int, SlicePrompt]  # copies of the object's prompts
    seeds: dict[int, np.ndarray]  # the object's seed masks (arrays are never mutated, so shared)
    propagated: dict[int, np.ndarray]  # the object's propagated masks


@dataclass
class PromptResult:
    """What `add_point` / `add_box` return: the immediate 2D answer on the prompted slice."""

    obj_id: int  # object the prompt went to
    axis: str  # slicing axis of the prompted slice
    slice_index: int  # index of the prompted slice along `axis`
    mask: np.ndarray  # bool 2D mask (rows, cols) of that slice, see medvl.slicing
    score: float  # engine's quality estimate in [0, 1]
    seconds: float  # wall time of the call (encoder only if the slice was not cached)
