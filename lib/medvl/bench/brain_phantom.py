"""A brain MR with known anatomy: the atlas template under a known random smooth deformation.

`make_phantom(seed)` deforms the ICBM 2009c template (and, with the same transform, its
Desikan-Killiany labels) by a seeded random affine (rotation, anisotropic scale, translation)
composed with a random cubic B-spline displacement, resamples both onto a re-oriented grid
(axes permuted and flipped through the direction matrix) with thick slices (default
1 x 1 x 3 mm), and applies a smooth multiplicative bias field and Rician noise. The labels
are the truth that `medvl.language.atlas.register` must recover.

Used by `medvl.bench.language_brain` and the tests; never by the product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from medvl.geometry import Geometry
from medvl.language.atlas import labels as _labels
from medvl.volume import Volume

# direction matrices (columns: physical LPS unit vector of index axes i, j, k)
ORIENTATIONS = {
    "axial": np.eye(3),
    "sagittal": np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float),  # i: anterior, j: inferior, k: left
    "coronal": np.array([[-1, 0, 0], [0, 0, 1], [0, -1, 0]], float),  # i: right, j: inferior, k: posterior
}


@dataclass(frozen=True)
class PhantomSettings:
    spacing: tuple[float, float, float] = (1.0, 1.0, 3.0)  # output grid, ITK (i, j, k) mm
    orientation: str = "sagittal"  # key of ORIENTATIONS (the thick axis k is then left-right)
    rotation_deg: float = 10.0  # max |angle| about each axis
    scale: float = 0.08  # max |log scale| per axis
    shift_mm: float = 10.0  # max |translation| per axis
    bspline_mm: float = 40.0  # control point spacing of the random deformation
    bspline_sigma_mm: float = 3.0  # std of control point displacements
    bias: float = 0.2  # max |log gain| of the linear + quadratic bias field
    noise: float = 0.03  # Rician noise std, fraction of the 99th percentile brain intensity
    margin_mm: float = 15.0  # field of view beyond the template brain


@dataclass
class Phantom:
    volume: Volume  # the deformed, re-oriented, noisy T1 (float32, modality "MR")
    labels: np.ndarray  # uint16 (k, j, i): Desikan-Killiany values, warped with the same transform
    transform: sitk.Transform  # phantom LPS point -> template LPS point


def _random_transform(rng: np.random.Generator, template: sitk.Image, s: PhantomSettings) -> sitk.Transform:
    centre = template.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in template.GetSize()])
    aff = sitk.AffineTransform(3)
    aff.SetCenter(centre)
    angles = np.deg2rad(rng.uniform(-s.rotation_deg, s.rotation_deg, 3))
    rot = sitk.Euler3DTransform(centre, *angles)
    scale = np.diag(np.exp(rng.uniform(-s.scale, s.scale, 3)))
    aff.SetMatrix((np.array(rot.GetMatrix()).reshape(3, 3) @ scale).ravel().tolist())
    aff.SetTranslation(rng.uniform(-s.shift_mm, s.shift_mm, 3).tolist())
    extent = [n * sp for n, sp in zip(template.GetSize(), template.GetSpacing())]
    mesh = [max(1, int(round(e / s.bspline_mm))) for e in extent]
    bs = sitk.BSplineTransformInitializer(template, mesh, order=3)
    params = rng.normal(0.0, s.bspline_sigma_mm, len(bs.GetParameters()))
    bs.SetParameters(params.tolist())
    return sitk.CompositeTransform([aff, bs])  # p -> bs -> aff: phantom point -> template point


def _grid(template: sitk.Image, s: PhantomSettings) -> sitk.Image:
    """An empty image with the phantom's direction/spacing covering the template's brain."""
    arr = sitk.GetArrayViewFromImage(template) > 0
    kk, jj, ii = np.nonzero(arr)
    corners = np.array([[i, j, k] for i in (ii.min(), ii.max()) for j in (jj.min(), jj.max())
                        for k in (kk.min(), kk.max())], float)
    pts = np.array([template.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])
    lo, hi = pts.min(0) - s.margin_mm, pts.max(0) + s.margin_mm
    d = ORIENTATIONS[s.orientation]
    # box corners in index-axis coordinates
    box = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    proj = box @ d  # coordinate along each index axis
    start = proj.min(0)
    size = [int(np.ceil((proj[:, a].max() - start[a]) / s.spacing[a])) + 1 for a in range(3)]
    img = sitk.Image(size, sitk.sitkFloat32)
    img.SetSpacing(s.spacing)
    img.SetDirection(d.ravel().tolist())
    img.SetOrigin((d @ start).tolist())
    return img


def make_phantom(seed: int = 0, settings: PhantomSettings = PhantomSettings()) -> Phantom:
    """The seeded phantom (see the module docstring). Deterministic for a given seed and settings."""
    rng = np.random.default_rng(seed)
    template = _labels.template_image()
    labels_t = sitk.Resample(_labels.label_image(), template, sitk.Transform(), sitk.sitkNearestNeighbor,
                             0, sitk.sitkUInt16)
    transform = _random_transform(rng, template, settings)
    grid = _grid(template, settings)
    # partial volume of the thick slices: blur along the output grid's thick axis before sampling
    sigma = [max(0.5, (sp ** 2 - 1.0) ** 0.5 / 2.355) for sp in settings.spacing]
    d = ORIENTATIONS[settings.orientation]
    sigma_lps = np.abs(d) @ np.array(sigma)  # approximately aligned with the template's axes
    tmpl_sigma = [float(sigma_lps[int(np.argmax(np.abs(np.array(template.GetDirection()).reshape(3, 3)[:, a])))])
                  for a in range(3)]
    blurred = sitk.SmoothingRecursiveGaussian(template, tmpl_sigma)
    image = sitk.Resample(blurred, grid, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    labels = sitk.Resample(labels_t, grid, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    arr = sitk.GetArrayFromImage(image)
    # bias: exp of a random linear + quadratic polynomial in normalised (k, j, i) coordinates
    coords = np.meshgrid(*[np.linspace(-1, 1, n) for n in arr.shape], indexing="ij")
    poly = sum(rng.uniform(-1, 1) * c for c in coords) + sum(rng.uniform(-0.5, 0.5) * c * c for c in coords)
    poly *= settings.bias / max(float(np.abs(poly).max()), 1e-6)
    arr = arr * np.exp(poly)
    sd = settings.noise * float(np.percentile(arr[arr > 0], 99))
    arr = np.sqrt((arr + rng.normal(0, sd, arr.shape)) ** 2 + rng.normal(0, sd, arr.shape) ** 2)
    volume = Volume(arr.astype(np.float32), Geometry.from_sitk(grid), modality="MR", name=f"brain-phantom-{seed}")
    return Phantom(volume=volume, labels=sitk.GetArrayFromImage(labels), transform=transform)


def healthy_template(noise: float = 0.03, seed: int = 0) -> Volume:
    """The undeformed template with Rician noise: a healthy brain MR for "not found" checks."""
    rng = np.random.default_rng(seed)
    t = _labels.template_image()
    arr = sitk.GetArrayFromImage(t).astype(np.float32)
    sd = noise * float(np.percentile(arr[arr > 0], 99))
    arr = np.sqrt((arr + rng.normal(0, sd, arr.shape)) ** 2 + rng.normal(0, sd, arr.shape) ** 2)
    return Volume(arr.astype(np.float32), Geometry.from_sitk(t), modality="MR", name="healthy-template")


def insert_lesion(ph: Phantom, radius_mm: float = 10.0, contrast: float = 0.5,
                  seed: int = 0) -> tuple[Volume, np.ndarray]:
    """A copy of the phantom with a spherical lesion (intensity x (1 + contrast), enhancing rim
    twice as bright) centred in the deepest point of the left cerebral white matter; returns
    (volume, bool (k, j, i) truth). Not used to choose any threshold: a held-aside check."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    vol = ph.volume
    si, sj, sk = vol.geometry.spacing
    left_wm = ph.labels == _labels.label_table()["Left-Cerebral-White-Matter"]
    depth = ndi.distance_transform_edt(left_wm, sampling=(sk, sj, si))
    centre = np.array(np.unravel_index(int(np.argmax(depth)), depth.shape), float)  # (k, j, i)
    kk, jj, ii = np.meshgrid(*[np.arange(n) for n in vol.array.shape], indexing="ij")
    r = np.sqrt(((kk - centre[0]) * sk) ** 2 + ((jj - centre[1]) * sj) ** 2 + ((ii - centre[2]) * si) ** 2)
    truth = r <= radius_mm
    arr = vol.array.copy()
    gain = np.where(r > radius_mm - 2.5, 1 + 2 * contrast, 1 + contrast)
    arr[truth] = arr[truth] * gain[truth] + rng.normal(0, 0.02 * float(arr[truth].mean()), int(truth.sum()))
    return Volume(arr.astype(np.float32), vol.geometry, modality="MR", name=vol.name + "-lesion"), truth
