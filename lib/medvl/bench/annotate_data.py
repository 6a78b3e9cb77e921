"""The batch of `medvl bench-annotate`: distinct volumes made from the three sample scans, and
a manifest with one expert box per volume in physical LPS millimetres.

Each case is one `Recipe` applied to a sample scan (lung1, lung2 CT; brain1 MR) with
SimpleITK, in this order, every step keeping the physical geometry right:
1. crop a region around the expert label's largest slice (`RegionOfInterest`: the origin
   moves with it; few slices, so the whole bench runs in minutes on two cores);
2. optionally resample to a coarser in-plane / finer through-plane spacing (linear for the
   image, nearest neighbour for the label; same origin and direction);
3. re-orient the voxel grid (`DICOMOrient` to a three-letter code: axis permutations and
   flips, origin and direction rewritten so every voxel stays where it was in space);
4. write it as .nii.gz, .nrrd or .mha (the label alongside, for the box and for checks).

The box of a case is the expert label's bounding box on its largest axial slice (the slice
across the index axis that points most along physical z, whichever of i, j, k that is after
re-orientation), grown by `BOX_MARGIN_MM`, as two LPS corners: one physical box that
`medvl annotate` turns back into voxels of that image (`annotator.to_voxel`). With
`text_on_ct` the CT rows also ask for the text object "nodule" (off by default: on crops this
small the lung-field check finds no lungs and refuses it, so it would time a refusal).

Arrays from SimpleITK are numpy (k, j, i); sizes, indices and spacings here are ITK (i, j, k).
Deterministic: the same recipes give the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "sample_data"
SOURCES = {"lung1": "CT", "lung2": "CT", "brain1": "MR"}
BOX_MARGIN_MM = 2.0
ORIENTS = ("LPS", "RAS", "PIR", "LPI", "ASL", "RAI", "SLA", "IRP")  # DICOMOrient codes; 4 keep z on k
FORMATS = (".nii.gz", ".nrrd", ".mha")


@dataclass(frozen=True)
class Recipe:
    """How one case is made from its source scan (ITK (i, j, k) order throughout)."""
    case_id: str
    source: str  # "lung1", "lung2" or "brain1"
    half_ij: int  # crop half-width in-plane, source voxels (around the label's centre)
    half_k: int  # source slices kept either side of the label's largest slice
    shift_ij: tuple[int, int] = (0, 0)  # crop centre offset from the label's centre, source voxels
    spacing_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # new spacing = source spacing * scale
    orient: str = "LPS"  # DICOMOrient code of the written grid
    fmt: str = ".nii.gz"


def recipes(count: int = 24, half_ij: int | None = None, half_k: int | None = None) -> list[Recipe]:
    """`count` distinct recipes, cycling lung1, lung2, brain1 (so any prefix mixes all three).

    Crop sizes, offsets, spacings, orientations and formats vary with the case number; give
    `half_ij` / `half_k` to force small crops (tests)."""
    scales = ((1.0, 1.0, 1.0), (1.5, 1.5, 1.0), (1.0, 1.0, 1.0), (1.25, 1.25, 0.5))  # 0.5: slices twice as thin
    shifts = ((0, 0), (6, -4), (-5, 7), (3, 3), (-7, -2))
    base_half = {"lung1": 56, "lung2": 72, "brain1": 60}
    out = []
    for n in range(count):
        source = tuple(SOURCES)[n % 3]
        r = n // 3  # the case's number among those of its source
        scale = scales[r % len(scales)]
        orient = ORIENTS[(r + 3 * (n % 3)) % len(ORIENTS)]  # every code once per source over 8 cases
        out.append(Recipe(
            case_id=f"{source}_{r:02d}_{orient}",
            source=source,
            half_ij=half_ij or base_half[source] + 8 * (r % 3),
            half_k=half_k if half_k is not None else (1 if scale[2] < 1 else 1 + r % 2),
            shift_ij=shifts[r % len(shifts)],
            spacing_scale=scale,
            orient=orient,
            fmt=FORMATS[(n + r) % len(FORMATS)]))
    return out


def _read(name: str, kind: str) -> sitk.Image:
    return sitk.ReadImage(str(SAMPLE_DIR / f"{name}_{kind}.nii.gz"))


def _crop(image: sitk.Image, label: sitk.Image, recipe: Recipe) -> tuple[sitk.Image, sitk.Image]:
    lab = sitk.GetArrayViewFromImage(label) > 0  # (k, j, i)
    ks, js, is_ = np.nonzero(lab)
    size = image.GetSize()
    ci, cj = int(round(is_.mean())) + recipe.shift_ij[0], int(round(js.mean())) + recipe.shift_ij[1]
    ck = int(np.argmax(lab.sum(axis=(1, 2))))
    lo = [max(0, ci - recipe.half_ij), max(0, cj - recipe.half_ij), max(0, ck - recipe.half_k)]
    hi = [min(size[0], ci + recipe.half_ij), min(size[1], cj + recipe.half_ij), min(size[2], ck + recipe.half_k + 1)]
    extent = [h - l for h, l in zip(hi, lo)]
    return (sitk.RegionOfInterest(image, extent, lo), sitk.RegionOfInterest(label, extent, lo))


def _resample(image: sitk.Image, label: sitk.Image, scale) -> tuple[sitk.Image, sitk.Image]:
    if all(s == 1.0 for s in scale):
        return image, label
    spacing = [sp * s for sp, s in zip(image.GetSpacing(), scale)]
    size = [max(1, int(n * sp / new)) for n, sp, new in zip(image.GetSize(), image.GetSpacing(), spacing)]
    def grid(img, interp):
        return sitk.Resample(img, size, sitk.Transform(), interp, image.GetOrigin(), spacing, image.GetDirection(),
                             0, img.GetPixelID())
    return grid(image, sitk.sitkLinear), grid(label, sitk.sitkNearestNeighbor)


def make_case(recipe: Recipe) -> tuple[sitk.Image, sitk.Image]:
    """-> (image, label) of `recipe`, geometry set (see the module docstring)."""
    image, label = _read(recipe.source, "image"), _read(recipe.source, "label")
    image, label = _crop(image, label, recipe)
    image, label = _resample(image, label, recipe.spacing_scale)
    return sitk.DICOMOrient(image, recipe.orient), sitk.DICOMOrient(label, recipe.orient)


def axial_axis(image: sitk.Image) -> int:
    """The ITK index axis (0 = i, 1 = j, 2 = k) that points most along physical z."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)  # column c: LPS unit vector of axis c
    return int(np.argmax(np.abs(direction[2])))


