"""Brain MR solvers: atlas structures ("left thalamus") and the lesion ("the tumour").

Both take `(volume, grounding, session, settings)` (`settings` is the solvers' SolveSettings;
its `brain` field is a `BrainSettings`) and return `(mask, info)`, masks bool numpy (k, j, i)
on the volume's own grid.

- `solve_atlas`: the template is registered to the volume once (`medvl.language.atlas.register`,
  cached by content), checked to be a brain MR, and the structure is a label lookup; side
  from `grounding.qualifiers.side`.
- `solve_mr_lesion`: inside the registered brain, a voxel is abnormal when its intensity departs
  from its tissue class in this image (robust z over the warped atlas's tissue classes) AND from
  the mirror voxel across the registered midline (robust z of the left-right difference), both in
  the same direction. Opened, the largest connected abnormal region of at least `min_ml` is the
  lesion (holes filled slice by slice, e.g. a ring-enhancing centre); none -> SolverError "not
  found" with the largest region's size. With a session, its box goes to the segmentation engine
  and the engine's mask is kept only when it agrees with the evidence (Dice >= agree_min), as
  for the CT nodule.

Thresholds (z 3.0 / 3.0, hysteresis z 2.5, closing 4 mm, min 1.0 mL) were chosen on brain1
(sample_data, the only brain lesion case we may use, so its Dice is a tuning-set number:
0.72-0.75 with the default registration, which is not bit-reproducible across runs because
ITK's threaded metric sums vary; hysteresis z 2.0 gives 0.65, 1.5 leaks to 84 mL) and on
healthy brains, which must answer "not found": the noisy template (largest region 0.04 mL)
and phantom 0 of medvl.bench.brain_phantom (0.4 mL). A 10 mm-radius lesion inserted into
phantom 0 (never tuned on) is found. `python -m medvl.bench.language_brain`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from medvl.language import atlas as _atlas
from medvl.language.atlas import labels as _labels
from medvl.language.errors import SolverError
from medvl.volume import Volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrainSettings:
    registration: _atlas.RegistrationSettings = _atlas.RegistrationSettings()
    z_tissue: float = 3.0  # robust z of intensity vs its tissue class
    z_asym: float = 3.0  # robust z of the left-right difference
    erode_mm: float = 0.0  # brain mask erosion before looking (skull, dura, partial volume)
    open_mm: float = 1.5  # opening radius of the abnormal voxels (in-plane)
    close_mm: float = 4.0  # closing radius (in-plane) joining parts of one lesion
    z_grow: float = 2.5  # robust z (tissue) of voxels joined to the region by hysteresis
    min_ml: float = 1.0  # smallest region reported as a lesion (~12 mm across): healthy phantom 0 gives 0.4 mL


def _volume_name(volume: Volume) -> str:
    return volume.name or "this volume"


def _registered(volume: Volume, settings: BrainSettings, what: str):
    if volume.modality.upper() == "CT":
        raise SolverError(f"'{what}' is found on a brain MR through a registered atlas, but "
                          f"{_volume_name(volume)} is CT: give a brain MR (or --modality MR if it was mislabelled)")
    t0 = time.perf_counter()
    cached = _atlas.is_cached(volume, settings.registration)
    reg = _atlas.register(volume, settings.registration)
    _atlas.check(reg, volume)
    info = {"atlas": _labels.ATLAS_NAME, "registration": dict(reg.quality), "registration_cached": cached,
            "seconds_registration": round(time.perf_counter() - t0, 3),
            "seconds_registration_stages": dict(reg.seconds)}
    return reg, info


def solve_atlas(volume: Volume, grounding, session, settings):
    """Atlas structure named by the grounding's concept (see module docstring)."""
    concept = grounding.concept
    bs: BrainSettings = getattr(settings, "brain", BrainSettings())
    if concept.name not in _labels.structures():
        raise SolverError(f"{concept.name!r} has no atlas labels; known: {', '.join(sorted(_labels.structures()))}")
    reg, info = _registered(volume, bs, concept.label)
    side = grounding.qualifiers.side
    t0 = time.perf_counter()
    mask = reg.mask(concept.name, side).copy()
    info.update(method="atlas", side=side if side in ("left", "right") else None,
                seconds_lookup=round(time.perf_counter() - t0, 3))
    if not mask.any():
        where = f"{side} " if side in ("left", "right") else ""
        raise SolverError(f"the {where}{concept.label} lies outside the field of view of {_volume_name(volume)}")
    return mask, info


def _robust_z(values: np.ndarray, ref: np.ndarray) -> np.ndarray:
    med = float(np.median(ref))
    mad = float(np.median(np.abs(ref - med))) * 1.4826
    return (values - med) / max(mad, 1e-6)


