"""Chest-CT anatomy from calibrated Hounsfield ranges: body, lungs, airway, bone, fat.

`CTAnatomy(volume)` computes each structure on first use and keeps it, so a report that
asks for the lungs, the nodule and the body pays for the lung segmentation once. Arrays
are numpy (k, j, i) bool masks in the volume's grid; axial slices are `array[k]`.
Left/right are the patient's, decided in LPS physical space (+x = patient left) through
`medvl.geometry`, never from array columns.

HU ranges (settings below) are the standard calibrated ones: air < -400 inside the body
is lung or airway; -190..-30 is fat; >= 250 is bone (cortical and dense trabecular).
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import ndimage as ndi

from medvl.language.errors import SolverError
from medvl.language.solvers import morph
from medvl.volume import Volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CTSettings:
    body_hu: float = -500.0  # tissue threshold for the body outline
    air_hu: float = -400.0  # below: air (lungs, airway) inside the body
    min_lung_ml: float = 50.0  # air components smaller than this are bowel gas, not lung
    airway_hu_start: float = -1000.0  # airway region growing: first threshold
    airway_hu_stop: float = -800.0  # ... last threshold tried
    airway_hu_step: float = 20.0
    airway_leak_ml: float = 100.0  # a jump in volume larger than this means the growth leaked into lung
    trachea_area_mm2: tuple[float, float] = (40.0, 800.0)  # plausible trachea cross-section at the seed slice
    bone_hu: float = 250.0
    min_bone_ml: float = 0.5  # drops calcifications and contrast specks
    fat_hu: tuple[float, float] = (-190.0, -30.0)
    min_fat_ml: float = 0.1
    field_closing_mm: float = 30.0  # closing radius that pulls juxtapleural lesions into the lung field


def spacing_kji(volume: Volume) -> tuple[float, float, float]:
    """Voxel size in mm in numpy order (k, j, i) (Geometry.spacing is ITK order (i, j, k))."""
    i, j, k = volume.geometry.spacing
    return (k, j, i)


def voxel_ml(volume: Volume) -> float:
    """Volume of one voxel in millilitres."""
    return float(np.prod(volume.geometry.spacing)) / 1000.0


def centroid_lps(volume: Volume, mask: np.ndarray, offset_kji=(0, 0, 0)) -> np.ndarray:
    """LPS physical centroid (mm) of a (k, j, i) mask, via medvl.geometry. `offset_kji`: where
    the mask's [0, 0, 0] lies in the volume when `mask` is a crop."""
    idx = [np.arange(n, dtype=np.float64) for n in mask.shape]
    total = float(mask.sum())
    kji = [float((mask.sum(axis=tuple(a for a in range(3) if a != ax)) * idx[ax]).sum()) / total + offset_kji[ax]
           for ax in range(3)]
    return volume.geometry.index_to_physical(np.array(kji[::-1]))


def require_ct(volume: Volume, what: str) -> None:
    if volume.modality.upper() != "CT":
        raise SolverError(
            f"'{what}' is solved from CT Hounsfield units, but this volume's modality is "
            f"{volume.modality!r}: give a CT, or draw a box/point prompt instead"
        )