def expert_box_lps(label: sitk.Image, margin_mm: float = BOX_MARGIN_MM) -> list[float]:
    """Two LPS corners (x0, y0, z0, x1, y1, z1), mm, of the label's box on its largest axial slice,
    grown by `margin_mm` in-plane (clipped to the image). The corners are voxel centres."""
    lab = sitk.GetArrayViewFromImage(label) > 0  # (k, j, i)
    axis = axial_axis(label)  # ITK axis; numpy axis 2 - axis
    other = tuple(a for a in (0, 1, 2) if a != axis)
    area = lab.sum(axis=tuple(2 - a for a in other))
    index = int(np.argmax(area))
    nz = np.argwhere(lab)  # rows (k, j, i)
    nz = nz[nz[:, 2 - axis] == index][:, ::-1]  # ITK (i, j, k) of the label on that slice
    lo, hi = nz.min(axis=0), nz.max(axis=0)
    size, spacing = label.GetSize(), label.GetSpacing()
    for a in other:
        grow = int(round(margin_mm / spacing[a]))
        lo[a], hi[a] = max(0, lo[a] - grow), min(size[a] - 1, hi[a] + grow)
    c0 = label.TransformIndexToPhysicalPoint([int(v) for v in lo])
    c1 = label.TransformIndexToPhysicalPoint([int(v) for v in hi])
    return [round(float(v), 3) for v in (*c0, *c1)]


def build(out_dir, count: int = 24, text_on_ct: bool = False, half_ij: int | None = None,
          half_k: int | None = None) -> dict:
    """Write `count` cases and `manifest.json` into `out_dir`; -> {"manifest", "cases": [...]}.

    Each case entry: case_id, source, modality, image, label, size_ijk, spacing, direction,
    origin, axial_axis, box_lps, sha256 of the image file, and the recipe."""
    import hashlib

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(exist_ok=True)
    rows, cases = [], []
    for recipe in recipes(count, half_ij, half_k):
        image, label = make_case(recipe)
        image_rel = f"images/{recipe.case_id}{recipe.fmt}"
        label_rel = f"labels/{recipe.case_id}{recipe.fmt}"
        sitk.WriteImage(image, str(out_dir / image_rel), True)
        sitk.WriteImage(label, str(out_dir / label_rel), True)
        box = expert_box_lps(label)
        modality = SOURCES[recipe.source]
        objects = [{"name": "lesion", "box": box, "space": "LPS"}]
        if text_on_ct and modality == "CT":
            objects.append({"name": "nodule", "text": "nodule"})
        rows.append({"image": image_rel, "case_id": recipe.case_id, "modality": modality, "objects": objects})
        cases.append({"case_id": recipe.case_id, "source": recipe.source, "modality": modality, "image": image_rel,
                      "label": label_rel, "size_ijk": list(image.GetSize()),
                      "spacing": [round(v, 5) for v in image.GetSpacing()],
                      "direction": [round(v, 6) for v in image.GetDirection()],
                      "origin": [round(v, 4) for v in image.GetOrigin()], "axial_axis": "ijk"[axial_axis(image)],
                      "box_lps": box, "sha256": hashlib.sha256((out_dir / image_rel).read_bytes()).hexdigest(),
                      "recipe": asdict(recipe)})
    manifest = out_dir / "manifest.json"
    manifest.write_text(json.dumps({"volumes": rows}, indent=1) + "\n")
    (out_dir / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    return {"manifest": str(manifest), "cases": cases}
