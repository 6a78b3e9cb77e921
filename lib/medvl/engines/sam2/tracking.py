"""One SAM 2 step on one slice, fed from memory: model input, prompts, decoding, memory encoding.

These functions call the `sam2` model's own per-frame methods (`forward_image`,
`_prepare_backbone_features`, `_track_step`, `_encode_new_memory`) exactly as the stock
video predictor does, with the frames coming from the bound volume instead of JPEG
files: `model_input` is that seam. Coordinates: 2D points are (x=col, y=row) of the
slice's voxel grid; `SliceFrame` maps them to model pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medvl.engines.base import SlicePrompt
from medvl.engines.frame import SliceFrame
from medvl.engines.sam2.state import FrameOut
from medvl.errors import PromptError

# ImageNet statistics every SAM 2 / MedSAM2 checkpoint was trained with (sam2.utils.misc)
IMG_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMG_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def model_input(frame: SliceFrame, unit_slice: np.ndarray) -> torch.Tensor:
    """float32 (rows, cols) slice in [0, 1] -> normalised (1, 3, S, S) float32 model input."""
    return (frame.image_to_model(unit_slice) - IMG_MEAN) / IMG_STD


def square_frame(rows: int, cols: int, size: int) -> SliceFrame:
    """SAM 2 stretches every frame to a square, as it was trained (no padding)."""
    return SliceFrame(rows, cols, size, size, size)


def prompt_inputs(frame: SliceFrame, prompt: SlicePrompt) -> dict:
    """SAM 2 `point_inputs`: the box (last one given) as points labelled 2, 3, then the clicks."""
    coords, labels = [], []
    if prompt.boxes:
        x0, y0, x1, y1 = frame.box_to_model(prompt.boxes[-1])
        coords += [(x0, y0), (x1, y1)]
        labels += [2, 3]
    if len(prompt.points) != len(prompt.labels):
        raise PromptError(f"{len(prompt.points)} points but {len(prompt.labels)} labels: give one label per point")
    if prompt.points:
        coords += [tuple(p) for p in frame.points_to_model(np.asarray(prompt.points, dtype=np.float64))]
        labels += [1 if int(v) else 0 for v in prompt.labels]
    if not coords:
        raise PromptError("empty prompt: give at least one point or box on the slice")
    return {"point_coords": torch.tensor([coords], dtype=torch.float32),
            "point_labels": torch.tensor([labels], dtype=torch.int32)}


def mask_input(frame: SliceFrame, mask: np.ndarray) -> torch.Tensor:
    """bool (rows, cols) slice mask -> (1, 1, S, S) float {0, 1}, as `add_new_mask` resizes it."""
    t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    if t.shape[-2:] != (frame.size, frame.size):
        t = F.interpolate(t, size=(frame.size, frame.size), mode="bilinear", align_corners=False, antialias=True)
    return (t >= 0.5).float()


def fill_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """SAM 2's `fill_holes_in_mask_scores` on the CPU: background islands of <= max_area
    pixels (8-connected) inside the (1, 1, h, w) low-res logits become 0.1 (foreground)."""
    if max_area <= 0:
        return logits
    background = (logits[0, 0] <= 0).cpu().numpy()
    labels, n = ndimage.label(background, structure=_EIGHT_CONNECTED)
    if n == 0:
        return logits
    areas = np.bincount(labels.ravel())
    small = areas <= max_area
    small[0] = False
    holes = small[labels]
    if not holes.any():
        return logits
    out = logits.clone()
    out[0, 0][torch.from_numpy(holes)] = 0.1
    return out


def encode(model, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Image encoder on one model input: (FPN features for the heads, their position encodings)."""
    out = model.forward_image(x)
    return [f.contiguous() for f in out["backbone_fpn"]], list(out["vision_pos_enc"])


def step(model, fpn: list[torch.Tensor], pos_enc: list[torch.Tensor], *, frame_idx: int, num_frames: int,
         conditioning: bool, init: bool, point_inputs: dict | None = None, mask_inputs: torch.Tensor | None = None,
         memory: dict | None = None, reverse: bool = False, prev_logits: torch.Tensor | None = None,
         fill_hole_area: int = 8) -> tuple[FrameOut, list[torch.Tensor]]:
    """One slice through SAM 2: memory attention (unless `init`), mask decoder, memory encoder.

    `conditioning`: a prompted slice (its memory is encoded from the binarised, hole-filled
    mask, as the stock predictor does for clicked frames); otherwise a tracked slice.
    `memory`: {"cond_frame_outputs": {...}, "non_cond_frame_outputs": {...}} in SAM 2's
    layout. Returns the compact output and the memory position encoding.
    """
    backbone = {"backbone_fpn": fpn, "vision_pos_enc": pos_enc}
    _, feats, feat_pos, sizes = model._prepare_backbone_features(backbone)
    if prev_logits is not None:
        prev_logits = torch.clamp(prev_logits, -32.0, 32.0)
    memory = memory or {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    _, sam_out, _, _ = model._track_step(frame_idx, init, feats, feat_pos, sizes, point_inputs, mask_inputs,
                                         memory, num_frames, reverse, prev_logits)
    _, _, ious, low_res, high_res, obj_ptr, obj_score = sam_out
    filled = fill_holes(low_res, fill_hole_area)
    if conditioning:
        high_res = F.interpolate(filled, size=(model.image_size, model.image_size), mode="bilinear",
                                 align_corners=False)
    maskmem, maskmem_pos = model._encode_new_memory(feats, sizes, high_res, obj_score, is_mask_from_pts=conditioning)
    score = float(ious.max().clamp(0.0, 1.0)) if ious.numel() else 0.0
    out = FrameOut(maskmem.to(torch.bfloat16), filled.float(), obj_ptr, obj_score, score)
    return out, maskmem_pos