class CTAnatomy:
    """Lazily computed chest-CT structures of one volume (numpy (k, j, i) bool masks)."""

    def __init__(self, volume: Volume, settings: CTSettings = CTSettings()):
        require_ct(volume, "CT anatomy")
        self.volume = volume
        self.settings = settings
        self.hu = np.asarray(volume.array, dtype=np.float32)  # (k, j, i) Hounsfield units
        self.spacing = spacing_kji(volume)  # mm along (k, j, i)
        self.voxel_ml = voxel_ml(volume)
        self.seconds: dict[str, float] = {}  # stage -> seconds, for latencies in `info`
        self.memo: dict = {}  # results of solvers built on these masks (nodule candidates), by settings

    def _timed(self, name, fn):
        t0 = time.perf_counter()
        out = fn()
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        return out

    def ml_to_voxels(self, ml: float) -> int:
        return max(1, int(round(ml / self.voxel_ml)))

    # -- body -----------------------------------------------------------------------
    @cached_property
    def body(self) -> np.ndarray:
        """The patient: largest tissue component (table and cables cut off), holes filled per slice."""
        def run():
            tissue = self.hu > self.settings.body_hu
            tissue = ndi.binary_opening(tissue, structure=np.ones((1, 3, 3), bool))
            parts = morph.largest_components(tissue, 1)
            if not parts:
                raise SolverError("no body found: no voxel above -500 HU; is this a CT in Hounsfield units?")
            return morph.fill_holes_2d(parts[0])
        return self._timed("body", run)

    # -- lungs and airway -------------------------------------------------------------
    @cached_property
    def mid_x(self) -> float:
        """LPS x (mm) of the body's centroid: the mid-sagittal plane that splits left from right."""
        return float(centroid_lps(self.volume, self.body)[0])

    @cached_property
    def air(self) -> np.ndarray:
        """Air inside the body in components of at least `min_lung_ml` (lungs + airway)."""
        def run():
            inside = (self.hu < self.settings.air_hu) & self.body
            return morph.remove_small(inside, self.ml_to_voxels(self.settings.min_lung_ml))
        return self._timed("air", run)

    @cached_property
    def airway(self) -> np.ndarray:
        """Trachea and main bronchi: grown from the trachea in the most cranial air slice with a
        rising HU threshold, stopped before the growth leaks into the lungs."""
        return self._timed("airway", self._grow_airway)

    def _cranial_k(self, mask: np.ndarray) -> int:
        """Index k of the most cranial (highest LPS z) slice that has mask voxels."""
        ks = np.flatnonzero(mask.any(axis=(1, 2)))
        z_per_k = self.volume.geometry.direction_matrix[2, 2]
        return int(ks[-1] if z_per_k >= 0 else ks[0])

    def _grow_airway(self) -> np.ndarray:
        air = self.air
        empty = np.zeros_like(air)
        if not air.any():
            return empty
        k = self._cranial_k(air)
        labels, n = ndi.label(air[k])
        if n == 0:
            return empty
        # the trachea: the air region of that slice closest to the body's left-right centre
        body_c = np.argwhere(self.body[k]).mean(axis=0)
        cents = ndi.center_of_mass(air[k], labels, range(1, n + 1))
        dist = [abs(c[1] - body_c[1]) * self.spacing[2] for c in cents]
        seed = np.zeros_like(air)
        seed[k] = labels == (int(np.argmin(dist)) + 1)
        area = seed[k].sum() * self.spacing[1] * self.spacing[2]
        lo, hi = self.settings.trachea_area_mm2
        if not lo <= area <= hi:  # no trachea in the scan (abdomen, or lungs up to the top slice)
            log.info("no airway: air region at the top slice is %.0f mm2, not a trachea", area)
            return empty
        box = morph.bbox_slices(air, (0, 2, 2))
        hu, seed_b, air_b = self.hu[box], seed[box], air[box]
        s = self.settings
        best, best_ml = None, 0.0
        for t in np.arange(s.airway_hu_start, s.airway_hu_stop + 1e-6, s.airway_hu_step):
            grown = (hu < t) & air_b
            lab, _ = ndi.label(grown)
            ids = np.unique(lab[seed_b & grown])
            ids = ids[ids > 0]
            if ids.size == 0:
                continue
            comp = np.isin(lab, ids)
            ml = comp.sum() * self.voxel_ml
            if best is not None and ml > best_ml + s.airway_leak_ml:
                break
            best, best_ml = comp, ml
        out = empty
        if best is not None:
            out[box] = best
        return out

    @cached_property
    def lungs_lr(self) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) lung air masks (patient sides), airway removed, vessels not yet filled."""
        return self._timed("lung_split", self._split_lungs)

    def _split_lungs(self):
        rest = self.air & ~ndi.binary_dilation(self.airway, iterations=1)
        parts = morph.largest_components(rest, 2, self.ml_to_voxels(self.settings.min_lung_ml))
        if len(parts) == 1:
            parts = self._split_touching(parts[0])
        if not parts:
            raise SolverError("no lungs found: no air region of at least "
                              f"{self.settings.min_lung_ml} mL inside the body; is this a chest CT?")
        if len(parts) == 1:
            log.info("only one lung found in %s", self.volume.name)
            empty = np.zeros_like(parts[0])
            return (parts[0], empty) if centroid_lps(self.volume, parts[0])[0] > self.mid_x else (empty, parts[0])
        x0, x1 = (centroid_lps(self.volume, p)[0] for p in parts)
        return (parts[0], parts[1]) if x0 > x1 else (parts[1], parts[0])  # LPS: +x is patient left

    def _split_touching(self, lung: np.ndarray) -> list[np.ndarray]:
        """Two lungs joined (anterior junction): erode until two large parts appear, then give
        every voxel to the nearer part."""
        eroded = lung
        for _ in range(8):
            eroded = ndi.binary_erosion(eroded, structure=np.ones((1, 3, 3), bool))
            parts = morph.largest_components(eroded, 2, self.ml_to_voxels(self.settings.min_lung_ml / 2))
            if len(parts) == 2:
                seeds = np.zeros(lung.shape, np.uint8)
                seeds[parts[0]], seeds[parts[1]] = 1, 2
                _, idx = ndi.distance_transform_edt(seeds == 0, sampling=self.spacing, return_indices=True)
                nearest = seeds[tuple(idx)]
                return [lung & (nearest == 1), lung & (nearest == 2)]
        return [lung]

    @cached_property
    def left_lung(self) -> np.ndarray:
        """Patient-left lung with its vessels (holes filled per axial slice)."""
        return morph.fill_holes_2d(self.lungs_lr[0]) & ~self.airway

    @cached_property
    def right_lung(self) -> np.ndarray:
        """Patient-right lung with its vessels (holes filled per axial slice)."""
        return morph.fill_holes_2d(self.lungs_lr[1]) & ~self.airway

    @cached_property
    def lungs(self) -> np.ndarray:
        return self.left_lung | self.right_lung

    @cached_property
    def lung_field(self) -> np.ndarray:
        """Where lung lesions can be: each lung closed with a `field_closing_mm` ball (which
        pulls in lesions pressed against the chest wall), then holes filled per slice."""
        def run():
            out = np.zeros_like(self.air)
            for lung in self.lungs_lr:
                if lung.any():
                    closed = morph.close_3d(lung, self.settings.field_closing_mm, self.spacing)
                    out |= morph.fill_holes_2d(closed)
            return out
        return self._timed("lung_field", run)

    # -- bone and fat -----------------------------------------------------------------
    @cached_property
    def bone(self) -> np.ndarray:
        def run():
            dense = (self.hu >= self.settings.bone_hu) & self.body
            return morph.remove_small(dense, self.ml_to_voxels(self.settings.min_bone_ml))
        return self._timed("bone", run)

    @cached_property
    def fat(self) -> np.ndarray:
        """Adipose tissue; the partial-volume rims of lungs and skin (same HU) are opened away."""
        def run():
            lo, hi = self.settings.fat_hu
            fat = (self.hu >= lo) & (self.hu <= hi) & self.body
            fat &= ~ndi.binary_dilation(self.air | self.lungs, structure=np.ones((1, 3, 3), bool), iterations=2)
            fat = ndi.binary_opening(fat, structure=np.ones((1, 3, 3), bool))
            return morph.remove_small(fat, self.ml_to_voxels(self.settings.min_fat_ml))
        return self._timed("fat", run)


_CACHE: dict[int, tuple[weakref.ref, CTAnatomy]] = {}


def anatomy_for(volume: Volume, settings: CTSettings = CTSettings()) -> CTAnatomy:
    """The CTAnatomy of `volume`, shared by every solver call on the same Volume object
    (kept while the volume lives; at most 4 volumes)."""
    key = id(volume)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is volume and hit[1].settings == settings:
        return hit[1]
    anatomy = CTAnatomy(volume, settings)
    for k in [k for k, (ref, _) in _CACHE.items() if ref() is None]:
        del _CACHE[k]
    while len(_CACHE) >= 4:
        del _CACHE[next(iter(_CACHE))]
    _CACHE[key] = (weakref.ref(volume), anatomy)
    return anatomy
