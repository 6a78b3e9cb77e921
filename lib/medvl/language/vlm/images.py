"""Volume -> key axial slices as RGB images for a vision-language model.

Slices are `array[k]` (rows j, columns i), windowed explicitly per modality
(`medvl.intensity`: CT lung window by default, MR percentiles), as 8-bit greyscale copied
to three channels. The image keeps the slice's pixel grid (no resize here: each model's
image processor resizes, and the adapter records the size it saw to map boxes back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from medvl.intensity import IntensitySettings, intensity_bounds, to_unit


@dataclass
class SliceImage:
    k: int  # axial slice index (ITK k)
    image: Image.Image  # RGB, width = columns (i), height = rows (j)


def key_slices(volume, count: int = 5, mask: np.ndarray | None = None) -> list[int]:
    """`count` slice indices spread evenly over the slices that hold `mask` (default: slices
    whose intensity varies, i.e. not blank), middle ones first."""
    if mask is not None and mask.any():
        ks = np.flatnonzero(mask.any(axis=(1, 2)))
    else:
        std = volume.array.reshape(volume.array.shape[0], -1)[:, ::97].std(axis=1)
        ks = np.flatnonzero(std > 0.05 * std.max()) if std.max() > 0 else np.arange(volume.array.shape[0])
    pick = np.unique(np.linspace(ks[0], ks[-1], num=min(count, len(ks)) + 2).round().astype(int)[1:-1])
    if len(pick) == 0:
        pick = np.array([ks[len(ks) // 2]])
    mid = (ks[0] + ks[-1]) / 2
    return [int(k) for k in sorted(pick, key=lambda k: abs(k - mid))]


def slice_image(volume, k: int, ct_window: str = "lung") -> SliceImage:
    bounds = intensity_bounds(volume.array, volume.modality, IntensitySettings(ct_window=ct_window))
    grey = (to_unit(volume.array[k], bounds) * 255).round().astype(np.uint8)
    return SliceImage(k, Image.fromarray(np.stack([grey] * 3, axis=-1)))
