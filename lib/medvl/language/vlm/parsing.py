"""Boxes in vision-language model output, per model family, mapped to slice pixels.

Each family writes boxes its own way (as trained):

- Qwen2.5-VL (Lingshu, MedMO, Citrus-V's language model): JSON objects with
  `"bbox_2d": [x1, y1, x2, y2]` in absolute pixels of the image *as the model saw it*
  (resized by the processor to multiples of 28), often in a ```json fence.
- Qwen3-VL: the same JSON, but coordinates relative to the image on a 0..1000 grid.
- Qwen2-VL style (older checkpoints): `<|box_start|>(x1,y1),(x2,y2)<|box_end|>`, 0..1000.
- Gemma 3 / MedGemma: `"box_2d": [y1, x1, y2, x2]` on a 0..1000 grid (the Gemini
  convention, y first), or PaliGemma location tokens `<locYYYY>` x4 (y1 x1 y2 x2, 0..1023).

`parse_boxes(text, family, seen_size, slice_size)` returns `Box` in the slice's own pixel
grid (x = column i, y = row j), clipped, whatever the convention.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

FAMILIES = ("qwen2_5_vl", "qwen3_vl", "gemma3")


@dataclass
class Box:
    x0: float  # columns (i) and rows (j) of the slice image, inclusive corners
    y0: float
    x1: float
    y1: float
    label: str = ""

    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


_JSON_BLOCK = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_QWEN2_BOX = re.compile(r"<\|box_start\|>\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*,\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*<\|box_end\|>")
_LOC = re.compile(r"((?:<loc\d{4}>){4})\s*([^<\n;]*)")
_KEYED = re.compile(r'"?(bbox_2d|box_2d|bbox|box)"?\s*:\s*\[\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\]')


def _json_items(text: str) -> list[dict]:
    """Dicts found in the text's JSON (fenced or bare); tolerant of trailing prose."""
    chunks = _JSON_BLOCK.findall(text) or [text]
    items = []
    for chunk in chunks:
        start = min([i for i in (chunk.find("["), chunk.find("{")) if i >= 0], default=-1)
        if start < 0:
            continue
        for end in range(len(chunk), start, -1):
            try:
                data = json.loads(chunk[start:end])
            except ValueError:
                continue
            data = data if isinstance(data, list) else [data]
            items += [d for d in data if isinstance(d, dict)]
            break
    return items


def _raw_boxes(text: str) -> list[tuple[str, list[float], str]]:
    """(key, four numbers, label) for every box in the text, in order."""
    out = []
    for item in _json_items(text):
        for key in ("bbox_2d", "box_2d", "bbox", "box"):
            v = item.get(key)
            if isinstance(v, list) and len(v) == 4 and all(isinstance(x, (int, float)) for x in v):
                out.append((key, [float(x) for x in v], str(item.get("label", ""))))
                break
    if not out:  # JSON-ish but not parseable: key: [a, b, c, d]
        out = [(m.group(1), [float(m.group(n)) for n in range(2, 6)], "") for m in _KEYED.finditer(text)]
    if not out:
        out = [("qwen2", [float(g) for g in m.groups()], "") for m in _QWEN2_BOX.finditer(text)]
    if not out:
        for m in _LOC.finditer(text):
            vals = [float(v) for v in re.findall(r"<loc(\d{4})>", m.group(1))]
            out.append(("loc", vals, m.group(2).strip()))
    return out


def parse_boxes(text: str, family: str, seen_size: tuple[int, int], slice_size: tuple[int, int]) -> list[Box]:
    """Boxes of `text` in slice pixels.

    seen_size: (width, height) of the image the model saw (after its processor's resize);
    slice_size: (width, height) = (columns i, rows j) of the slice the image was made from.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}: one of {', '.join(FAMILIES)}")
    sw, sh = slice_size
    boxes = []
    for key, v, label in _raw_boxes(text):
        if key == "loc":  # PaliGemma: y1 x1 y2 x2 on 0..1023
            y0, x0, y1, x1 = (c / 1023.0 for c in v)
            rel = True
        elif key == "box_2d":  # Gemini convention (MedGemma): y first, 0..1000
            y0, x0, y1, x1 = (c / 1000.0 for c in v)
        elif key == "qwen2" or family in ("qwen3_vl", "gemma3"):  # x first, 0..1000
            x0, y0, x1, y1 = (c / 1000.0 for c in v)
        else:  # Qwen2.5-VL: absolute pixels of the resized image
            x0, y0, x1, y1 = v[0] / seen_size[0], v[1] / seen_size[1], v[2] / seen_size[0], v[3] / seen_size[1]
        x0, x1 = sorted((x0 * sw, x1 * sw))
        y0, y1 = sorted((y0 * sh, y1 * sh))
        box = Box(max(0.0, x0), max(0.0, y0), min(sw - 1.0, x1), min(sh - 1.0, y1), label)
        if box.x1 > box.x0 and box.y1 > box.y0:
            boxes.append(box)
    return boxes
