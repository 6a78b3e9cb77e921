"""Hashes that decide `--resume`: a volume is skipped only when its input bytes, its prompts,
the engine and every setting hash the same as when its outputs were written.

The input's content hash (sha256 over the file, or over every file of a DICOM folder in
name order) is recorded in `status.json` with each file's size and mtime; a resume re-reads
a file only when its size or mtime changed (as make and rsync do), so resuming 10,000 done
volumes costs a stat per file, not a read of every scan.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import medvl

_CHUNK = 1 << 20


def input_files(source: str) -> list[Path]:
    path = Path(source)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if path.suffix.lower() == ".mhd" or path.name.lower().endswith(".nhdr"):  # header + its data file
        data = [p for p in path.parent.glob(path.stem + ".*") if p != path and p.suffix.lower() in (".raw", ".zraw",
                                                                                                   ".gz", ".bz2")]
        return [path, *sorted(data)]
    return [path]


def file_stats(source: str) -> list[list]:
    """[[name, size, mtime_ns], ...] of the input's files (cheap: stat only)."""
    out = []
    for p in input_files(source):
        st = os.stat(p)
        out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def content_hash(source: str) -> str:
    h = hashlib.sha256()
    for p in input_files(source):
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def input_fingerprint(source: str, previous: dict | None = None) -> dict:
    """{"files": stats, "sha256": content}; reuses `previous["sha256"]` when the stats are unchanged."""
    stats = file_stats(source)
    if previous and previous.get("files") == stats and previous.get("sha256"):
        return {"files": stats, "sha256": previous["sha256"]}
    return {"files": stats, "sha256": content_hash(source)}


def job_hash(input_sha256: str, job: dict, settings: dict) -> str:
    """One hash of what the outputs depend on: input bytes, the job's prompts, settings, medvl's version."""
    job = {k: v for k, v in job.items() if k not in ("source",)}  # a moved file with the same bytes is the same
    blob = json.dumps({"input": input_sha256, "job": job, "settings": settings, "medvl": medvl.__version__},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
