"""Overlap metrics shared by the library, the benchmarks and the tests (torch-free)."""

from __future__ import annotations

import numpy as np


def dice(a: np.ndarray, b: np.ndarray, empty: float = 1.0) -> float:
    """Dice of two masks of one shape (any axis order, any dtype: non-zero is foreground).
    `empty` is returned when both are empty: 1.0 (they agree) by default; tests that must
    not pass on two empty masks ask for 0.0."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"dice of masks of different shapes {a.shape} and {b.shape}")
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return float(empty) if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total
