"""overview.png: one panel per reported object on its key axial slice, mask outlined and the
RECIST long (red) and short (yellow) axes drawn.

Key slice: the RECIST measurement slice for lesions, the largest cross-section otherwise.
Windowing is explicit per modality and object (`medvl.intensity`): CT lung window for lung
objects and lesions, bone window for bone, soft-tissue window otherwise; MR by the
volume's percentiles. Panels are `array[k]` (rows j, columns i), shown as stored.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from medvl.intensity import IntensitySettings, intensity_bounds, to_unit

_COLOURS = [(0, 200, 255), (0, 255, 120), (255, 120, 0), (255, 0, 200), (180, 255, 0), (120, 120, 255)]
_LUNG_OBJECTS = {"lungs", "left_lung", "right_lung", "airway", "nodule"}


def window_for(volume, obj_name: str, kind: str) -> tuple[float, float]:
    """(low, high) display bounds for one object's panel."""
    if volume.modality.upper() != "CT":
        return intensity_bounds(volume.array, volume.modality)
    if obj_name in _LUNG_OBJECTS or kind != "anatomy":
        window = "lung"
    elif obj_name == "bone":
        window = "bone"
    else:
        window = "soft_tissue"
    return intensity_bounds(volume.array, "CT", IntensitySettings(ct_window=window))


def panel(volume, mask: np.ndarray, facts, colour=(0, 200, 255)) -> Image.Image:
    """RGB image of the key slice with the mask outline and (lesions) the two axes.
    Key slice: the RECIST slice for lesions, the largest cross-section for anatomy and regions."""
    k = facts.axis_slice_k if facts.kind == "lesion" else int(np.argmax(mask.sum(axis=(1, 2))))
    grey = (to_unit(volume.array[k], window_for(volume, facts.name, facts.kind)) * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    m = mask[k]
    rgb[m & ~ndi.binary_erosion(m)] = colour
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    if facts.kind == "lesion":  # only lesions have RECIST axes
        for (a, b), col in ((facts.long_axis_ijk, (255, 40, 40)), (facts.short_axis_ijk, (255, 230, 0))):
            draw.line([(a[0], a[1]), (b[0], b[1])], fill=col, width=2)
    caption = f"{facts.label} | k={k} | {facts.volume_ml:.1f} mL"
    if facts.kind == "lesion":
        caption += f" | {facts.long_axis_mm:.1f} x {facts.short_axis_mm:.1f} mm"
    draw.rectangle([0, 0, img.width, 14], fill=(0, 0, 0))
    draw.text((3, 2), caption, fill=(255, 255, 255))
    return img


def overview(volume, report, columns: int = 3, max_side: int = 384) -> Image.Image:
    """Grid of panels, one per object of `report` (masks from `report.masks`)."""
    panels = []
    for n, o in enumerate(report.objects):
        mask = report.masks.get(o.name)
        if mask is None:
            continue
        p = panel(volume, mask, o, _COLOURS[n % len(_COLOURS)])
        scale = max_side / max(p.size)
        panels.append(p.resize((round(p.width * scale), round(p.height * scale)), Image.BILINEAR) if scale < 1 else p)
    if not panels:
        k = volume.array.shape[0] // 2
        grey = (to_unit(volume.array[k], intensity_bounds(volume.array, volume.modality)) * 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    cols = min(columns, len(panels))
    rows = (len(panels) + cols - 1) // cols
    w, h = max(p.width for p in panels), max(p.height for p in panels)
    sheet = Image.new("RGB", (cols * w, rows * h), (0, 0, 0))
    for n, p in enumerate(panels):
        sheet.paste(p, ((n % cols) * w, (n // cols) * h))
    return sheet
