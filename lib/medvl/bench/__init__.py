"""Benchmarks: commands that print JSON (`medvl bench`), never timed tests."""

import json
from pathlib import Path


def emit_json(result: dict, path: str | None = None, indent: int = 2) -> str:
    """`result` as JSON text (non-JSON values via str), also written to `path` when given."""
    text = json.dumps(result, indent=indent, default=str)
    if path:
        Path(path).write_text(text + "\n")
    return text
