"""The `sam2` engine: SAM 2 / MedSAM2 memory-bank propagation across slices, fed from memory.

Slices are the video frames. Each prompted slice (points, box, or a mask) becomes a
conditioning frame; every other slice is tracked from its nearest prompted slice,
walking outward in both directions with SAM 2's memory attention over that walk's
memory bank (the prompted slice plus the last six tracked slices and sixteen object
pointers), and a walk ends where the object ends (empty mask). Between two prompted
slices each half of the gap is walked from its own end, as MedSAM2's 3D inference walks
from its key slice.

Because a walk depends only on its prompted slice, a correction re-tracks only the walks
that start at the corrected slice: the other walks are kept or cut short, and no slice
is encoded twice while the feature budget (`Sam2Settings.cache_bytes`) holds them.

A correction click on a propagated slice refines that slice's propagated mask with the
memory that produced it (SAM 2's "previous logits + memory" path) when the caller says
which object it is (`obj_id=`); without it every prompted slice starts fresh.

Not thread-safe: one caller per bound state (the session holds the lock).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from medvl.engines.base import CancelCheck, SlicePrompt, SliceResult
from medvl.engines.cache import ByteLRU
from medvl.engines.sam2 import tracking
from medvl.engines.sam2.settings import Sam2Settings
from medvl.engines.sam2.state import Base, CondFrame, FrameOut, ObjectMemo, Run, Sam2State, mask_digest
from medvl.errors import EngineError, PromptError
from medvl.intensity import intensity_bounds, to_unit
from medvl.slicing import check_axis, num_slices, take_slice
from medvl.volume import Volume

log = logging.getLogger(__name__)

MAX_PTRS = 16  # object pointers SAM 2 reads back along a walk (max_obj_ptrs_in_encoder)
_CANCELLED = object()  # _advance's answer when should_stop() said so


@dataclass
class _Walk:
    """One walk of one propagate() call: `run` from its origin towards `limit` (inclusive)."""

    run: Run
    limit: int  # last slice this walk may cover in this call
    position: int = 0  # last step yielded
    previous: dict | None = None  # the object's last layout (slice -> Base), for the convergence stop
    agreed: int = 0  # consecutive newly tracked slices that matched the previous layout


class Sam2Engine:
    """See `medvl.engines.base.Engine`; built by `medvl.engines.sam2.build_sam2_engine`."""

    name = "sam2"
    tracks_objects = True  # segment_slice / propagate take obj_id=; forget(state, obj_id) drops one

    def __init__(self, model: torch.nn.Module, settings: Sam2Settings, label: str):
        self.model = model  # sam2.sam2_video_predictor.SAM2VideoPredictor, eval mode
        self.settings = settings
        self.label = label  # what the model is: config name and checkpoint file, for logs and /info
        self.image_size = int(model.image_size)
        if not 0.0 < settings.converge_iou <= 1.0:
            raise EngineError(f"converge_iou={settings.converge_iou} is outside (0, 1]: use e.g. 0.98")
        if settings.converge_memory_tol < 0:
            raise EngineError(f"converge_memory_tol={settings.converge_memory_tol} is negative: use e.g. 0.01")
        self.num_maskmem = int(getattr(model, "num_maskmem", 7))  # prompted slice + recent tracked slices

    # -- binding ------------------------------------------------------------------------------
    def bind(self, volume: Volume, axis: str) -> Sam2State:
        """Prepare for `volume` (array (k, j, i)) sliced along `axis`; encodes nothing yet."""
        check_axis(axis)
        first = take_slice(volume.array, axis, 0)
        return Sam2State(
            volume=volume, axis=axis,
            bounds=intensity_bounds(volume.array, volume.modality, self.settings.intensity),
            frame=tracking.square_frame(first.shape[0], first.shape[1], self.image_size),
            num_slices=num_slices(volume.array.shape, axis),
            features=ByteLRU(self.settings.cache_bytes))

    def num_slices(self, state: Sam2State) -> int:
        return state.num_slices

    # -- image features (the one encoder call site) ---------------------------------------------
    def _features(self, state: Sam2State, index: int) -> list[torch.Tensor]:
        fpn = state.features.get(index)
        if fpn is None:
            t0 = time.perf_counter()
            unit = to_unit(take_slice(state.volume.array, state.axis, index), state.bounds)
            fpn, pos = tracking.encode(self.model, tracking.model_input(state.frame, unit).to(self.settings.device))
            if state.pos_enc is None:
                state.pos_enc = pos
            state.features.put(index, fpn)
            state.encoder_passes += 1
            state.encoder_seconds += time.perf_counter() - t0
        return fpn

    @torch.inference_mode()
    def slice_features(self, state: Sam2State, index: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(FPN features, their position encodings) of one slice, from the feature cache (encoded once);
        for callers that run SAM 2's heads themselves (the [SEG]-token model's decoder step)."""
        self._check_index(state, index)
        return self._features(state, index), state.pos_enc

    def _step(self, state: Sam2State, index: int, **kw) -> FrameOut:
        fpn = self._features(state, index)
        out, maskmem_pos = tracking.step(self.model, fpn, state.pos_enc, frame_idx=index,
                                         num_frames=state.num_slices,
                                         fill_hole_area=self.settings.fill_hole_area, **kw)
        if state.maskmem_pos_enc is None:
            state.maskmem_pos_enc = maskmem_pos
        return out

    # -- prompted slices ----------------------------------------------------------------------
    def _memory(self, state: Sam2State, run: Run, position: int, cond: CondFrame) -> dict:
        """SAM 2's memory view for step `position` of `run`: its origin and the steps before it."""
        pe = state.maskmem_pos_enc
        earlier = range(max(1, position - MAX_PTRS), position)
        return {"cond_frame_outputs": {run.origin: cond.out.for_sam2(pe)},
                "non_cond_frame_outputs": {run.origin + run.step * p: run.outputs[p - 1].for_sam2(pe)
                                           for p in earlier}}

    def _cond_by_uid(self, state: Sam2State, uid: int) -> CondFrame | None:
        return next((c for c in state.conds.values() if c.uid == uid), None)

    def _condition(self, state: Sam2State, index: int, prompt: SlicePrompt | None, mask: np.ndarray | None,
                   base: Base | None) -> CondFrame:
        """The conditioning output of slice `index` from a prompt (or a mask), decoded once per content."""
        if prompt is not None and not prompt.is_empty():
            content = ("prompt", tuple(map(tuple, prompt.points)), tuple(prompt.labels),
                       tuple(map(tuple, prompt.boxes[-1:])))
        else:
            content, base = ("mask", mask_digest(mask)), None
        key = (index, content, None if base is None else base.key)
        found = state.conds.get(key)
        if found is not None:
            return found
        t0, enc0 = time.perf_counter(), state.encoder_seconds
        kw: dict = {"conditioning": True, "init": True}
        if content[0] == "prompt":
            kw["point_inputs"] = tracking.prompt_inputs(state.frame, prompt)
        else:
            kw["mask_inputs"] = tracking.mask_input(state.frame, mask)
        origin = None if base is None else self._cond_by_uid(state, base.run.uid)
        if origin is not None and state.maskmem_pos_enc is not None:
            # refine the propagated mask with the memory that produced it (SAM 2's correction path)
            kw.update(init=False, memory=self._memory(state, base.run, base.position, origin),
                      reverse=base.run.step < 0, prev_logits=base.run.outputs[base.position - 1].pred_masks)
        out = self._step(state, index, **kw)
        cond = state.conds[key] = CondFrame(state.next_uid, index, out)
        state.next_uid += 1
        state.cond_calls += 1
        state.cond_seconds += time.perf_counter() - t0 - (state.encoder_seconds - enc0)
        return cond

    def _slice_mask(self, state: Sam2State, out: FrameOut) -> np.ndarray:
        return state.frame.logits_to_slice(out.pred_masks)[0, 0] > 0

    @torch.inference_mode()
    def segment_slice(self, state: Sam2State, slice_index: int, prompt: SlicePrompt,
                      obj_id: int | None = None) -> SliceResult:
        """The mask of one object on one slice from every prompt it has there.

        With `obj_id`, a prompt on a slice the object was propagated to refines that
        propagated mask (SAM 2's correction path); without it the slice starts fresh.
        """
        self._check_index(state, slice_index)
        if prompt.is_empty():
            raise PromptError(f"empty prompt on slice {slice_index}: give at least one point or box")
        memo = self._memo(state, obj_id)
        if slice_index not in memo.bases:
            memo.bases[slice_index] = memo.layout.get(slice_index) if obj_id is not None else None
        cond = self._condition(state, slice_index, prompt, None, memo.bases[slice_index])
        return SliceResult(self._slice_mask(state, cond.out), cond.out.score)

    @torch.inference_mode()
    def segment_mask(self, state: Sam2State, slice_index: int, mask: np.ndarray) -> SliceResult:
        """Use a 2D bool mask (rows, cols) as the prompt of a slice (SAM 2's mask prompt)."""
        self._check_index(state, slice_index)
        if mask.shape != (state.frame.rows, state.frame.cols):
            raise PromptError(f"mask prompt of shape {mask.shape} does not fit slice shape "
                              f"{(state.frame.rows, state.frame.cols)} along axis {state.axis}")
        cond = self._condition(state, slice_index, None, mask, None)
        return SliceResult(self._slice_mask(state, cond.out), cond.out.score)

    # -- propagation ---------------------------------------------------------------------------
    def propagate(self, state: Sam2State, seeds: dict[int, np.ndarray], prompts: dict[int, SlicePrompt],
                  should_stop: CancelCheck | None = None, obj_id: int | None = None
                  ) -> Iterator[tuple[int, np.ndarray]]:
        """Masks of one object on its unprompted slices, walking out of every prompted slice.

        Prompted slices are `seeds`' keys; a seed with a non-empty prompt is conditioned on
        that prompt, one without on its mask. Walks interleave (progress on both sides);
        `should_stop()` is asked before every model call and ends the generator quietly.
        """
        with torch.inference_mode():
            walks, layout = self._plan(state, seeds, prompts, obj_id)
        pending = list(walks)
        while pending:
            for walk in list(pending):
                with torch.inference_mode():
                    item = self._advance(state, walk, should_stop)
                if item is None:
                    pending.remove(walk)
                    continue
                if item is _CANCELLED:
                    return
                index, out = item
                layout[index] = Base(walk.run, walk.position)
                self._check_converged(state, walk, index, out)
                yield index, self._slice_mask(state, out)

    def _plan(self, state: Sam2State, seeds, prompts, obj_id) -> tuple[list[_Walk], dict]:
        memo = self._memo(state, obj_id)
        previous = memo.layout if self.settings.converge_stop else None
        order = sorted(int(i) for i in seeds)
        for index in order:
            self._check_index(state, index)
        if obj_id is None:
            memo.bases = {}
        else:
            memo.bases = {i: memo.bases.get(i) for i in order}
        conds = {i: self._condition(state, i, prompts.get(i), seeds[i], memo.bases.get(i)) for i in order}
        memo.layout = {}
        walks: list[_Walk] = []
        if not order:
            return walks, memo.layout
        last = state.num_slices - 1
        spans = [(order[0], -1, 0), (order[-1], +1, last)]
        for a, b in zip(order, order[1:]):
            mid = (a + b) // 2
            spans += [(a, +1, mid), (b, -1, mid + 1)]
        for origin, direction, limit in spans:
            if (limit - origin) * direction <= 0:
                continue  # nothing between two adjacent prompted slices, or at the volume's edge
            walks.append(_Walk(self._run(state, conds[origin], direction), limit, previous=previous))
        self._trim_runs(state, keep={w.run.key for w in walks})
        return walks, memo.layout

    def _run(self, state: Sam2State, cond: CondFrame, direction: int) -> Run:
        key = (cond.slice_index, cond.uid, direction)
        run = state.runs.get(key)
        if run is None:
            run = state.runs[key] = Run(cond.slice_index, cond.uid, direction)
        state.runs.move_to_end(key)
        return run

    def _advance(self, state: Sam2State, walk: _Walk, should_stop):
        """The next (slice, output) of `walk`, None when it is over, _CANCELLED when cancelled."""
        run, p = walk.run, walk.position + 1
        index = run.origin + run.step * p
        if (index - walk.limit) * run.step > 0:
            return None
        if p <= len(run.outputs):
            out = run.outputs[p - 1]
            state.reused_steps += 1
        elif run.ended:
            return None
        else:
            if should_stop is not None and should_stop():
                return _CANCELLED
            t0, enc0 = time.perf_counter(), state.encoder_seconds
            cond = self._cond_by_uid(state, run.uid)
            out = self._step(state, index, conditioning=False, init=False,
                             memory=self._memory(state, run, p, cond), reverse=run.step < 0)
            run.outputs.append(out)
            state.track_steps += 1
            state.track_seconds += time.perf_counter() - t0 - (state.encoder_seconds - enc0)
            if not out.present and self.settings.stop_at_empty:
                run.ended = True
        if not out.present and self.settings.stop_at_empty:
            return None
        walk.position = p
        return index, out

    def _check_converged(self, state: Sam2State, walk: _Walk, index: int, out: FrameOut) -> None:
        """Convergence stop: once `walk`'s newly tracked masks match the previous run's on
        `num_maskmem` consecutive slices (the memory bank's whole recent window), continue along
        the previous run instead - its outputs are reused, and it is tracked on only where it had
        stopped short. Only a previous run walking the same way can be continued."""
        if walk.previous is None:
            return
        old = walk.previous.get(index)
        if (old is None or old.run is walk.run or old.run.step != walk.run.step
                or old.position > len(old.run.outputs) or self._cond_by_uid(state, old.run.uid) is None):
            walk.agreed = 0
            return
        if not self._agrees(out, old.run.outputs[old.position - 1]):
            walk.agreed = 0
            return
        walk.agreed += 1
        if walk.agreed >= self.num_maskmem:
            walk.run, walk.position, walk.previous = old.run, old.position, None
            state.runs[old.run.key] = old.run  # in use again (and counted in the walks' budget)
            state.runs.move_to_end(old.run.key)
            state.converged_stops += 1

    def _agrees(self, new: FrameOut, old: FrameOut) -> bool:
        a, b = new.pred_masks > 0, old.pred_masks > 0
        union = int((a | b).sum())
        iou = 1.0 if union == 0 else int((a & b).sum()) / union
        if iou < self.settings.converge_iou:
            return False
        ref = old.maskmem_features.float()
        diff = (new.maskmem_features.float() - ref).abs().mean()
        return bool(diff <= self.settings.converge_memory_tol * ref.abs().mean().clamp_min(1e-12))

    def _trim_runs(self, state: Sam2State, keep: set) -> None:
        """Drop the least recently used walks not in use once they pass their budget."""
        budget = self.settings.run_cache_bytes
        total = state.run_bytes()
        for key in list(state.runs):
            if total <= budget:
                break
            if key not in keep:
                total -= state.runs.pop(key).nbytes
        # conditioning outputs: keep those a kept walk or a correction base starts from, and the latest few
        live = {k[1] for k in state.runs} | {b.run.uid for m in state.objects.values()
                                             for b in m.bases.values() if b is not None}
        recent = set(list(state.conds)[-64:])
        state.conds = {k: c for k, c in state.conds.items() if c.uid in live or k in recent}

    # -- helpers -------------------------------------------------------------------------------
    def _memo(self, state: Sam2State, obj_id) -> ObjectMemo:
        return state.objects.setdefault(obj_id, ObjectMemo())

    def _check_index(self, state: Sam2State, index: int) -> None:
        if not 0 <= int(index) < state.num_slices:
            raise PromptError(f"slice {index} is outside 0..{state.num_slices - 1} along axis {state.axis}")

    def forget(self, state: Sam2State, obj_id: int) -> None:
        """Drop what the engine remembers of one object (its walks stay cached for reuse)."""
        state.objects.pop(obj_id, None)

    def stats(self, state: Sam2State) -> dict:
        """Flat numeric counters (the session sums them over bound axes)."""
        return {
            "encoder_passes": state.encoder_passes,
            "encoder_seconds": round(state.encoder_seconds, 4),
            "decoder_calls": state.cond_calls,
            "decoder_seconds": round(state.cond_seconds, 4),
            "track_steps": state.track_steps,
            "track_seconds": round(state.track_seconds, 4),
            "reused_steps": state.reused_steps,
            "converged_stops": state.converged_stops,
            "cache_entries": len(state.features),
            "cache_bytes": state.features.bytes,
            "cache_budget_bytes": state.features.max_bytes,
            "cache_evictions": state.features.evictions,
            "memory_bank_bytes": state.run_bytes(),
        }
