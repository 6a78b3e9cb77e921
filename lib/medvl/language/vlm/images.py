"""Volume -> key axial slices as RGB images for a vision-language model.

Slices are `array[k]` (rows j, columns i), windowed explicitly per modality
(`medvl.intensity`: a CT window, MR percentiles), as 8-bit greyscale copied to three channels.
Which slices and which CT window are chosen for the question (`views_for`): a finding is shown on
slices through its mask, a whole-volume question on evenly spaced body slices; the CT window follows
the words of the question or target (`window_for`: lung, bone, mediastinum or soft tissue). The image keeps the slice's pixel grid (no resize here: each model's
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


# words of a question or target -> the CT window a radiologist reads it in (first match wins, in this order)
WINDOW_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bone", ("bone", "fracture", "rib", "spine", "spinal", "vertebra", "skull", "osseous", "lytic", "sclerotic",
              "skeleton", "pelvis", "femur", "sternum", "clavicle", "scapula")),
    ("lung", ("lung", "nodule", "pulmonary", "airway", "trachea", "bronch", "emphysema", "pneumo", "ground-glass",
              "ground glass", "opacity", "consolidation", "lobe")),
    ("mediastinum", ("mediastin", "heart", "cardiac", "lymph", "aorta", "vessel", "pericard", "esophag", "hilar",
                     "thymus")),
    ("soft_tissue", ("fat", "liver", "kidney", "spleen", "pancrea", "muscle", "abdomen", "abdominal", "soft tissue",
                     "bowel", "bladder", "adrenal")),
)


def window_for(text: str, modality: str, default: str = "lung") -> str:
    """The CT window for a question or target `text` (WINDOW_WORDS; `default` when no word matches).
    MR and other modalities have no named window: percentiles are used whatever this returns."""
    if str(modality).upper() != "CT":
        return default
    low = (text or "").lower()
    for window, words in WINDOW_WORDS:
        if any(w in low for w in words):
            return window
    return default


def views_for(volume, text: str, masks=(), count: int = 3, default_window: str = "lung") -> tuple[list[int], str]:
    """(slice indices k, CT window) to show a model for `text`: slices through the union of `masks`
    (bool (k, j, i), the findings asked about) when any holds voxels, else evenly spaced slices over
    the body; middle ones first (`key_slices`)."""
    union = None
    for m in masks or ():
        if m is not None:
            union = np.asarray(m, bool).copy() if union is None else union | np.asarray(m, bool)
    ks = key_slices(volume, count, union if union is not None and union.any() else None)
    return ks, window_for(text, volume.modality, default_window)


def slice_image(volume, k: int, ct_window: str = "lung") -> SliceImage:
    bounds = intensity_bounds(volume.array, volume.modality, IntensitySettings(ct_window=ct_window))
    grey = (to_unit(volume.array[k], bounds) * 255).round().astype(np.uint8)
    return SliceImage(k, Image.fromarray(np.stack([grey] * 3, axis=-1)))
