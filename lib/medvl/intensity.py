"""Explicit, per-modality intensity mapping of a volume into [0, 1] for the models.

CT: a fixed Hounsfield window (level, width) - the same HU always maps to the same value.
MR (and other): volume-wide percentiles (0.5 %, 99.5 % by default), so every slice of
one volume shares one mapping. Arrays are numpy (k, j, i); the mapping is voxel-wise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medvl.errors import MedVLError

# Named CT windows as (level, width) in HU.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "wide": (0.0, 2000.0),
}


@dataclass(frozen=True)
class IntensitySettings:
    ct_window: str | tuple[float, float] = "wide"  # a CT_WINDOWS name or (level, width) HU
    mr_percentiles: tuple[float, float] = (0.5, 99.5)  # lower/upper percentile for MR and other


def ct_window_bounds(window: str | tuple[float, float]) -> tuple[float, float]:
    """(low, high) HU of a named or (level, width) window."""
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise MedVLError(f"unknown CT window {window!r}: use one of {', '.join(CT_WINDOWS)} or (level, width)")
        window = CT_WINDOWS[window]
    level, width = float(window[0]), float(window[1])
    if width <= 0:
        raise MedVLError(f"CT window width {width} must be positive")
    return level - width / 2, level + width / 2


def intensity_bounds(array: np.ndarray, modality: str, settings: IntensitySettings = IntensitySettings()
                     ) -> tuple[float, float]:
    """The (low, high) raw intensities that map to 0 and 1 for this volume."""
    if modality.upper() == "CT":
        return ct_window_bounds(settings.ct_window)
    lo_p, hi_p = settings.mr_percentiles
    sample = array[:: max(1, array.shape[0] // 32)]  # every slice for small volumes; bounded work for big
    lo, hi = np.percentile(sample, [lo_p, hi_p])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def to_unit(array: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """Clip to `bounds` and scale to float32 [0, 1]; shape and axis order unchanged."""
    lo, hi = bounds
    out = (np.asarray(array, dtype=np.float32) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)
