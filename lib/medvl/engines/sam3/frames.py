"""The volume as SAM 3 "video" frames, in memory, and the byte-bounded feature cache.

transformers' SAM 3 sessions (`Sam3TrackerVideoInferenceSession`, `Sam3VideoInferenceSession`)
read frames from `session.processed_frames[i]` and image features through `session.cache`.
Here both are ours: `SliceFrames` makes slice i's model input when it is asked for (never
the whole volume at once, no JPEG files, no image processor), and `BudgetCache` keeps the
features in the engine's `ByteLRU`, shared by every object on the bound axis, counting
encoder passes.

Model input (what `Sam3ImageProcessor` / `Sam3VideoProcessor` do to an RGB frame, done on
the slice tensor instead, so no torchvision is needed): the slice windowed into [0, 1] per
modality (`medvl.intensity`), replicated to 3 channels, resized (bilinear, antialiased when
shrinking) to the config's square `image_size` (1008 for the public checkpoint) without
keeping the aspect ratio, then normalised with mean 0.5 and std 0.5 per channel.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch

from medvl.engines.cache import ByteLRU
from medvl.engines.frame import SliceFrame
from medvl.intensity import to_unit
from medvl.slicing import take_slice

IMAGE_MEAN = 0.5  # IMAGENET_STANDARD_MEAN, Sam3ImageProcessor's default
IMAGE_STD = 0.5  # IMAGENET_STANDARD_STD


def square_frame(rows: int, cols: int, size: int) -> SliceFrame:
    """SAM 3 stretches every frame to a square (the processor's size is height = width)."""
    return SliceFrame(rows, cols, size, size, size)


def model_input(frame: SliceFrame, unit_slice) -> torch.Tensor:
    """float32 (rows, cols) slice in [0, 1] -> normalised (3, S, S) float32 frame."""
    return ((frame.image_to_model(unit_slice) - IMAGE_MEAN) / IMAGE_STD)[0]


class SliceFrames(Mapping):
    """Slice index -> its (3, S, S) model input, made on demand from the bound volume."""

    def __init__(self, state, device: str):
        self.state = state  # Sam3State: volume, axis, bounds, frame
        self.device = device

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= int(index) < self.state.num_slices:
            raise KeyError(index)
        s = self.state
        unit = to_unit(take_slice(s.volume.array, s.axis, int(index)), s.bounds)
        return model_input(s.frame, unit).to(self.device)

    def __len__(self) -> int:
        return self.state.num_slices

    def __iter__(self):
        return iter(range(self.state.num_slices))


class BudgetCache:
    """`Sam3TrackerVideoInferenceCache`'s interface over the engine's `ByteLRU` of features."""

    def __init__(self, state, device: str):
        self.state = state  # Sam3State: features (ByteLRU), counters
        self.inference_device = device
        self.inference_state_device = device
        self._started: float | None = None

    @property
    def lru(self) -> ByteLRU:
        return self.state.features

    def get_vision_features(self, frame_idx: int) -> dict | None:
        found = self.lru.get(int(frame_idx))
        if found is None:
            self._started = time.perf_counter()  # the model encodes the frame next
        return found

    def cache_vision_features(self, frame_idx: int, features: dict) -> None:
        self.lru.put(int(frame_idx), dict(features))
        self.state.encoder_passes += 1
        if self._started is not None:
            self.state.encoder_seconds += time.perf_counter() - self._started
            self._started = None

    def clear_all(self) -> None:
        """The sessions are per call; the features belong to the bound state and stay."""
