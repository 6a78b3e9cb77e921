"""Template -> user's T1: affine then B-spline registration (SimpleITK), cached per volume.

`register(volume)` returns a `BrainRegistration` whose `labels` are the Desikan-Killiany
values warped with nearest neighbour onto the volume's exact grid (numpy (k, j, i), the
volume's own origin/spacing/direction), so every structure afterwards is a lookup.

Method (all in LPS physical space, so the image's direction cosines, anisotropy and field of
view are handled by the geometry, never by array axes):
1. Both images are smoothed and resampled to an isotropic `work_mm` grid (the image's own
   direction; the template's brain mask, dilated by `mask_margin_mm`, limits the metric).
2. Affine: centred on the images' centres of mass (moments), then a similarity transform and
   a full affine, Mattes mutual information, three resolutions (shrink 4, 2, 1).
3. Deformable: a cubic B-spline (control points every `bspline_mm`) on top of the affine,
   Mattes MI, L-BFGS-B, two resolutions.
   Before registering, a full head is reduced to a rough brain (Otsu foreground, eroded,
   largest component, dilated back) that must be head-sized: a chest or abdomen is refused
   in seconds.
4. Brain check (`check`): the template must match the image (Mattes mutual information of the
   affine stage >= `min_mi`), lie mostly inside the field of view (`min_fov`) with a plausible
   size (affine determinant within `det_range`). The correlation ratio of image intensity over
   the warped tissue classes (`eta2`) is reported, not gated: brain1's post-contrast T1 has
   almost no grey/white contrast (0.04).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from medvl.language.atlas import labels as _labels
from medvl.language.errors import SolverError
from medvl.volume import Volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationSettings:
    work_mm: float = 2.0  # isotropic grid both images are resampled to for the metric
    mask_margin_mm: float = 6.0  # template brain mask dilation limiting the metric
    strip_erode_mm: float = 8.0  # erosion that separates the brain from the scalp (rough skull strip)
    bins: int = 32  # Mattes MI histogram bins
    sampling: float = 0.15  # fraction of voxels sampled by the metric (random, seeded)
    affine_iterations: int = 60  # per resolution (120: same Dice on phantom 0 and brain1, brain1 affine 2x slower)
    deformable: bool = True  # False: affine only
    bspline_mm: float = 40.0  # B-spline control point spacing
    bspline_work_mm: float = 4.0  # isotropic grid of the deformable stage (one resolution)
    bspline_sampling: float = 0.1  # metric sampling fraction of the deformable stage
    bspline_iterations: int = 25
    # SimpleITK worker threads. One, so the same image always gives the same labels: with 2 the
    # metric's per-thread sums change from run to run, and brain1's lesion Dice (which depends on
    # the registered midline) came out 0.38 / 0.53 / 0.62 in three runs; with 1 it is 0.737 in
    # every run, at the same time on this 2-core machine (26 s vs 18-25 s, machine loaded).
    threads: int = 1
    seed: int = 7  # metric sampling seed: the same image gives the same labels
    # brain check thresholds. Head-size gate (before registering), measured: brain1 2,056 mL /
    # 184 mm, the template 1,881 mL / 180 mm, lung1 relabelled MR 8,399 mL / 290 mm, lung2 17,382 mL.
    max_brain_ml: float = 3500.0
    min_brain_ml: float = 300.0
    max_extent_mm: float = 230.0
    # after registering: Mattes MI (-metric) of the affine stage, measured: validation phantom 1.30,
    # healthy template 1.94, brain1 0.30, lung1 relabelled MR 0.02
    min_mi: float = 0.1
    min_fov: float = 0.3  # fraction of the template brain that lies inside the image
    det_range: tuple[float, float] = (0.4, 2.5)  # affine volume scaling template -> image


@dataclass
class BrainRegistration:
    """Atlas labels on one volume's grid, with the transforms and the brain check."""
    labels: np.ndarray  # uint16 (k, j, i): Desikan-Killiany value per voxel of the volume
    affine: sitk.Transform  # volume (fixed) LPS point -> template LPS point, affine part
    transform: sitk.Transform  # volume LPS point -> template LPS point, affine + B-spline
    quality: dict  # eta2, fov, det, metric values
    seconds: dict  # stage -> seconds
    settings: RegistrationSettings
    _masks: dict = field(default_factory=dict)  # (structure, side) -> bool mask, filled on demand
    _side: np.ndarray | None = None  # bool (k, j, i): voxel lies on the template's left (+x LPS)

    def mask(self, structure: str, side: str | None = None) -> np.ndarray:
        """Bool (k, j, i) mask of a structure of `medvl.language.atlas.labels.structures()`;
        `side` "left"/"right" (patient's) or None/"both" for the whole structure."""
        key = (structure, side if side in ("left", "right") else None)
        if key not in self._masks:
            spec = _labels.structures()[structure]
            if key[1] and not spec.paired:  # unpaired structure: split at the registered midline
                whole = np.isin(self.labels, spec.values(None))
                left = self.left_side()
                self._masks[key] = whole & (left if key[1] == "left" else ~left)
            else:
                self._masks[key] = np.isin(self.labels, spec.values(key[1]))
        return self._masks[key]

    def left_side(self) -> np.ndarray:
        """Bool (k, j, i): voxels whose template point has x > 0 (LPS: the patient's left)."""
        if self._side is None:
            self._side = self._lookup_side()
        return self._side

    def _lookup_side(self) -> np.ndarray:
        t = _labels.template_image()
        arr = np.zeros(sitk.GetArrayViewFromImage(t).shape, np.uint8)  # (k, j, i) of the template
        # template physical x of each i column (the ICBM file's direction is axis-aligned)
        xs = np.array([t.TransformIndexToPhysicalPoint((i, 0, 0))[0] for i in range(t.GetSize()[0])])
        arr[:, :, xs > 0] = 1
        img = sitk.GetImageFromArray(arr)
        img.CopyInformation(t)
        out = sitk.Resample(img, self._reference, _dense(self.transform, self._reference, self.settings),
                            sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        return sitk.GetArrayFromImage(out).astype(bool)

    _reference: sitk.Image | None = None  # an empty image on the volume's grid


def _volume_key(volume: Volume) -> str:
    h = hashlib.sha1(np.ascontiguousarray(volume.array).view(np.uint8))
    g = volume.geometry
    h.update(repr((volume.array.shape, str(volume.array.dtype), g.origin, g.spacing, g.direction)).encode())
    return h.hexdigest()


def _grid_image(volume: Volume) -> sitk.Image:
    img = sitk.GetImageFromArray(np.asarray(volume.array, dtype=np.float32))
    return volume.geometry.apply_to_sitk(img)


def _isotropic(image: sitk.Image, mm: float) -> sitk.Image:
    """Gaussian-smoothed (sigma ~ half the new spacing) resample to `mm` isotropic, same direction."""
    sp = np.array(image.GetSpacing())
    sigma = [max(0.0, (mm ** 2 - s ** 2)) ** 0.5 / 2.355 for s in sp]
    smooth = sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigma]) if max(sigma) > 0.2 else image
    size = [max(1, int(np.ceil(n * s / mm))) for n, s in zip(image.GetSize(), sp)]
    origin = image.TransformContinuousIndexToPhysicalPoint([-0.5 + mm / (2 * s) for s in sp])
    return sitk.Resample(smooth, size, sitk.Transform(), sitk.sitkLinear, origin, [mm] * 3,
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def _normalise(image: sitk.Image) -> sitk.Image:
    a = sitk.GetArrayViewFromImage(image)
    fg = a[a > np.percentile(a, 2)]
    lo, hi = (np.percentile(fg, [0.5, 99.5]) if fg.size else (0.0, 1.0))
    return sitk.Clamp((image - float(lo)) / float(max(hi - lo, 1e-6)), sitk.sitkFloat32, 0.0, 1.0)


def _rough_brain(image: sitk.Image, erode_mm: float) -> sitk.Image:
    """0/1 rough brain of a normalised head image on an isotropic grid: foreground above half
    its Otsu level, eroded (cuts the scalp off at the dark skull), largest component, dilated
    back, holes filled. On a skull-stripped image it keeps the brain."""
    a = sitk.GetArrayFromImage(image)
    fg_values = a[a > 0.02]
    if fg_values.size < 100:
        return image > -1
    hist, edges = np.histogram(fg_values, bins=128)
    p = hist / hist.sum()
    w = np.cumsum(p)
    mu = np.cumsum(p * edges[:-1])
    between = (mu[-1] * w - mu) ** 2 / np.maximum(w * (1 - w), 1e-12)
    otsu = float(edges[int(np.argmax(between))])
    fg = image > 0.5 * otsu
    r = max(1, int(round(erode_mm / image.GetSpacing()[0])))
    core = sitk.BinaryErode(fg, [r] * 3)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(core), sortByObjectSize=True) == 1
    brain = sitk.BinaryFillhole(sitk.BinaryDilate(cc, [r + 1] * 3)) & fg
    return sitk.BinaryFillhole(brain)


