"""What one batch volume asks for: `VolumeJob` (a source and its objects) and `ObjectPrompt`.

An object is one label in the volume's label map, made from either a text prompt or
clicks/a box on one slice. Coordinates are in one of three spaces:
- "voxel": ITK indices (i, j, k) of the image as SimpleITK reads it (as `medvl segment`);
- "LPS" / "RAS": physical millimetres (ITK's LPS or Slicer's RAS), converted per volume,
  so one physical box works on re-oriented or resampled copies of a scan.

Spec (manifest JSON / `--prompts FILE`; CSV cells use the same words, see `inputs.py`):
    {"name": "tumour", "text": "the nodule in the left lung"}
    {"name": "mass", "box": [i0, j0, k0, i1, j1, k1], "points": [[i, j, k, "bg"]], "space": "voxel"}
Everything here is data and validation; no image is read (workers read, `annotator.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from medvl.errors import MedVLError
from medvl.language.vlm.backend import VLMConfig

SPACES = ("voxel", "LPS", "RAS")


class BatchInputError(MedVLError):
    """A batch input (folder, glob, manifest row, prompt file) is missing or malformed; names the row and value."""


@dataclass(frozen=True)
class ObjectPrompt:
    name: str
    text: str | None = None
    box: tuple[float, ...] | None = None  # two opposite corners (i0, j0, k0, i1, j1, k1) in `space`
    points: tuple[tuple[float, float, float, bool], ...] = ()  # (i, j, k, foreground) in `space`
    space: str = "voxel"

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, ())}


@dataclass(frozen=True)
class VolumeJob:
    case_id: str  # the output folder's name, unique in a batch
    source: str  # a file or a DICOM series folder (a path, never an array: workers read it)
    objects: tuple[ObjectPrompt, ...] = ()
    modality: str | None = None  # CT / MR override, else read from the image
    row: str = ""  # where it came from ("manifest.csv row 3"), for error messages
    series: str | None = None  # SeriesInstanceUID to read from a DICOM folder holding several

    def to_dict(self) -> dict:
        out = {"case_id": self.case_id, "source": self.source, "modality": self.modality,
               "objects": [o.to_dict() for o in self.objects]}
        if self.series:  # only when given, so the hashes of earlier batches stay valid
            out["series"] = self.series
        return out


def _numbers(value, count: int, what: str, where: str) -> tuple[float, ...]:
    given = value
    if isinstance(value, str):
        value = [v for v in value.replace(";", ",").split(",") if v.strip()]
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise BatchInputError(f"{where}: {what} {given!r} must be {count} numbers") from None
    if len(out) != count:
        raise BatchInputError(f"{where}: {what} {given!r} must be {count} numbers, got {len(out)}")
    return out


def parse_point(value, where: str) -> tuple[float, float, float, bool]:
    """[i, j, k] or [i, j, k, "fg"|"bg"] (or the same as a "i,j,k,bg" string)."""
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else list(value)
    kind = "fg"
    if len(parts) == 4:
        kind = str(parts.pop()).strip().lower()
        if kind not in ("fg", "bg"):
            raise BatchInputError(f"{where}: point {value!r}: the fourth field must be fg or bg, not {kind!r}")
    xyz = _numbers(parts, 3, "point", where)
    return (*xyz, kind == "fg")


def parse_space(value, where: str) -> str:
    """"voxel" (default), "LPS" or "RAS", any case."""
    space = {"voxel": "voxel", "lps": "LPS", "ras": "RAS"}.get(str(value or "voxel").strip().lower())
    if space is None:
        raise BatchInputError(f"{where}: space {value!r} must be one of {', '.join(SPACES)}")
    return space


def parse_object(spec: dict, where: str, index: int) -> ObjectPrompt:
    """One object from its spec dict; BatchInputError names `where` and the bad field."""
    if not isinstance(spec, dict):
        raise BatchInputError(f"{where}: object {index + 1} must be an object with text, box or points, got {spec!r}")
    unknown = set(spec) - {"name", "text", "box", "points", "space"}
    if unknown:
        raise BatchInputError(f"{where}: object {index + 1} has unknown field(s) {', '.join(sorted(unknown))}; "
                              "use name, text, box, points, space")
    space = parse_space(spec.get("space"), where)
    text = spec.get("text")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise BatchInputError(f"{where}: text {text!r} must be a non-empty string")
    box = _numbers(spec["box"], 6, "box", where) if spec.get("box") not in (None, "") else None
    points = spec.get("points") or ()
    if isinstance(points, str):
        points = [p for p in points.split(";") if p.strip()]
    points = tuple(parse_point(p, where) for p in points)
    if text and (box or points):
        raise BatchInputError(f"{where}: object {index + 1} has both text and a box/points; give one per object")
    if not text and not box and not any(p[3] for p in points):
        raise BatchInputError(f"{where}: object {index + 1} needs text, a box or a foreground point")
    name = str(spec.get("name") or (text.strip() if text else f"object {index + 1}"))
    return ObjectPrompt(name=name, text=text.strip() if text else None, box=box, points=points, space=space)


def parse_objects(specs, where: str) -> tuple[ObjectPrompt, ...]:
    if not isinstance(specs, list):
        raise BatchInputError(f"{where}: objects must be a list, got {type(specs).__name__}")
    objects = tuple(parse_object(s, where, n) for n, s in enumerate(specs))
    names = [o.name for o in objects]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise BatchInputError(f"{where}: object name(s) {', '.join(map(repr, dup))} given twice; names must be unique")
    return objects


def text_objects(texts) -> tuple[ObjectPrompt, ...]:
    """`--text PROMPT` (repeatable) -> one object per prompt."""
    return tuple(ObjectPrompt(name=t.strip(), text=t.strip()) for t in texts if t and t.strip())


@dataclass(frozen=True)
class BatchSettings:
    """Everything besides the volume that decides a volume's outputs (hashed for resume)."""
    engine: str = "litemedsam"
    engine_options: dict = field(default_factory=dict)
    objects: tuple[ObjectPrompt, ...] = ()  # prompts for every volume (--text, --prompts)
    report: bool = False  # report.json / report.md / overview.png
    narrator: str = "deterministic"
    refine: str | None = None  # nodule refinement; None: SolveSettings' shared default
    label_format: str = ".nii.gz"
    vlm: VLMConfig = field(default_factory=VLMConfig)  # language backend; loaded once per worker process

    def to_dict(self) -> dict:
        out = {"engine": self.engine, "engine_options": {k: str(v) for k, v in sorted(self.engine_options.items())},
               "objects": [o.to_dict() for o in self.objects], "report": self.report, "narrator": self.narrator,
               "refine": self.refine, "label_format": self.label_format}
        if self.vlm.enabled:  # offline runs keep their old hash (resume still finds them)
            out["vlm"] = self.vlm.to_dict()
        return out
