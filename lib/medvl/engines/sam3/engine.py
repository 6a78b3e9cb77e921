"""The `sam3` engine: SAM 3's tracker (points, boxes) and concept model (text) over a volume.

Slices are the video frames, fed from the volume in memory (`frames.SliceFrames`). Points
and boxes go to `Sam3TrackerVideoModel` through transformers' own per-frame call
(`model(inference_session, frame_idx=..., reverse=...)`): every prompted slice of an object
becomes a conditioning frame (its prompt, or its mask when it has none), and the other
slices are tracked walking outward from the prompted ones in both directions, interleaved,
each half of a gap between two prompted slices from its own end, with SAM 3's memory
attention over the frames already done. A walk ends where the mask is empty
(`Sam3Settings.stop_at_empty`).

A text concept goes to `Sam3VideoModel` (`concept.segment_concept`): detection on every
slice plus tracking, forward then backward from the middle slice; each instance comes back
as its own 3D mask.

Image features live in one `ByteLRU` per bound (volume, axis), bounded by
`Sam3Settings.cache_bytes` and shared by every object and both models, so a correction
click or a second object never encodes a slice twice while the budget holds it.

Not thread-safe: one caller per bound state (the session holds the lock).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from medvl.engines.base import CancelCheck, SlicePrompt, SliceResult
from medvl.engines.cache import ByteLRU
from medvl.engines.frame import SliceFrame
from medvl.engines.sam3.checkpoint import CheckpointInfo, Sam3Models, load_models
from medvl.engines.sam3.frames import BudgetCache, SliceFrames, square_frame
from medvl.engines.sam3.settings import Sam3Settings
from medvl.errors import PromptError
from medvl.intensity import intensity_bounds
from medvl.slicing import check_axis, num_slices, take_slice
from medvl.volume import Volume

log = logging.getLogger(__name__)
OBJ = 1  # the object id inside each per-call transformers session (one object per call)


@dataclass
class Sam3State:
    volume: Volume  # the bound volume; array (k, j, i), never copied or resampled
    axis: str  # slicing axis "i", "j" or "k" (see medvl.slicing)
    bounds: tuple[float, float]  # raw intensities mapped to 0 and 1 (medvl.intensity, per modality)
    frame: SliceFrame  # slice grid <-> square model input (stretched to S x S, as SAM 3's processor does)
    num_slices: int  # number of slices along `axis`
    features: ByteLRU  # slice index -> {"vision_feats", "vision_pos_embeds"} of SAM 3's tracker, bounded by bytes
    scores: dict = field(default_factory=dict)  # (obj_id, slice) -> last confidence, for stats only
    # counters for stats()
    encoder_passes: int = 0  # slices through the image encoder
    encoder_seconds: float = 0.0
    decoder_calls: int = 0  # prompted slices decoded
    track_steps: int = 0  # slices tracked with memory attention
    track_seconds: float = 0.0
    concept_runs: int = 0  # text concepts run through the detector


class Sam3Engine:
    """See `medvl.engines.base.Engine`; built by `medvl.engines.sam3.build_sam3_engine`."""

    name = "sam3"
    tracks_objects = True  # segment_slice / propagate take obj_id=
    concepts = True  # `segment_concept` answers text prompts with instances (medvl.engines.sam3.concept)

    def __init__(self, info: CheckpointInfo, settings: Sam3Settings):
        self.info = info  # the checked checkpoint folder (nothing loaded yet)
        self.settings = settings
        self.label = info.label  # what the model is, for logs, /info and replies
        self._models: Sam3Models | None = None

    # -- models (lazy) -----------------------------------------------------------------------
    @property
    def models(self) -> Sam3Models:
        if self._models is None:
            self._models = load_models(str(self.info.folder), self.settings.device)
        return self._models

    @property
    def image_size(self) -> int:
        return int(self.models.tracker.config.image_size)

    # -- binding ------------------------------------------------------------------------------
    def bind(self, volume: Volume, axis: str) -> Sam3State:
        """Prepare for `volume` (array (k, j, i)) sliced along `axis`; encodes nothing yet."""
        check_axis(axis)
        first = take_slice(volume.array, axis, 0)
        return Sam3State(volume=volume, axis=axis,
                         bounds=intensity_bounds(volume.array, volume.modality, self.settings.intensity),
                         frame=square_frame(first.shape[0], first.shape[1], self.image_size),
                         num_slices=num_slices(volume.array.shape, axis),
                         features=ByteLRU(self.settings.cache_bytes))

    def num_slices(self, state: Sam3State) -> int:
        return state.num_slices

    def new_session(self, state: Sam3State, cls=None):
        """A transformers inference session over the bound slices, with our frames and cache."""
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
            Sam3TrackerVideoInferenceSession)

        device = self.settings.device
        session = (cls or Sam3TrackerVideoInferenceSession)(
            video_height=state.frame.rows, video_width=state.frame.cols, inference_device=device,
            inference_state_device=device, video_storage_device=device, dtype=torch.float32)
        session.processed_frames = SliceFrames(state, device)
        session.cache = BudgetCache(state, device)
        return session

    # -- prompts --------------------------------------------------------------------------------
    def _add_prompt(self, session, state: Sam3State, index: int, prompt: SlicePrompt) -> None:
        """The slice's box (the last one given) as points labelled 2, 3, then its clicks, in model pixels."""
        coords, labels = [], []
        if prompt.boxes:
            x0, y0, x1, y1 = state.frame.box_to_model(prompt.boxes[-1])
            coords += [(x0, y0), (x1, y1)]
            labels += [2, 3]
        if len(prompt.points) != len(prompt.labels):
            raise PromptError(f"{len(prompt.points)} points but {len(prompt.labels)} labels: "
                              "give one label per point")
        if prompt.points:
            coords += [tuple(p) for p in state.frame.points_to_model(np.asarray(prompt.points, dtype=np.float64))]
            labels += [1 if int(v) else 0 for v in prompt.labels]
        if not coords:
            raise PromptError(f"empty prompt on slice {index}: give at least one point or box")
        obj_idx = session.obj_id_to_idx(OBJ)
        session.add_point_inputs(obj_idx, index, {
            "point_coords": torch.tensor([[coords]], dtype=torch.float32),
            "point_labels": torch.tensor([[labels]], dtype=torch.int32)})
        session.remove_mask_inputs(obj_idx, index)
        session.obj_with_new_inputs = [OBJ]

    def _add_mask(self, session, state: Sam3State, index: int, mask: np.ndarray) -> None:
        """A 2D bool mask as the slice's prompt, resized to S x S as the processor does."""
        size = state.frame.size
        t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
        t = (F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True) >= 0.5)
        obj_idx = session.obj_id_to_idx(OBJ)
        session.add_mask_inputs(obj_idx, index, t.float())
        session.remove_point_inputs(obj_idx, index)
        session.obj_with_new_inputs = [OBJ]

    def _run(self, session, state: Sam3State, index: int, reverse: bool = False) -> tuple[np.ndarray, float]:
        out = self.models.tracker(session, frame_idx=index, reverse=reverse)
        for outputs in session.output_dict_per_obj.values():  # S x S logits, read only by the step that made them
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                outputs[kind].get(index, {}).pop("high_res_masks", None)
        logits = out.pred_masks[:1].float().cpu()
        mask = state.frame.logits_to_slice(logits)[0, 0] > 0
        score = float(torch.sigmoid(out.object_score_logits.float().reshape(-1)[0]))
        return mask, score

    @torch.inference_mode()
    def segment_slice(self, state: Sam3State, slice_index: int, prompt: SlicePrompt,
                      obj_id: int | None = None) -> SliceResult:
        """The mask of one object on one slice from every prompt it has there."""
        self._check_index(state, slice_index)
        if prompt.is_empty():
            raise PromptError(f"empty prompt on slice {slice_index}: give at least one point or box")
        session = self.new_session(state)
        self._add_prompt(session, state, slice_index, prompt)
        mask, score = self._run(session, state, slice_index)
        state.decoder_calls += 1
        return SliceResult(mask, score)

    # -- propagation ------------------------------------------------------------------------------
    def propagate(self, state: Sam3State, seeds: dict[int, np.ndarray], prompts: dict[int, SlicePrompt],
                  should_stop: CancelCheck | None = None, obj_id: int | None = None
                  ) -> Iterator[tuple[int, np.ndarray]]:
        """Masks of one object on its unprompted slices, walking out of every prompted slice.

        Every seed conditions the object (its prompt, or its mask without one); walks
        interleave; `should_stop()` is asked before every model call and ends quietly.
        """
        order = sorted(int(i) for i in seeds)
        for index in order:
            self._check_index(state, index)
        if not order:
            return
        with torch.inference_mode():
            session = self.new_session(state)
            for index in order:
                if should_stop is not None and should_stop():
                    return
                prompt = prompts.get(index)
                if prompt is not None and not prompt.is_empty():
                    self._add_prompt(session, state, index, prompt)
                else:
                    self._add_mask(session, state, index, seeds[index])
                self._run(session, state, index)
                state.decoder_calls += 1
        last = state.num_slices - 1
        spans = [(order[0], -1, 0), (order[-1], +1, last)]
        for a, b in zip(order, order[1:]):
            mid = (a + b) // 2
            spans += [(a, +1, mid), (b, -1, mid + 1)]
        walks = [[origin, step, limit] for origin, step, limit in spans if (limit - origin) * step > 0]
        walks.sort(key=lambda w: w[1])  # the backward walks first: the two directions alternate from there
        while walks:
            for walk in list(walks):
                origin, step, limit = walk
                index = origin + step
                if (index - limit) * step > 0:
                    walks.remove(walk)
                    continue
                if should_stop is not None and should_stop():
                    return
                t0, enc0 = time.perf_counter(), state.encoder_seconds
                with torch.inference_mode():
                    mask, score = self._run(session, state, index, reverse=step < 0)
                state.track_steps += 1
                state.track_seconds += time.perf_counter() - t0 - (state.encoder_seconds - enc0)
                walk[0] = index
                if not mask.any() and self.settings.stop_at_empty:
                    walks.remove(walk)
                    continue
                yield index, mask

    # -- text concepts ------------------------------------------------------------------------------
    def segment_concept(self, state: Sam3State, text: str, should_stop: CancelCheck | None = None):
        """Every instance of `text` in the bound volume: a list of `concept.Instance`."""
        from medvl.engines.sam3.concept import segment_concept

        return segment_concept(self, state, text, should_stop)

    # -- helpers ---------------------------------------------------------------------------------
    def _check_index(self, state: Sam3State, index: int) -> None:
        if not 0 <= int(index) < state.num_slices:
            raise PromptError(f"slice {index} is outside 0..{state.num_slices - 1} along axis {state.axis}")

    def forget(self, state: Sam3State, obj_id: int) -> None:
        """Nothing per object outlives a call (each call builds its transformers session anew)."""

    def stats(self, state: Sam3State) -> dict:
        """Flat numeric counters (the session sums them over bound axes)."""
        return {
            "encoder_passes": state.encoder_passes,
            "encoder_seconds": round(state.encoder_seconds, 4),
            "decoder_calls": state.decoder_calls,
            "track_steps": state.track_steps,
            "track_seconds": round(state.track_seconds, 4),
            "concept_runs": state.concept_runs,
            "cache_entries": len(state.features),
            "cache_bytes": state.features.bytes,
            "cache_budget_bytes": state.features.max_bytes,
            "cache_evictions": state.features.evictions,
        }
