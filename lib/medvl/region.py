"""Body region of a volume, inferred: "chest", "head", "abdomen" or "unknown", with the reason.

`infer_region(volume) -> RegionGuess`. The grounder uses it to gate concepts (lungs and
nodules on a chest CT, brain structures on a head MR); "unknown" gates nothing.

CT (Hounsfield units; axial slices are taken along the array axis closest to the patient's
superior-inferior axis, from the geometry's direction cosines):
- per slice, the body is the largest region above -500 HU with its holes filled; the
  aerated fraction is the share of the filled body at air's HU (lungs, airway);
- chest: at least `chest_slices` (30 %) of the body slices have an aerated fraction of
  at least `aerated_min` (15 %): lungs fill a large part of every chest slice, bowel gas does not;
- head: at least 30 % of the body slices are a skull ring (bone > 300 HU enclosing at least
  half of a body cross-section smaller than 350 cm^2);
- abdomen: most body slices are wide (>= 350 cm^2) and hardly aerated (< 5 %);
- else unknown.
MR (arbitrary units): head when the foreground (above a tenth of the 99th percentile) spans
at most 220 mm left-right and 260 mm anterior-posterior (a head; a trunk is wider than
250 mm); else unknown - MR gives no calibrated tissue to tell chest from abdomen.
Checked on the sample cases (lung1, lung2: chest; brain1: head) and seeded synthetic
volumes (tests/test_region.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medvl.volume import Volume

REGION_NAMES = ("chest", "head", "abdomen", "unknown")


@dataclass(frozen=True)
class RegionGuess:
    region: str  # one of REGION_NAMES
    reason: str  # one line: the measurement that decided it

    def as_dict(self) -> dict:
        return {"region": self.region, "reason": self.reason}


def _slice_axis(volume: Volume) -> int:
    """The numpy (k, j, i) axis closest to the patient's superior-inferior (LPS z) axis."""
    d = np.asarray(volume.geometry.direction_matrix)  # columns: i, j, k directions in LPS
    ijk_axis = int(np.argmax(np.abs(d[2, :])))
    return 2 - ijk_axis


def _pixel_mm2(volume: Volume, axis: int) -> float:
    sp_kji = tuple(reversed(tuple(volume.geometry.spacing)))
    return float(np.prod([s for n, s in enumerate(sp_kji) if n != axis]))


def _largest(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, lab, index=range(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def _ct_region(volume: Volume, aerated_min: float = 0.15, chest_slices: float = 0.3) -> RegionGuess:
    axis = _slice_axis(volume)
    arr = np.moveaxis(volume.array, axis, 0)
    step = max(1, min(arr.shape[1:]) // 256)  # in-plane stride: fractions need no full resolution
    px = _pixel_mm2(volume, axis) * step * step
    aerated, skull, wide_flat, body_slices = 0, 0, 0, 0
    for sl in arr[:, ::step, ::step]:
        body = _largest(sl > -500)
        filled = ndimage.binary_fill_holes(body)
        area = float(filled.sum()) * px
        if area < 5000:  # < 50 cm^2: no body cross-section on this slice
            continue
        body_slices += 1
        air = float((filled & (sl <= -500)).sum()) * px / area
        aerated += air >= aerated_min
        bone = sl > 300
        enclosed = float((ndimage.binary_fill_holes(bone) & ~bone).sum()) * px
        skull += area < 35000 and enclosed >= 0.5 * area
        wide_flat += area >= 35000 and air < 0.05
    if not body_slices:
        return RegionGuess("unknown", "no body cross-section above -500 HU")
    if aerated >= chest_slices * body_slices:
        return RegionGuess("chest", f"{aerated} of {body_slices} body slices are >= {aerated_min:.0%} aerated (lungs)")
    if skull >= 0.3 * body_slices:
        return RegionGuess("head", f"{skull} of {body_slices} body slices are a skull ring around soft tissue")
    if wide_flat > 0.5 * body_slices:
        return RegionGuess("abdomen", f"{wide_flat} of {body_slices} body slices are wide (>= 350 cm^2) "
                                      "and not aerated")
    return RegionGuess("unknown", f"{aerated} aerated, {skull} skull and {wide_flat} wide slices of {body_slices}")


def _mr_region(volume: Volume, head_lr_mm: float = 220.0, head_ap_mm: float = 260.0) -> RegionGuess:
    arr = volume.array.astype(np.float32)
    top = float(np.percentile(arr, 99)) if arr.size else 0.0
    if top <= 0:
        return RegionGuess("unknown", "no foreground")
    fg = _largest(arr > 0.1 * top)
    kji = np.argwhere(fg)
    if not len(kji):
        return RegionGuess("unknown", "no foreground")
    corners = np.array([[a, b, c] for a in (kji[:, 2].min(), kji[:, 2].max())
                        for b in (kji[:, 1].min(), kji[:, 1].max()) for c in (kji[:, 0].min(), kji[:, 0].max())])
    lps = volume.geometry.index_to_physical(corners.astype(float))  # corners in ITK (i, j, k) order
    lr, ap = float(np.ptp(lps[:, 0])), float(np.ptp(lps[:, 1]))
    if lr <= head_lr_mm and ap <= head_ap_mm:
        return RegionGuess("head", f"foreground spans {lr:.0f} mm left-right and {ap:.0f} mm front-back "
                                   f"(<= {head_lr_mm:.0f} x {head_ap_mm:.0f} mm: a head)")
    return RegionGuess("unknown", f"foreground spans {lr:.0f} x {ap:.0f} mm: wider than a head, region not told on MR")


def infer_region(volume: Volume) -> RegionGuess:
    """The body region of `volume` (array numpy (k, j, i)), by its modality's rule (module docstring)."""
    modality = (volume.modality or "").upper()
    if modality == "CT":
        return _ct_region(volume)
    if modality == "MR":
        return _mr_region(volume)
    return RegionGuess("unknown", f"modality {volume.modality!r}: no region rule")
