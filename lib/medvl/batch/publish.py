"""Each volume's outputs appear exactly once, whole: written into `OUT/.partial/<case>.<attempt>/`,
then published by one `os.rename` to `OUT/<case>/`.

A rename onto an existing, non-empty folder fails, so of two attempts at one volume (a Ray
task retried after its worker died once it had published, or two executors pointed at one
folder) exactly one publishes; the other finds a result with the same hash and discards its
own. A result of an older hash (changed input or settings) is first moved aside into
`.partial` and deleted after the new one is in place. A crash leaves at most a private
folder in `.partial`, never a half-written `OUT/<case>/`; `clean_partial` removes those
at the start and end of a batch.
"""

from __future__ import annotations

import errno
import json
import shutil
import uuid
from pathlib import Path

PARTIAL = ".partial"


def partial_dir(out_dir: Path) -> Path:
    return Path(out_dir) / PARTIAL


def read_status(case_dir: Path) -> dict | None:
    """The published `status.json` of a case folder, or None (missing, unreadable)."""
    try:
        return json.loads((Path(case_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return None


def publish(tmp: Path, final: Path, job_hash: str) -> str:
    """Move `tmp` to `final` atomically -> "published", "replaced" or "kept" (the same result was already there)."""
    for _ in range(5):
        try:
            tmp.rename(final)
            return "published"
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        existing = read_status(final)
        if existing and existing.get("hash") == job_hash and existing.get("status") in ("ok", "refused"):
            shutil.rmtree(tmp, ignore_errors=True)
            return "kept"
        aside = tmp.parent / f"{final.name}.old-{uuid.uuid4().hex[:8]}"
        try:
            final.rename(aside)
        except FileNotFoundError:
            continue  # another attempt moved it meanwhile: try again
        try:
            tmp.rename(final)
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(aside, ignore_errors=True)
            continue  # another attempt published in between: compare with its result
        shutil.rmtree(aside, ignore_errors=True)
        return "replaced"
    raise OSError(f"could not publish {final}: other writers keep replacing it")


def clean_partial(out_dir: Path) -> int:
    """Remove leftovers of abandoned or crashed attempts; -> how many."""
    folder = partial_dir(out_dir)
    if not folder.is_dir():
        return 0
    n = 0
    for p in folder.iterdir():
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        n += 1
    return n
