"""Containment: every id, tag and filename that reaches the datastore, checked in one place.

Rules (MONAI Label's local datastore turns ids and tags into file names and folders):

- A *new* image id or label tag (an upload, a label save) matches `NAME_RULE`: a letter or
  digit, then letters, digits, `.`, `_` or `-`, at most 128 characters, no `..`. No
  separators, no absolute paths, no spaces, no control or non-ASCII characters.
- An *existing* id is looked up by exact membership in the datastore (so files already in
  the studies folder with other names keep working) - never as a path.
- Every path the datastore resolves is checked to lie inside the studies folder
  (`inside`), symlinks resolved, before it is read, written or deleted.
- Upload file names are plain names (no separators) with an extension from `IMAGE_EXTENSIONS`;
  they name nothing on disk (uploads are stored under random names).

`ContainmentError` is a `BadRequestError`: HTTP 400 with a one-line message naming the value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from medvl.server.protocol import BadRequestError

NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
NAME_RULE_TEXT = "letters, digits, '.', '_' or '-' (first a letter or digit, at most 128, no '..')"
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha")  # single-file formats only (.mhd/.nhdr name
# another file to read, which would reach outside the studies folder)
_SHOWN = 60  # characters of a bad value quoted in a message


class ContainmentError(BadRequestError):
    """An id, tag, file name or path that would leave the studies folder, or is not allowed."""


def shown(value: object) -> str:
    """`value` quoted for a one-line message (shortened, control characters escaped)."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "...'"


def check_name(value: object, what: str) -> str:
    """`value` if it is a safe new name (`NAME_RULE`), else ContainmentError naming it."""
    if not isinstance(value, str) or not NAME_RULE.fullmatch(value) or ".." in value:
        raise ContainmentError(f"{what} {shown(value)} is not allowed: use {NAME_RULE_TEXT}")
    return value


def upload_extension(filename: object) -> str:
    """The image extension of an uploaded file's name (lower case), from `IMAGE_EXTENSIONS`.

    The name must be a plain file name: no folder separators, no control characters."""
    name = filename if isinstance(filename, str) else ""
    if not name or any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ContainmentError(f"upload file name {shown(filename)} is not a plain file name: send e.g. "
                               "'scan.nii.gz' (no folders)")
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext) and len(name) > len(ext):
            return ext
    raise ContainmentError(f"upload file name {shown(filename)} has no supported image extension: name it "
                           f"<id> plus one of {', '.join(IMAGE_EXTENSIONS)}")


def upload_id(filename: object) -> str:
    """An image id from an uploaded file's name: the name without its extension, checked."""
    ext = upload_extension(filename)
    return check_name(str(filename)[: -len(ext)], "image id (from the file name)")


def inside(root, path) -> Path:
    """`path` resolved (symlinks followed), if it lies inside `root`; else ContainmentError."""
    root_real = Path(os.path.realpath(root))
    try:
        real = Path(os.path.realpath(path))
    except (ValueError, OSError):  # NUL byte, too long
        raise ContainmentError(f"path {shown(os.path.basename(str(path)))} is not a valid path; refer to images and "
                               "labels by their datastore ids") from None
    if real != root_real and root_real not in real.parents:
        raise ContainmentError(f"path {shown(os.path.basename(str(path)))} resolves outside the studies folder; "
                               "refer to images and labels by their datastore ids")
    return real