def _head_check(rough: sitk.Image, volume: Volume, s: RegistrationSettings) -> dict:
    """Body-region gate before registering: the rough brain must be head-sized (SolverError if not)."""
    a = sitk.GetArrayViewFromImage(rough).astype(bool)
    mm = rough.GetSpacing()[0]
    ml = float(a.sum()) * mm ** 3 / 1000.0
    extent = max(float(np.ptp(np.nonzero(a)[ax])) * mm for ax in range(3)) if a.any() else 0.0
    if ml > s.max_brain_ml or extent > s.max_extent_mm or ml < s.min_brain_ml:
        raise SolverError(f"{volume.name or 'this volume'} does not look like a head MR (central tissue "
                          f"{ml:.0f} mL, {extent:.0f} mm across; a head gives {s.min_brain_ml:.0f}-"
                          f"{s.max_brain_ml:.0f} mL within {s.max_extent_mm:.0f} mm): "
                          "brain atlas structures need a head MR")
    return {"rough_brain_ml": round(ml, 1), "rough_brain_extent_mm": round(extent, 1)}


def _method(settings: RegistrationSettings, moving_mask: sitk.Image) -> sitk.ImageRegistrationMethod:
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(settings.bins)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(settings.sampling, settings.seed)
    r.SetMetricMovingMask(moving_mask)
    r.SetInterpolator(sitk.sitkLinear)
    return r


