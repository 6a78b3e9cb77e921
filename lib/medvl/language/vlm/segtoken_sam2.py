"""The SAM 2 side of a [SEG]-token model: its weights as our `sam2` engine, and the decoder step
that takes a projected [SEG] hidden state as its prompt.

`sam2_engine(path, files, device)` reads only the `grounding_encoder.sam2_model.*` tensors of
the checkpoint (prefix removed: the names are the `sam2` package's), finds the config whose
names and shapes they match (`medvl.engines.sam2.model.config_for_state`; the releases use
SAM 2 hiera-L), and builds the `Sam2Engine` that encodes the key slice and propagates.

`decode_with_embedding` is the decoder call of Sa2VA's / Citrus-V's `_forward_sam_heads`
with `language_embd`: no point and no mask prompt (the prompt encoder's empty point, label -1,
plus its padding point), the [SEG] embedding appended to those sparse embeddings, SAM 2's
`no_mem_embed` added to the image features (a first frame, no memory), multimask output
as on an initial conditioning frame without points, the mask with the best predicted IoU,
and an empty mask where the object score says "no object".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medvl.language.vlm.segtoken_layout import SAM2_PREFIX


@dataclass
class KeyMask:
    mask: np.ndarray  # bool (rows, cols) on the key slice's voxel grid
    score: float  # the decoder's IoU estimate of the chosen mask
    object_score: float  # > 0: the decoder says the object is there


def read_sam2_state(files) -> dict[str, torch.Tensor]:
    """The SAM 2 tensors of the checkpoint's safetensors `files`, prefix removed, as float32 (the engine
    runs in float32; released checkpoints store bfloat16)."""
    from safetensors import safe_open

    state = {}
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            for key in handle.keys():
                if key.startswith(SAM2_PREFIX):
                    state[key[len(SAM2_PREFIX):]] = handle.get_tensor(key).float()
    return state


def read_tensors(files, prefix: str) -> dict[str, torch.Tensor]:
    """Tensors of `files` whose names start with `prefix` (prefix removed)."""
    from safetensors import safe_open

    out = {}
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            for key in handle.keys():
                if key.startswith(prefix):
                    out[key[len(prefix):]] = handle.get_tensor(key)
    return out


def sam2_engine(path, files, device: str = "cpu", first: tuple[str, ...] = ()):
    """(Sam2Engine, config name) from the checkpoint's SAM 2 tensors; CheckpointError when no config fits."""
    from medvl.engines.sam2 import Sam2Settings
    from medvl.engines.sam2.engine import Sam2Engine
    from medvl.engines.sam2.model import RANDOM_TINY, build_model_from_state, config_for_state, default_image_size
    from medvl.language.vlm.checkpoint import CheckpointError

    state = read_sam2_state(files)
    config = config_for_state(state, first)
    if config is None:
        raise CheckpointError(f"VLM checkpoint {path}: its {SAM2_PREFIX}* tensors ({len(state)}) match no SAM 2 "
                              f"config (tried {', '.join(first) or 'the presets'}); expected the weights of a SAM 2 / "
                              f"2.1 model as the sam2 package names them; family detected: segtoken")
    size = default_image_size(config)
    model = build_model_from_state(config, state, size, device, source=f"{path} ({SAM2_PREFIX}*)")
    label = f"{config} @ {size}px from {path}" + (" (RANDOM weights, tests only)" if config == RANDOM_TINY else "")
    return Sam2Engine(model, Sam2Settings(device=device), label), config


def decode_with_embedding(model, fpn: list[torch.Tensor], pos_enc: list[torch.Tensor], frame,
                          embedding: torch.Tensor) -> KeyMask:
    """One slice's mask from SAM 2's mask decoder prompted by `embedding` (hidden_dim,) alone
    (see the module docstring). `fpn`/`pos_enc`: the slice's encoder output; `frame`: its SliceFrame."""
    backbone = {"backbone_fpn": fpn, "vision_pos_enc": pos_enc}
    _, feats, _, sizes = model._prepare_backbone_features(backbone)
    c = model.hidden_dim
    high_res = [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s) for x, s in zip(feats[:-1], sizes[:-1])]
    h, w = sizes[-1]
    pix = (feats[-1] + model.no_mem_embed).permute(1, 2, 0).view(1, c, h, w)
    device = pix.device
    points = (torch.zeros(1, 1, 2, device=device), -torch.ones(1, 1, dtype=torch.int32, device=device))
    sparse, dense = model.sam_prompt_encoder(points=points, boxes=None, masks=None)
    language = embedding.to(device=sparse.device, dtype=sparse.dtype).reshape(1, 1, -1)
    sparse = torch.cat([sparse, language], dim=1)
    multimask = model._use_multimask(True, None)
    masks, ious, _, obj_score = model.sam_mask_decoder(
        image_embeddings=pix, image_pe=model.sam_prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense, multimask_output=multimask, repeat_image=False,
        high_res_features=high_res if model.use_high_res_features_in_sam else None)
    best = int(torch.argmax(ious[0])) if masks.shape[1] > 1 else 0
    low_res = masks[:, best:best + 1].float().cpu()
    present = float(obj_score.reshape(-1)[0]) if model.pred_obj_scores else 1.0
    mask = frame.logits_to_slice(low_res)[0, 0] > 0
    if present <= 0:
        mask = np.zeros_like(mask)
    return KeyMask(np.asarray(mask, bool), float(ious[0, best].clamp(0, 1)), present)
