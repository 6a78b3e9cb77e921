"""Structured findings of a volume and its masks: facts per object, an impression, a narrative.

`build_report(volume, masks, texts=...)` measures every object (masks given by the caller,
and masks solved from text prompts), writes the impression from the facts, and lets a
narrator phrase them - every number in the narrator's text is checked against the facts
(`medvl.language.narrative`). `write_report` stores report.json, report.md and overview.png.

Facts per object (all from the numpy (k, j, i) mask and the volume's geometry):
name, kind, side and location, slice range (axial k, ITK index), bounding box (size in mm
along i, j, k and LPS corners), volume in mL (= voxels x voxel volume), mean and SD
intensity (HU for CT), and - for lesions only - the RECIST long axis and perpendicular in
mm on the slice where the long axis is longest.

An object is described by what it is (`kind`): "lesion" (the nodule solver's answer, or a
user mask that coincides with a lesion candidate that passed every check), "anatomy" (a
tissue or atlas structure: volume and extent, never RECIST axes), "unknown" (a user mask
that is neither: a "region", volume and extent). A lesion whose long axis exceeds
`mass_mm` (30 mm) is a mass, else a nodule. Locations are lung-relative (zone of the left/
right lung) only when the CT has lungs; otherwise body-relative (side of the body's
mid-sagittal plane), so a report on any valid mask never fails.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from medvl.language import measure
from medvl.language.concepts import BY_NAME
from medvl.language.errors import NotUnderstoodError, SolverError
from medvl.language.grounding import ground_for_volume
from medvl.language.solvers import SolveSettings, solve
from medvl.language.solvers.anatomy import CTAnatomy, anatomy_for, spacing_kji, voxel_ml
from medvl.volume import Volume

log = logging.getLogger(__name__)


@dataclass
class ObjectFacts:
    name: str  # concept name or mask name
    label: str  # readable name
    kind: str  # "lesion", "anatomy" or "unknown" (a user mask that is no lesion candidate)
    source: str  # "text: <prompt>" or "mask: <name>"
    voxels: int
    volume_ml: float  # voxels x voxel volume / 1000
    side: str  # "left", "right", "bilateral" or "midline" (patient's)
    zone: str  # "upper", "middle", "lower" third of the lungs' cranio-caudal extent, or ""
    location: str  # readable, e.g. "lower zone of the left lung"
    slice_range_k: list[int]  # first and last axial slice (ITK k)
    bbox_size_mm: list[float]  # extent along i, j, k in mm (voxel widths included)
    bbox_lps_mm: list[list[float]]  # LPS corners (voxel centres): [min xyz, max xyz]
    centroid_lps_mm: list[float]
    long_axis_mm: float | None  # RECIST longest in-plane diameter (lesions only, else None)
    short_axis_mm: float | None  # longest chord perpendicular to it, same slice
    axis_slice_k: int | None  # slice of those two diameters
    long_axis_ijk: list[list[int]] | None  # end voxels (i, j, k)
    short_axis_ijk: list[list[int]] | None
    mean: float  # intensity mean over the mask
    sd: float  # population standard deviation
    unit: str  # "HU" for CT, "a.u." otherwise

    @property
    def key_slice_k(self) -> int:
        """The RECIST slice for lesions; the middle of the slice range otherwise."""
        return self.axis_slice_k if self.axis_slice_k is not None else sum(self.slice_range_k) // 2

    def numbers(self) -> list[float]:
        """Every number a text about this object may quote."""
        recist = [v for v in (self.long_axis_mm, self.short_axis_mm, self.axis_slice_k) if v is not None]
        return [self.voxels, self.volume_ml, *self.slice_range_k, *self.bbox_size_mm, *recist, self.mean, self.sd,
                self.slice_range_k[1] - self.slice_range_k[0] + 1]


@dataclass
class Report:
    image: dict  # name, modality, size_ijk, spacing_mm
    objects: list[ObjectFacts]
    impression: str
    narrative: str = ""
    narrator: str = "deterministic"
    narrative_check: dict = field(default_factory=dict)  # checked numbers, rejected ones, fallback used
    notes: list[str] = field(default_factory=list)  # prompts that found nothing, skipped masks
    seconds: dict = field(default_factory=dict)
    language: dict = field(default_factory=dict)  # the language backend (VLMConfig.describe()): offline or a VLM
    masks: dict = field(default_factory=dict, repr=False, compare=False)  # object name -> bool (k, j, i); not serialised

    def numbers(self) -> list[float]:
        """Every number the facts hold (the narrative may quote these, rounded, and nothing else)."""
        out: list[float] = [len(self.objects), len([o for o in self.objects if o.kind == "lesion"])]
        for o in self.objects:
            out += o.numbers()
        out += list(self.image.get("size_ijk", [])) + list(self.image.get("spacing_mm", []))
        for o in self.objects:  # digits in names ("lung2_label") are facts too
            out += [float(d) for d in re.findall(r"\d+(?:\.\d+)?", o.name + " " + o.label)]
        return out

    def find(self, name: str) -> ObjectFacts | None:
        return next((o for o in self.objects if o.name == name), None)

    def to_dict(self) -> dict:
        """JSON-ready dict of everything but the masks."""
        return {"image": self.image, "objects": [asdict(o) for o in self.objects], "impression": self.impression,
                "narrative": self.narrative, "narrator": self.narrator, "narrative_check": self.narrative_check,
                "notes": self.notes, "seconds": self.seconds, "language": self.language}

    def to_markdown(self) -> str:
        return render_markdown(self)


# ---- facts ----------------------------------------------------------------------------
def _fmt(v: float, nd: int = 1) -> str:
    return f"{v:.{nd}f}"


KINDS = ("lesion", "anatomy", "unknown")
_LEGACY_KINDS = {"tissue": "anatomy", "finding": "unknown"}
MASS_MM = 30.0  # a lesion with a longer RECIST long axis is a mass (Fleischner / RECIST usage)


def has_lungs(anatomy: CTAnatomy | None) -> bool:
    """True when the CT has lungs (lung-relative wording applies); False, never an error, otherwise."""
    if anatomy is None:
        return False
    try:
        return bool(anatomy.lungs.any())
    except SolverError:
        return False


def lesion_label(long_axis_mm: float, in_lung: bool) -> str:
    """"lung nodule" / "lung mass" (long axis over MASS_MM), without "lung" outside the lungs."""
    noun = "mass" if long_axis_mm > MASS_MM else "nodule"
    return f"lung {noun}" if in_lung else noun


def object_facts(volume: Volume, mask: np.ndarray, name: str, kind: str, source: str,
                 anatomy: CTAnatomy | None = None, label: str | None = None) -> ObjectFacts:
    """Facts of one bool (k, j, i) mask of `volume` (see the module docstring). `kind`:
    "lesion", "anatomy" or "unknown" ("tissue" and "finding" are read as the latter two)."""
    kind = _LEGACY_KINDS.get(kind, kind)
    if kind not in KINDS:
        raise SolverError(f"object kind {kind!r}: choose one of {', '.join(KINDS)}")
    mask = np.asarray(mask, bool)
    geo = volume.geometry
    sp = spacing_kji(volume)
    kji = np.argwhere(mask)
    lo, hi = kji.min(axis=0), kji.max(axis=0)
    corners = geo.index_to_physical(np.array([lo[::-1], hi[::-1]], dtype=float))
    cmin, cmax = corners.min(axis=0), corners.max(axis=0)
    centroid = geo.index_to_physical(kji.mean(axis=0)[::-1])  # (k, j, i) mean -> ITK order
    size_ijk = [(int(hi[2] - lo[2]) + 1) * sp[2], (int(hi[1] - lo[1]) + 1) * sp[1], (int(hi[0] - lo[0]) + 1) * sp[0]]
    mean, sd = measure.intensity_stats(volume.array[mask])
    side, zone, location = _location(volume, mask, centroid, kind, name, anatomy)
    rec = {"long_axis_mm": None, "short_axis_mm": None, "axis_slice_k": None, "long_axis_ijk": None,
           "short_axis_ijk": None}
    if kind == "lesion":
        r = measure.recist(mask, sp)
        rec = {"long_axis_mm": r.long.length_mm, "short_axis_mm": r.short.length_mm, "axis_slice_k": r.slice_k,
               "long_axis_ijk": [[r.long.p0[1], r.long.p0[0], r.slice_k], [r.long.p1[1], r.long.p1[0], r.slice_k]],
               "short_axis_ijk": [[r.short.p0[1], r.short.p0[0], r.slice_k],
                                  [r.short.p1[1], r.short.p1[0], r.slice_k]]}
        if label is None:
            label = lesion_label(r.long.length_mm, "lung" in location)
    elif kind == "unknown" and label is None:
        label = f"region {name}"
    return ObjectFacts(
        name=name, label=label or (BY_NAME[name].label if name in BY_NAME else name), kind=kind, source=source,
        voxels=int(len(kji)), volume_ml=float(len(kji) * voxel_ml(volume)), side=side, zone=zone,
        location=location, slice_range_k=[int(lo[0]), int(hi[0])],
        bbox_size_mm=[round(float(v), 2) for v in size_ijk],
        bbox_lps_mm=[[round(float(v), 2) for v in cmin], [round(float(v), 2) for v in cmax]],
        centroid_lps_mm=[round(float(v), 2) for v in centroid],
        **rec, mean=mean, sd=sd, unit="HU" if volume.modality.upper() == "CT" else "a.u.",
    )


def _location(volume, mask, centroid, kind, name, anatomy):
    """(side, zone, readable location). Side: which side of the body's mid-sagittal plane
    (LPS x of the body centroid) holds the mask; both sides with >= 20 % each: bilateral."""
    try:
        mid_x = anatomy.mid_x if anatomy is not None else None
    except SolverError:  # a CT without a body outline: the image centre
        mid_x = None
    if mid_x is None:
        k, j, i = volume.array.shape
        mid_x = float(volume.geometry.index_to_physical(((i - 1) / 2, (j - 1) / 2, (k - 1) / 2))[0])
    kji = np.argwhere(mask)
    kji = kji[:: max(1, len(kji) // 200_000)]  # a bounded sample of a big mask is enough for a fraction
    xs = volume.geometry.index_to_physical(kji[:, ::-1].astype(float))[:, 0]
    left = float((xs > mid_x).mean())
    side = "bilateral" if 0.2 <= left <= 0.8 else ("left" if left > 0.8 else "right")
    if name in ("left_lung", "right_lung"):
        side = name.split("_")[0]
    zone = ""
    if kind != "anatomy" and has_lungs(anatomy):
        ks = np.flatnonzero(anatomy.lungs.any(axis=(1, 2)))
        z0, z1 = sorted(float(volume.geometry.index_to_physical((0, 0, int(k)))[2]) for k in (ks[0], ks[-1]))
        third = (z1 - z0) / 3 or 1.0
        zone = ("lower", "middle", "upper")[min(2, max(0, int((centroid[2] - z0) // third)))]
        in_lung = (mask & anatomy.lung_field).sum() / mask.sum() >= 0.5
        organ = "lung" if in_lung else "chest"
        where = f"{side} {organ}" if side in ("left", "right") else f"both {organ}s" if in_lung else organ
        location = f"{zone} zone of the {where}"
    elif side in ("left", "right"):
        location = f"{side} side of the body" if kind != "anatomy" else f"{side} side"
    else:
        location = "both sides" if side == "bilateral" else "midline"
    return side, zone, location


def impression(objects: list[ObjectFacts], modality: str) -> str:
    """One deterministic paragraph from the facts; lesions first, largest first."""
    findings = sorted([o for o in objects if o.kind == "lesion"], key=lambda o: -o.volume_ml)
    regions = [o for o in objects if o.kind == "unknown"]
    tissues = [o for o in objects if o.kind == "anatomy"]
    parts = []
    for o in findings:
        parts.append(
            f"{o.label.capitalize()} in the {o.location}: {_fmt(o.long_axis_mm)} x {_fmt(o.short_axis_mm)} mm "
            f"(long x short axis, slice {o.axis_slice_k}), volume {_fmt(o.volume_ml)} mL, "
            f"mean {_fmt(o.mean, 0)} {o.unit}."
        )
    for o in regions:
        parts.append(f"{o.label.capitalize()} (not a lesion candidate) in the {o.location}: extent "
                     f"{' x '.join(_fmt(v) for v in o.bbox_size_mm)} mm, volume {_fmt(o.volume_ml)} mL, "
                     f"mean {_fmt(o.mean, 0)} {o.unit}.")
    if not findings:
        parts.append("No lesion measured.")
    if tissues:
        parts.append("Measured " + ", ".join(f"{o.label} {_fmt(o.volume_ml)} mL" for o in tissues) + ".")
    return " ".join(parts)


# ---- building -------------------------------------------------------------------------
def _split_labels(name: str, mask: np.ndarray) -> list[tuple[str, np.ndarray]]:
    values = [int(v) for v in np.unique(mask) if v != 0]
    if mask.dtype == bool or len(values) <= 1:
        return [(name, mask != 0)]
    return [(f"{name}:{v}", mask == v) for v in values]


def mask_kind(volume: Volume, mask: np.ndarray, anatomy: CTAnatomy | None, settings: SolveSettings) -> str:
    """"lesion" when a user's bool (k, j, i) mask coincides with a nodule candidate that passed
    every check (half of the mask inside the candidate grown back, or half of the candidate
    inside the mask), else "unknown". Only CTs with lungs have candidates."""
    if not has_lungs(anatomy):
        return "unknown"
    from medvl.language.solvers.nodule import find_candidates, regrow

    n = int(mask.sum())
    for c in find_candidates(anatomy, settings.nodule):
        if not c.passed:
            continue
        cm = regrow(anatomy, c, settings.nodule)
        inter = int((cm & mask).sum())
        if inter >= 0.5 * n or inter >= 0.5 * int(cm.sum()):
            return "lesion"
    return "unknown"


def build_report(volume: Volume, masks: Mapping[str, np.ndarray] | None = None, texts=(), session=None,
                 narrator=None, settings: SolveSettings = SolveSettings(), kinds: Mapping[str, str] | None = None) -> Report:
    """Report on `volume`: one object per mask (a label map gives one per label value) and per
    text prompt (grounded and solved). Prompts that find nothing become notes, not errors.
    `narrator` None: the VLM of `settings.vlm` when one is configured, else deterministic.
    Without masks and texts a CT gets the default chest prompts ("lungs", "nodule").
    `kinds` names a mask's kind ("lesion", "anatomy", "unknown") where the caller knows it
    (a clicked or atlas structure is "anatomy"); otherwise `mask_kind` decides."""
    from medvl.language.narrative import narrate

    t0 = time.perf_counter()
    masks = dict(masks or {})
    texts = list(texts)
    if not masks and not texts and volume.modality.upper() == "CT":
        texts = ["lungs", "nodule"]
    anatomy = None
    if volume.modality.upper() == "CT":
        try:
            anatomy = anatomy_for(volume)
            anatomy.body  # noqa: B018 - fails early for a CT without a body
        except SolverError as err:
            log.warning("no CT anatomy for %s: %s", volume.name, err)
            anatomy = None
    objects, notes, kept = [], [], {}
    seconds: dict = {}

    def add(facts: ObjectFacts, m: np.ndarray):
        base, n = facts.name, 2
        while facts.name in kept:
            facts.name, n = f"{base}#{n}", n + 1
        objects.append(facts)
        kept[facts.name] = m

    for name, mask in masks.items():
        if mask.shape != volume.array.shape:
            raise SolverError(f"mask {name!r} has shape (k, j, i) {mask.shape}, the image {volume.array.shape}")
        for sub, m in _split_labels(name, np.asarray(mask)):
            if not m.any():
                notes.append(f"mask {sub}: empty")
                continue
            kind = (kinds or {}).get(sub) or (kinds or {}).get(name) or mask_kind(volume, m, anatomy, settings)
            add(object_facts(volume, m, sub, kind, f"mask: {sub}", anatomy), m)
    for text in texts:
        t1 = time.perf_counter()
        g = ground_for_volume(text, volume)
        try:
            res = solve(volume, g, session, settings)
        except (NotUnderstoodError, SolverError) as err:
            notes.append(f"{text!r}: {err}")
            continue
        c = g.concept
        kind = "lesion" if c.kind == "lesion" else "anatomy"
        add(object_facts(volume, res.mask, c.name, kind, f"text: {text}", anatomy), res.mask)
        seconds[f"text: {text}"] = round(time.perf_counter() - t1, 3)
    report = Report(
        image={"name": volume.name, "modality": volume.modality, "size_ijk": list(volume.size_ijk),
               "spacing_mm": [round(float(s), 4) for s in volume.geometry.spacing]},
        objects=objects, impression=impression(objects, volume.modality), notes=notes, seconds=seconds,
        masks=kept, language=settings.vlm.describe(),
    )
    if settings.vlm.enabled and narrator in (None, "vlm"):  # with a VLM configured it phrases the facts
        from medvl.language.vlm.tasks import VLMNarrator

        narrator = VLMNarrator(settings.vlm, volume, kept)
    narrate(report, narrator)
    report.seconds["total"] = round(time.perf_counter() - t0, 3)
    return report


# ---- output ---------------------------------------------------------------------------
def render_markdown(r: Report) -> str:
    lines = [f"# Report: {r.image.get('name') or 'image'}", "",
             f"{r.image.get('modality')} volume, {' x '.join(map(str, r.image.get('size_ijk', [])))} voxels, "
             f"spacing {' x '.join(_fmt(s, 3) for s in r.image.get('spacing_mm', []))} mm.", "",
             "## Findings", "",
             "| object | location | slices (k) | bbox i x j x k (mm) | volume (mL) | long x short axis (mm) | axis slice | mean +- SD |",
             "|---|---|---|---|---|---|---|---|"]
    for o in r.objects:
        axes = f"{_fmt(o.long_axis_mm)} x {_fmt(o.short_axis_mm)}" if o.kind == "lesion" else "-"
        lines.append(
            f"| {o.label} | {o.location} | {o.slice_range_k[0]}-{o.slice_range_k[1]} | "
            f"{' x '.join(_fmt(v) for v in o.bbox_size_mm)} | {_fmt(o.volume_ml)} | "
            f"{axes} | {o.axis_slice_k if o.axis_slice_k is not None else '-'} | "
            f"{_fmt(o.mean, 0)} +- {_fmt(o.sd, 0)} {o.unit} |")
    lines += ["", "## Impression", "", r.impression, "", f"## Narrative ({r.narrator})", "", r.narrative or "-"]
    if r.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


def write_report(report: Report, volume: Volume, out_dir) -> dict[str, Path]:
    """report.json, report.md and overview.png (key slices, masks drawn from `report.masks`)."""
    from medvl.language.render import overview

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "overview.png"}
    paths["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    paths["md"].write_text(report.to_markdown())
    overview(volume, report).save(paths["png"])
    return paths