def _affine(fixed, moving, mask, s: RegistrationSettings) -> tuple[sitk.Transform, float]:
    init = sitk.CenteredTransformInitializer(fixed > 0.05, moving > 0.05, sitk.Similarity3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    current = init
    for stage in (sitk.Similarity3DTransform, sitk.AffineTransform):
        if stage is sitk.AffineTransform:
            aff = sitk.AffineTransform(3)
            aff.SetMatrix(current.GetMatrix())
            aff.SetTranslation(current.GetTranslation())
            aff.SetCenter(current.GetCenter())
            current = aff
        r = _method(s, mask)
        r.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3,
                                                   numberOfIterations=s.affine_iterations,
                                                   gradientMagnitudeTolerance=1e-6)
        r.SetOptimizerScalesFromPhysicalShift()
        r.SetShrinkFactorsPerLevel([4, 2, 1])
        r.SetSmoothingSigmasPerLevel([2, 1, 0])
        r.SetInitialTransform(current, inPlace=True)
        r.Execute(fixed, moving)
    return current, r.GetMetricValue()


def _bspline(fixed, moving, mask, affine, s: RegistrationSettings) -> tuple[sitk.Transform, float]:
    if s.bspline_work_mm != s.work_mm:
        fixed, moving = _isotropic(fixed, s.bspline_work_mm), _isotropic(moving, s.bspline_work_mm)
        mask = sitk.Resample(mask, moving, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
    extent = [n * sp for n, sp in zip(fixed.GetSize(), fixed.GetSpacing())]
    mesh = [max(1, int(round(e / s.bspline_mm))) for e in extent]
    bs = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    r = _method(s, mask)
    r.SetMetricSamplingPercentage(s.bspline_sampling, s.seed)
    r.SetMovingInitialTransform(affine)
    r.SetInitialTransform(bs, inPlace=True)
    r.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=s.bspline_iterations,
                           maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=4 * s.bspline_iterations,
                           costFunctionConvergenceFactor=1e7)
    r.SetShrinkFactorsPerLevel([1])
    r.SetSmoothingSigmasPerLevel([0])
    r.Execute(fixed, moving)
    return sitk.CompositeTransform([affine, bs]), r.GetMetricValue()


def _dense(transform: sitk.Transform, ref: sitk.Image, s: RegistrationSettings) -> sitk.Transform:
    """The affine + B-spline transform sampled as a displacement field on a `work_mm` version of
    `ref`'s grid (same direction and extent): exact for the affine part, and several times faster
    to apply per voxel than the cubic B-spline on a fine grid."""
    if not s.deformable:
        return transform
    sp = np.array(ref.GetSpacing())
    size = [max(2, int(np.ceil(n * p / s.work_mm)) + 2) for n, p in zip(ref.GetSize(), sp)]
    step = [n * p / max(m - 3, 1) for n, p, m in zip(ref.GetSize(), sp, size)]
    origin = ref.TransformContinuousIndexToPhysicalPoint([-st / p for st, p in zip(step, sp)])
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, size, origin, step,
                                              ref.GetDirection())
    return sitk.DisplacementFieldTransform(field)


