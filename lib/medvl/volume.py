"""`Volume`: a 3D scalar image in memory with its physical geometry.

Axis order: `array` is numpy order (k, j, i) = (z, y, x), exactly what
`SimpleITK.GetArrayFromImage` returns; voxel indices everywhere else in the library
(prompts, CLI, REST) are ITK order (i, j, k). `medvl.geometry` is the one home of the
conversions between the two and to physical space.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medvl.geometry import Geometry


@dataclass
class Volume:
    array: np.ndarray  # (k, j, i) numpy order; any real dtype; never resampled by the library
    geometry: Geometry  # origin, spacing, direction in LPS, ITK order (i, j, k)
    modality: str = "CT"  # "CT" or "MR" (or "OT"): selects the intensity mapping, see medvl.intensity
    name: str = ""  # image id: file stem for files, series UID for DICOM
    meta: dict = field(default_factory=dict)  # free-form reader metadata (source path, DICOM tags)

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Number of voxels along i, j, k (ITK order)."""
        k, j, i = self.array.shape
        return (i, j, k)

    def contains_index(self, ijk) -> bool:
        """True when the ITK-order voxel index (i, j, k) lies inside the volume."""
        return all(0 <= int(v) < n for v, n in zip(ijk, self.size_ijk))
