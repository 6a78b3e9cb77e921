"""Mapping between a slice's voxel grid and a square model input, keeping physical aspect.

A slice of (rows, cols) voxels with pixel spacing (row_mm, col_mm) is resized so its
longer physical side fills `size` model pixels and the other side keeps the physical
aspect ratio; the rest of the square input is zero padding (bottom/right), as in SAM's
ResizeLongestSide. Pixel centres map as x_model = (x + 0.5) * scale - 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SliceFrame:
    rows: int  # slice height in voxels
    cols: int  # slice width in voxels
    size: int  # square model input side
    out_rows: int  # rows of the resized slice inside the model input (<= size)
    out_cols: int  # cols of the resized slice inside the model input (<= size)

    @classmethod
    def for_slice(cls, rows: int, cols: int, row_mm: float, col_mm: float, size: int) -> "SliceFrame":
        h_mm, w_mm = rows * row_mm, cols * col_mm
        if h_mm >= w_mm:
            out_rows, out_cols = size, max(1, round(size * w_mm / h_mm))
        else:
            out_rows, out_cols = max(1, round(size * h_mm / w_mm)), size
        return cls(rows, cols, size, out_rows, out_cols)

    @property
    def scale_xy(self) -> tuple[float, float]:
        return self.out_cols / self.cols, self.out_rows / self.rows

    def points_to_model(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) slice (x=col, y=row) voxel coordinates -> model pixel coordinates."""
        sx, sy = self.scale_xy
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return np.stack([(xy[:, 0] + 0.5) * sx - 0.5, (xy[:, 1] + 0.5) * sy - 0.5], axis=1)

    def box_to_model(self, box) -> np.ndarray:
        """Inclusive voxel box (x0, y0, x1, y1) -> model box covering the same voxel extents."""
        sx, sy = self.scale_xy
        x0, y0, x1, y1 = box
        return np.array([x0 * sx, y0 * sy, (x1 + 1) * sx - 1, (y1 + 1) * sy - 1], dtype=np.float64)

    def image_to_model(self, unit_slice: np.ndarray) -> torch.Tensor:
        """float32 (rows, cols) in [0, 1] -> (1, 3, size, size) model input."""
        t = torch.from_numpy(np.ascontiguousarray(unit_slice, dtype=np.float32))[None, None]
        t = F.interpolate(t, size=(self.out_rows, self.out_cols), mode="bilinear", align_corners=False,
                          antialias=self.out_rows < self.rows or self.out_cols < self.cols)
        t = F.pad(t, (0, self.size - self.out_cols, 0, self.size - self.out_rows))
        return t.expand(1, 3, self.size, self.size).contiguous()

    def logits_to_slice(self, logits: torch.Tensor) -> np.ndarray:
        """(..., size, size) model-resolution logits -> float32 (..., rows, cols) slice logits."""
        lead = logits.shape[:-2]
        t = logits.reshape(-1, 1, *logits.shape[-2:])
        if t.shape[-1] != self.size:
            t = F.interpolate(t, size=(self.size, self.size), mode="bilinear", align_corners=False)
        t = t[..., : self.out_rows, : self.out_cols]
        t = F.interpolate(t, size=(self.rows, self.cols), mode="bilinear", align_corners=False)
        return t.reshape(*lead, self.rows, self.cols).float().cpu().numpy()  # a CUDA engine too