def _mirror(volume: Volume, reg) -> np.ndarray:
    """The image mirrored across the registered midline (template x = 0), on its own grid (k, j, i)."""
    image = volume.geometry.apply_to_sitk(sitk.GetImageFromArray(np.asarray(volume.array, np.float32)))
    flip = sitk.AffineTransform(3)
    flip.SetMatrix([-1, 0, 0, 0, 1, 0, 0, 0, 1])
    inv = reg.affine.GetInverse()
    t = sitk.CompositeTransform([inv, flip, reg.affine])  # p -> template -> mirrored -> back
    return sitk.GetArrayFromImage(sitk.Resample(image, image, t, sitk.sitkLinear, 0.0, sitk.sitkFloat32))


def _disk(volume: Volume, mm: float) -> np.ndarray:
    """In-plane (j, i) elliptic structuring element of radius `mm`, shape (1, nj, ni)."""
    si, sj, _ = volume.geometry.spacing
    ri, rj = max(1, int(round(mm / si))), max(1, int(round(mm / sj)))
    jj, ii = np.mgrid[-rj:rj + 1, -ri:ri + 1]
    return ((jj / rj) ** 2 + (ii / ri) ** 2 <= 1.0)[None]


def evidence(volume: Volume, reg, bs: BrainSettings, side: str | None = None) -> tuple[np.ndarray, dict]:
    """Bool (k, j, i) abnormal region (largest, may be empty) and what was measured; `side`
    "left"/"right" looks only in that hemisphere (registered midline)."""
    arr = np.asarray(volume.array, dtype=np.float32)
    # the registered brain with its sulci and any lesion-shaped gap filled, slice by slice
    brain = np.stack([ndi.binary_fill_holes(ndi.binary_closing(s, _disk(volume, bs.close_mm)[0]))
                      for s in reg.mask("brain")])
    if bs.erode_mm > 0:
        brain = ndi.binary_erosion(brain, _disk(volume, bs.erode_mm))
    look = brain
    if side in ("left", "right"):
        look = brain & (reg.left_side() if side == "left" else ~reg.left_side())
    zt = np.zeros_like(arr)
    for values in _labels.tissue_classes().values():
        cls = np.isin(reg.labels, values) & brain
        if cls.sum() > 50:
            zt[cls] = _robust_z(arr[cls], arr[cls])
    other = brain & (zt == 0)  # labelled brain outside the four classes (cerebellum, brainstem, ...)
    if other.sum() > 50:
        zt[other] = _robust_z(arr[other], arr[other])
    diff = arr - _mirror(volume, reg)
    za = np.zeros_like(arr)
    za[brain] = _robust_z(diff[brain], diff[brain])
    ab = look & (((zt > bs.z_tissue) & (za > bs.z_asym)) | ((zt < -bs.z_tissue) & (za < -bs.z_asym)))
    ab = ndi.binary_opening(ab, _disk(volume, bs.open_mm))
    if bs.close_mm > 0:  # join an enhancing rim with its dark centre before counting regions
        ab = ndi.binary_closing(ab, _disk(volume, bs.close_mm)) & look
    lab, n = ndi.label(ab, structure=np.ones((3, 3, 3), bool))
    ml = float(np.prod(volume.geometry.spacing)) / 1000.0
    info = {"abnormal_regions": int(n), "abnormal_ml": round(float(ab.sum()) * ml, 2)}
    if n == 0:
        info["largest_ml"] = 0.0
        return np.zeros_like(ab), info
    sizes = np.bincount(lab.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    region = lab == best
    # hysteresis: extend into touching voxels that depart from their tissue class (same sign)
    sign = 1.0 if np.median(zt[region]) > 0 else -1.0
    weak = look & (sign * zt > bs.z_grow)
    wl, _ = ndi.label(weak | region, structure=np.ones((3, 3, 3), bool))
    region = np.isin(wl, np.unique(wl[region]))
    region = np.stack([ndi.binary_fill_holes(ndi.binary_closing(s, _disk(volume, bs.open_mm)[0])) for s in region])
    info.update(largest_ml=round(float(sizes[best - 1]) * ml, 2), region_ml=round(float(region.sum()) * ml, 2),
                region_z_tissue=round(float(np.median(zt[lab == best])), 2))
    return region, info


def solve_mr_lesion(volume: Volume, grounding, session, settings):
    """The brain lesion (see module docstring)."""
    bs: BrainSettings = getattr(settings, "brain", BrainSettings())
    reg, info = _registered(volume, bs, grounding.concept.label)
    t0 = time.perf_counter()
    side = grounding.qualifiers.side if grounding.qualifiers.side in ("left", "right") else None
    region, found = evidence(volume, reg, bs, side)
    info.update(found, side=side, seconds_evidence=round(time.perf_counter() - t0, 3), method="mr-evidence")
    if found["largest_ml"] < bs.min_ml:
        where = f" on the {side} side" if side else ""
        raise SolverError(f"no brain lesion found{where} in {_volume_name(volume)}: no region departs from both the "
                          f"registered tissue model and its mirror across the midline (largest "
                          f"{found['largest_ml']} mL < {bs.min_ml} mL)")
    if getattr(settings, "refine", "hu") == "hu" or session is None:
        return region, info
    from medvl.language.solvers import refine_if_agrees

    mask, more = refine_if_agrees(volume, session, region, settings, "mr-evidence", "engine_evidence_dice")
    info.update(more)
    return mask, info
