"""Typed state of the `sam2` engine: one `Sam2State` per bound (volume, axis).

What is kept, and why:

- `features`: every encoded slice's image features (the three FPN levels SAM 2's heads
  read), LRU-bounded by bytes. The stock video predictor keeps only the last frame; here
  a correction and its re-propagation never run the image encoder on a slice twice while
  the budget holds the volume.
- `conds`: conditioning outputs of prompted slices, content-addressed by (slice, prompt,
  correction base), so the same prompt on the same slice is decoded once.
- `runs`: the memory bank of each walk out of a prompted slice (spatial memories, object
  pointers, low-res logits per slice). A walk is a pure function of its conditioning
  output and direction, so a walk whose origin did not change is reused as is, a shorter
  one is a prefix, a longer one continues where it stopped.
- `objects`: per object id the last propagation layout (which walk covers which slice),
  the base a correction click on a propagated slice refines (SAM 2's "previous mask
  logits + memory" path).

Tensors are (batch=1, channels, rows, cols) at model resolution S (= image_size):
low-res logits are S/4, memories S/16.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from medvl.engines.cache import ByteLRU, nbytes
from medvl.engines.frame import SliceFrame
from medvl.volume import Volume


@dataclass
class FrameOut:
    """One slice's compact SAM 2 output for one object (what the memory bank keeps)."""

    maskmem_features: torch.Tensor  # (1, mem_dim, S/16, S/16) bfloat16 spatial memory, as the stock predictor stores it
    pred_masks: torch.Tensor  # (1, 1, S/4, S/4) float32 low-res mask logits, small holes filled
    obj_ptr: torch.Tensor  # (1, hidden_dim) object pointer read by later slices' memory attention
    object_score_logits: torch.Tensor  # (1, 1); > 0 means the object is present on this slice
    score: float  # the mask decoder's IoU estimate in [0, 1]

    def for_sam2(self, maskmem_pos_enc: list[torch.Tensor]) -> dict:
        """The dict layout `SAM2Base._prepare_memory_conditioned_features` reads."""
        return {"maskmem_features": self.maskmem_features, "maskmem_pos_enc": maskmem_pos_enc,
                "pred_masks": self.pred_masks, "obj_ptr": self.obj_ptr,
                "object_score_logits": self.object_score_logits}

    @property
    def nbytes(self) -> int:
        return nbytes([self.maskmem_features, self.pred_masks, self.obj_ptr, self.object_score_logits])

    @property
    def present(self) -> bool:
        return bool((self.pred_masks > 0).any())


@dataclass(frozen=True)
class Base:
    """The propagated output a correction click refines: slice `position` steps along `run`."""

    run: "Run"  # the walk that produced the slice's current mask
    position: int  # 1-based step along the walk (slice = run.origin + run.step * position)

    @property
    def key(self) -> tuple:
        return (self.run.origin, self.run.uid, self.run.step, self.position)


@dataclass
class CondFrame:
    """A prompted slice's conditioning output (the memory every walk from it starts with)."""

    uid: int  # unique per computed output; walks from this slice are keyed by it
    slice_index: int  # index along the bound axis
    out: FrameOut  # the decoder's answer to the prompt, memory encoded as SAM 2 does for clicks


@dataclass
class Run:
    """A walk out of a prompted slice in one direction, one output per step, in walking order."""

    origin: int  # the prompted slice the walk starts from
    uid: int  # CondFrame.uid of the origin's conditioning output
    step: int  # +1 (increasing slice index) or -1
    outputs: list[FrameOut] = field(default_factory=list)  # outputs[p - 1] is slice origin + step * p
    ended: bool = False  # the walk met an empty mask or the volume's edge and cannot go on

    @property
    def key(self) -> tuple:
        return (self.origin, self.uid, self.step)

    @property
    def nbytes(self) -> int:
        return sum(o.nbytes for o in self.outputs)


@dataclass
class ObjectMemo:
    """What the engine remembers of one object id between calls (only when the session names it)."""

    bases: dict[int, Base | None] = field(default_factory=dict)  # prompted slice -> the output its prompt refines
    layout: dict[int, Base] = field(default_factory=dict)  # propagated slice -> where its current mask came from


@dataclass
class Sam2State:
    volume: Volume  # the bound volume; array (k, j, i), never copied or resampled
    axis: str  # slicing axis "i", "j" or "k" (see medvl.slicing)
    bounds: tuple[float, float]  # raw intensities mapped to 0 and 1 (medvl.intensity, per modality)
    frame: SliceFrame  # slice grid <-> square model input (stretched to S x S, as SAM 2 was trained)
    num_slices: int  # number of slices along `axis`
    features: ByteLRU  # slice index -> [level0, level1, level2] FPN features, bounded by bytes
    conds: dict[tuple, CondFrame] = field(default_factory=dict)  # (slice, prompt key, base key) -> output
    runs: OrderedDict = field(default_factory=OrderedDict)  # Run.key -> Run, least recently used first
    objects: dict[object, ObjectMemo] = field(default_factory=dict)  # obj_id (None: unnamed) -> memo
    pos_enc: list[torch.Tensor] | None = None  # vision position encodings, identical for every slice
    maskmem_pos_enc: list[torch.Tensor] | None = None  # memory position encoding, identical for every slice
    next_uid: int = 0  # next CondFrame.uid
    # counters for stats()
    encoder_passes: int = 0  # slices through the image encoder
    encoder_seconds: float = 0.0
    cond_calls: int = 0  # prompted slices decoded (prompt encoder + mask decoder + memory encoder)
    cond_seconds: float = 0.0
    track_steps: int = 0  # slices tracked with memory attention during propagation
    track_seconds: float = 0.0
    reused_steps: int = 0  # propagated slices answered from a kept walk without any model call
    converged_stops: int = 0  # walks that met the previous run and continued along it (convergence stop)

    def run_bytes(self) -> int:
        return sum(r.nbytes for r in self.runs.values())


def mask_digest(mask: np.ndarray) -> str:
    """Content key of a 2D mask prompt."""
    m = np.ascontiguousarray(mask, dtype=bool)
    return hashlib.sha1(m.tobytes() + str(m.shape).encode()).hexdigest()
