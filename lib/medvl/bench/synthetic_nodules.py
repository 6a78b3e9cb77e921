"""Synthetic solid nodules of known size inserted into the lung fields of a real chest CT.

`insert_nodules(volume, specs, seed)` returns a new Volume and, per nodule, its true
diameter, location type and mask. Seeded: the same call gives the same volume.

Location types (chosen on the original CT's anatomy, `medvl.language.solvers.anatomy`):
- "free": in aerated parenchyma, the ball and 3 mm around it clear of any solid voxel and
  of the lung's border;
- "vessel": touching a pulmonary vessel (a solid voxel inside the filled lungs lies between
  0.5 r and r from the centre), 5 mm or more from the lung's border;
- "pleura": on the costal pleura (the lung's border lies between 0.5 r and r from the centre,
  at most 40 mm deep in the body: chest wall, not mediastinum).
Every ball stays one slice clear of the first and last slices, 10 mm from the other
inserted balls and 20 mm from `avoid` (the expert label).

Partial volume: each voxel's fraction inside the ball is computed on a 3 x 3 x 5 sub-grid
(k gets 5: slices are thick); HU = f * (nodule HU + noise) + (1 - f) * original. The true
mask is f >= 0.5. Arrays are numpy (k, j, i); positions and sizes in mm via `medvl.geometry`
spacing (`anatomy.spacing_kji`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from medvl.language.solvers import morph
from medvl.language.solvers.anatomy import anatomy_for, spacing_kji
from medvl.volume import Volume

LOCATIONS = ("free", "vessel", "pleura")


@dataclass
class InsertedNodule:
    diameter_mm: float
    location: str  # "free", "vessel" or "pleura"
    centre_kji: tuple[float, float, float]  # voxel index (k, j, i) of the centre
    mask: np.ndarray  # bool (k, j, i), voxels at least half inside the ball
    volume_ml: float  # partial-volume sum (fractions x voxel volume): the ball's volume as inserted
    side: str  # "left" / "right" (patient), the lung it was placed in


class _Maps:
    """Distance maps (mm, numpy (k, j, i)) of one CT that decide where a ball may go."""

    def __init__(self, anatomy):
        sp = anatomy.spacing
        shape = anatomy.hu.shape
        # every centre lies in the lungs: the maps are computed on the lungs' box (+ 20 mm)
        self.box = morph.bbox_slices(anatomy.lungs, tuple(int(np.ceil(20.0 / s)) for s in sp))
        hu, lungs = anatomy.hu[self.box], anatomy.lungs[self.box]
        self.aerated = lungs & (hu < -500)
        self.d_solid = ndi.distance_transform_edt(self.aerated, sampling=sp)  # to the nearest non-aerated voxel
        self.d_border = ndi.distance_transform_edt(lungs, sampling=sp)  # to the nearest voxel outside the lungs
        self.d_vessel = ndi.distance_transform_edt(~(lungs & (hu > -300)), sampling=sp)
        self.depth = ndi.distance_transform_edt(anatomy.body[self.box], sampling=sp)  # below the skin
        self.spacing = sp
        self.shape = shape

    def places(self, location: str, r: float) -> np.ndarray:
        """Bool (k, j, i): centres allowed for a ball of radius r (mm) of this location type."""
        if location == "free":
            ok = self.d_solid >= r + 3.0
        elif location == "vessel":
            ok = self.aerated & (self.d_vessel >= 0.5 * r) & (self.d_vessel <= r) & (self.d_border >= r + 5.0)
        elif location == "pleura":
            ok = self.aerated & (self.d_border >= 0.5 * r) & (self.d_border <= r) & (self.depth <= r + 40.0)
        else:
            raise ValueError(f"location {location!r}: choose one of {', '.join(LOCATIONS)}")
        full = np.zeros(self.shape, bool)
        full[self.box] = ok
        margin = int(np.ceil(r / self.spacing[0])) + 1
        full[:margin] = False
        full[len(full) - margin:] = False
        return full


def _ball(shape, centre, r, sp, sub=(5, 3, 3)):
    """(box, fraction inside the ball per voxel of the box) for a ball at `centre` (k, j, i voxels)."""
    lo = [max(int(np.floor(c - r / s)) - 1, 0) for c, s in zip(centre, sp)]
    hi = [min(int(np.ceil(c + r / s)) + 2, n) for c, s, n in zip(centre, sp, shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    grids = [(np.arange(a, b)[:, None] + (np.arange(n) + 0.5)[None, :] / n - 0.5).ravel()
             for a, b, n in zip(lo, hi, sub)]
    dk, dj, di = ((g - c) * s for g, c, s in zip(grids, centre, sp))
    inside = (dk[:, None, None] ** 2 + dj[None, :, None] ** 2 + di[None, None, :] ** 2) <= r * r
    frac = inside.reshape(hi[0] - lo[0], sub[0], hi[1] - lo[1], sub[1], hi[2] - lo[2], sub[2]).mean(axis=(1, 3, 5))
    return box, frac


def insert_nodules(volume: Volume, specs, seed: int = 0, hu: float = 30.0, noise_sd: float = 15.0,
                   avoid: np.ndarray | None = None) -> tuple[Volume, list[InsertedNodule]]:
    """A copy of `volume` with one solid ball per (diameter_mm, location) in `specs`.

    A spec with no room left (every allowed centre taken) is skipped; compare
    `len(result)` with `len(specs)`.
    """
    rng = np.random.default_rng(seed)
    anatomy = anatomy_for(volume)
    sp = spacing_kji(volume)
    arr = np.asarray(volume.array, dtype=np.float32).copy()
    maps = _Maps(anatomy)
    taken = np.zeros(arr.shape, bool)
    if avoid is not None and avoid.any():
        box = morph.bbox_slices(avoid, tuple(int(np.ceil(20.0 / s)) + 1 for s in sp))
        taken[box] = ndi.distance_transform_edt(~avoid[box], sampling=sp) <= 20.0
    out: list[InsertedNodule] = []
    for diameter, location in specs:
        r = diameter / 2.0
        ok = maps.places(location, r) & ~taken
        idx = np.argwhere(ok)
        if len(idx) == 0:
            continue
        centre = tuple(float(v) for v in idx[rng.integers(len(idx))])
        box, frac = _ball(arr.shape, centre, r, sp)
        noise = rng.normal(0.0, noise_sd, frac.shape)
        arr[box] = frac * (hu + noise) + (1 - frac) * arr[box]
        mask = np.zeros(arr.shape, bool)
        mask[box] = frac >= 0.5
        if not mask.any():  # a ball smaller than a voxel: its most covered voxel
            sub = np.zeros(frac.shape, bool)
            sub[np.unravel_index(int(np.argmax(frac)), frac.shape)] = True
            mask[box] = sub
        ck = tuple(int(round(c)) for c in centre)
        side = "left" if anatomy.left_lung[ck] else "right"
        vol_ml = float(frac.sum()) * float(np.prod(sp)) / 1000.0
        out.append(InsertedNodule(float(diameter), location, centre, mask, vol_ml, side))
        near, _ = _ball(arr.shape, centre, r + 10.0, sp, sub=(1, 1, 1))
        taken[near] = True  # the box around the ball grown by 10 mm
    new = Volume(np.round(arr).astype(volume.array.dtype), volume.geometry, volume.modality,
                 f"{volume.name}+{len(out)} synthetic nodules")
    return new, out