def _eta2(image: np.ndarray, labels: np.ndarray) -> float:
    """Correlation ratio of `image` over the tissue classes of `labels` (0..1)."""
    groups = [image[np.isin(labels, v)] for v in _labels.tissue_classes().values()]
    groups = [g for g in groups if g.size > 20]
    if len(groups) < 3:
        return 0.0
    allv = np.concatenate(groups)
    total = float(((allv - allv.mean()) ** 2).sum())
    between = sum(g.size * (g.mean() - allv.mean()) ** 2 for g in groups)
    return float(between / total) if total > 0 else 0.0


def compute(volume: Volume, settings: RegistrationSettings = RegistrationSettings()) -> BrainRegistration:
    """Register the template to `volume` (no cache; see `register`)."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(settings.threads)
    seconds = {}
    t0 = time.perf_counter()
    image = _grid_image(volume)
    template = _labels.template_image()
    fixed = _normalise(_isotropic(image, settings.work_mm))
    rough = _rough_brain(fixed, settings.strip_erode_mm)
    head = _head_check(rough, volume, settings)
    fixed = sitk.Mask(fixed, rough)  # full head -> rough brain
    moving = _normalise(_isotropic(template, settings.work_mm))
    radius = max(1, int(round(settings.mask_margin_mm / settings.work_mm)))
    mask = sitk.BinaryDilate(moving > 0.02, [radius] * 3)
    seconds["prepare"] = round(time.perf_counter() - t0, 2)
    t1 = time.perf_counter()
    affine, m_aff = _affine(fixed, moving, mask, settings)
    seconds["affine"] = round(time.perf_counter() - t1, 2)
    transform, m_def = affine, None
    if settings.deformable:
        t2 = time.perf_counter()
        transform, m_def = _bspline(fixed, moving, mask, affine, settings)
        seconds["deformable"] = round(time.perf_counter() - t2, 2)
    t3 = time.perf_counter()
    ref = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    ref.CopyInformation(image)
    labels = sitk.GetArrayFromImage(sitk.Resample(_labels.label_image(), ref, _dense(transform, ref, settings),
                                                  sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16))
    seconds["warp"] = round(time.perf_counter() - t3, 2)
    arr = np.asarray(volume.array, dtype=np.float32)
    det = float(abs(np.linalg.det(np.array(affine.GetMatrix()).reshape(3, 3))))
    inside = float(labels.astype(bool).sum() * np.prod(volume.geometry.spacing))
    full = float(sitk.GetArrayViewFromImage(_labels.label_image()).astype(bool).sum()
                 * np.prod(_labels.label_image().GetSpacing()))
    quality = {**head, "eta2": round(_eta2(arr, labels), 3), "fov": round(inside * det / full, 3) if full else 0.0,
               "det": round(1.0 / det if det else 0.0, 3), "metric_affine": round(m_aff, 4),
               "metric_deformable": None if m_def is None else round(m_def, 4)}
    seconds["total"] = round(time.perf_counter() - t0, 2)
    out = BrainRegistration(labels=labels, affine=affine, transform=transform,
                            quality=quality, seconds=seconds, settings=settings)
    out._reference = ref
    log.info("brain registration of %s: %s, %s", volume.name or "volume", quality, seconds)
    return out


def check(reg: BrainRegistration, volume: Volume) -> None:
    """SolverError (one line) unless the registration says this is a brain MR."""
    q, s = reg.quality, reg.settings
    name = volume.name or "this volume"
    if volume.modality.upper() == "CT":
        raise SolverError(f"brain atlas structures need an MR, but {name} is CT: give a brain MR "
                          "(or --modality MR if it was mislabelled)")
    if not (s.det_range[0] <= q["det"] <= s.det_range[1]) or q["fov"] < s.min_fov:
        raise SolverError(f"the brain template does not fit {name} (size ratio {q['det']}, "
                          f"{q['fov']:.0%} of a brain in view): brain atlas structures need a head MR")
    if -q["metric_affine"] < s.min_mi:
        raise SolverError(f"{name} does not look like a brain MR (mutual information with the registered template "
                          f"{-q['metric_affine']:.2f} < {s.min_mi}): brain atlas structures need a head MR")


_CACHE: "OrderedDict[tuple, BrainRegistration]" = OrderedDict()
_LOCK = threading.Lock()
CACHE_SIZE = 4


def register(volume: Volume, settings: RegistrationSettings = RegistrationSettings()) -> BrainRegistration:
    """The cached registration of `volume` (keyed by its content hash and geometry, so a
    re-read of the same file hits too); computed on first use (tens of seconds)."""
    key = (_volume_key(volume), settings)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    reg = compute(volume, settings)
    with _LOCK:
        _CACHE[key] = reg
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return reg


def is_cached(volume: Volume, settings: RegistrationSettings = RegistrationSettings()) -> bool:
    with _LOCK:
        return (_volume_key(volume), settings) in _CACHE


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()
