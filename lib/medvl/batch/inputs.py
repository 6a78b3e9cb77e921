"""`medvl annotate INPUT`: a folder, a glob or a manifest -> the batch's `VolumeJob`s, in a stable order.

- folder: image files (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) and DICOM series folders
  (a folder holding .dcm files or files with the DICM preamble), found recursively;
  hidden names (".x") are skipped;
- glob: "scans/**/*.nii.gz" (recursive), each match a file or a DICOM folder;
- manifest: .csv or .json, one row per volume. Columns / keys: `image` (required; relative
  to the manifest's folder), `case_id`, `modality`, and prompts: `objects` (JSON: a list of
  object specs, see `jobs.py`) or the flat `text` ("a; b": one object per prompt), `box`
  ("i0,j0,k0,i1,j1,k1"; several boxes separated by ";", one object each), `points`
  ("i,j,k[,fg|bg]; ...", one object), `space` (voxel, LPS, RAS), `series` (the SeriesInstanceUID
  to read from a DICOM folder holding several).
Case ids come from file/folder names (made unique with their parent folders when two
collide) unless the manifest names them. Only paths are returned; nothing is read here.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
from pathlib import Path

from medvl.batch.jobs import BatchInputError, ObjectPrompt, VolumeJob, parse_objects, parse_space

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_CASE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def _image_suffix(name: str) -> str | None:
    low = name.lower()
    return next((s for s in IMAGE_SUFFIXES if low.endswith(s)), None)


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _holds_dicom(folder: Path) -> bool:
    try:
        return any(p.is_file() and _is_dicom_file(p) for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return False


def scan_folder(folder: Path) -> list[Path]:
    """Image files and DICOM series folders under `folder`, sorted by path."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        root = Path(root)
        if any(_is_dicom_file(root / f) for f in files if not f.startswith(".")):
            found.append(root)
        found += [root / f for f in sorted(files) if not f.startswith(".") and _image_suffix(f)]
    return sorted(found)


def _stem(path: Path) -> str:
    suffix = _image_suffix(path.name)
    return path.name[: -len(suffix)] if suffix else path.name


def case_ids(paths: list[Path], base: Path | None) -> list[str]:
    """One safe, unique folder name per path: its stem, or parent folders + stem where stems collide."""
    def clean(text: str) -> str:
        text = _CASE_ID.sub("_", text).strip("._") or "case"
        return text

    stems = [clean(_stem(p)) for p in paths]
    out = []
    for p, stem in zip(paths, stems):
        if stems.count(stem) > 1:
            rel = p.relative_to(base) if base and p.is_relative_to(base) else p
            stem = clean("__".join([*rel.parent.parts, _stem(p)]))
        out.append(stem)
    seen: dict[str, int] = {}
    for n, cid in enumerate(out):  # still equal (e.g. "a b" and "a_b"): number them
        if cid in seen:
            seen[cid] += 1
            out[n] = f"{cid}-{seen[cid]}"
        else:
            seen[cid] = 1
    return out


def _from_paths(paths: list[Path], base: Path | None, where: str) -> list[VolumeJob]:
    if not paths:
        raise BatchInputError(f"{where}: no images found (NIfTI, NRRD, MHA files or DICOM series folders)")
    return [VolumeJob(case_id=c, source=str(p), row=str(p)) for p, c in zip(paths, case_ids(paths, base))]


def _split(text) -> list[str]:
    return [t.strip() for t in str(text or "").split(";") if t.strip()]


def _row_objects(row: dict, where: str) -> tuple[ObjectPrompt, ...]:
    specs = row.get("objects")
    if isinstance(specs, str) and specs.strip():
        try:
            specs = json.loads(specs)
        except json.JSONDecodeError as err:
            raise BatchInputError(f"{where}: objects is not JSON ({err.msg})") from None
    specs = list(specs or [])
    space = parse_space(row.get("space"), where)
    texts = row.get("text") or []
    specs += [{"text": t} for t in (texts if isinstance(texts, list) else _split(texts))]
    boxes = row.get("box") or []
    if isinstance(boxes, str):
        boxes = _split(boxes)
    elif boxes and not isinstance(boxes[0], (list, str)):
        boxes = [boxes]
    specs += [{"box": b, "space": space, "name": f"box {n + 1}"} for n, b in enumerate(boxes)]
    if row.get("points"):
        specs.append({"points": row["points"], "space": space, "name": "points"})
    return parse_objects(specs, where)


def read_manifest(path: Path) -> list[VolumeJob]:
    """Rows of a .csv / .json manifest -> jobs (image paths relative to the manifest's folder)."""
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            data = json.loads(path.read_text())
            rows = data.get("volumes") if isinstance(data, dict) else data
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise BatchInputError(f"cannot read manifest {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise BatchInputError(f"manifest {path} is not JSON: {err.msg} at line {err.lineno}") from None
    if not isinstance(rows, list) or not rows:
        raise BatchInputError(f"manifest {path} has no rows; give a list of {{\"image\": ...}} (JSON) or an "
                              "'image' column (CSV)")
    paths, jobs = [], []
    for n, row in enumerate(rows, start=1):
        where = f"{path.name} row {n}"
        if not isinstance(row, dict) or not str(row.get("image") or "").strip():
            raise BatchInputError(f"{where}: no image; every row needs an 'image' path")
        image = Path(str(row["image"]).strip())
        paths.append(image if image.is_absolute() else path.parent / image)
        jobs.append((row, where))
    given_ids = [str(row.get("case_id") or "").strip() for row, _ in jobs]
    auto = iter(case_ids([p for p, g in zip(paths, given_ids) if not g], path.parent))
    ids = [g or next(auto) for g in given_ids]
    out = []
    for (row, where), p, cid, given in zip(jobs, paths, ids, given_ids):
        if given and (given != _CASE_ID.sub("_", given) or given.startswith(".")):
            raise BatchInputError(f"{where}: case_id {given!r} may hold only letters, digits, '.', '_', '-' "
                                  "and may not start with '.'")
        out.append(VolumeJob(case_id=given or cid, source=str(p), objects=_row_objects(row, where),
                             modality=(str(row.get("modality")).strip() or None) if row.get("modality") else None,
                             row=where, series=str(row.get("series") or "").strip() or None))
    ids = [j.case_id for j in out]
    dup = sorted({c for c in ids if ids.count(c) > 1})
    if dup:
        raise BatchInputError(f"manifest {path}: case_id(s) {', '.join(dup)} appear twice; case ids must be unique")
    return out


def discover(spec: str) -> list[VolumeJob]:
    """INPUT of `medvl annotate` -> jobs. BatchInputError (one line) when nothing usable is there."""
    path = Path(spec)
    if path.is_file() and path.suffix.lower() in (".csv", ".json"):
        return read_manifest(path)
    if path.is_dir():
        if _holds_dicom(path) and not any(_image_suffix(p.name) for p in path.iterdir()):
            return _from_paths([path], path.parent, spec)
        return _from_paths(scan_folder(path), path, spec)
    if path.is_file() and _image_suffix(path.name):
        return _from_paths([path], path.parent, spec)
    if any(ch in spec for ch in "*?["):
        matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
        matches = [m for m in matches if (m.is_file() and _image_suffix(m.name)) or (m.is_dir() and _holds_dicom(m))]
        return _from_paths(matches, None, spec)
    raise BatchInputError(f"{spec} does not exist; give a folder, a glob (quoted) or a .csv/.json manifest")
