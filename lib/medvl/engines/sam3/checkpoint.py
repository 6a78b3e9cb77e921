"""SAM 3 checkpoint folders: what is checked, and loading (lazy, once per folder and device).

The public facebook/sam3 release, as transformers' `Sam3VideoModel.save_pretrained` writes
it: `config.json` with `"model_type": "sam3_video"` (a `detector_config` of type "sam3" and a
`tracker_config` of type "sam3_tracker_video"), the weights in `model.safetensors` (or
shards named by `model.safetensors.index.json`) under `detector_model.*`, `tracker_model.*`
and `tracker_neck.*`, and a CLIP tokenizer (`tokenizer.json` / `vocab.json`+`merges.txt`,
`tokenizer_config.json`). A `sam3_tracker_video` folder (the tracker alone) answers points
and boxes but not text.

One `Sam3VideoModel` serves both prompt kinds: the points/boxes tracker is its own
`tracker_model`, given a vision encoder made of the detector's ViT backbone and the
`tracker_neck` (what transformers' conversion mapping for "sam3_tracker" renames these keys
to), so the backbone is held once, not twice.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from medvl.errors import EngineError

log = logging.getLogger(__name__)

MODEL_TYPES = {"sam3_video": "text concepts, points and boxes", "sam3_tracker_video": "points and boxes only"}
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER = ("tokenizer.json", "vocab.json")
EXPECTED = ("config.json with model_type sam3_video (or sam3_tracker_video), model.safetensors "
            "(or model.safetensors.index.json) and, for text, the CLIP tokenizer files")


@dataclass(frozen=True)
class CheckpointInfo:
    folder: Path  # the checkpoint folder
    model_type: str  # "sam3_video" or "sam3_tracker_video"
    has_text: bool  # a concept (text) model and tokenizer are there
    weight_bytes: int  # size of the weight files

    @property
    def label(self) -> str:
        return f"SAM 3 {self.model_type} from {self.folder}"


def inspect_folder(path: str | Path) -> CheckpointInfo:
    """Check a checkpoint folder without loading it; EngineError naming folder, expected files and type found."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise EngineError(f"SAM 3 checkpoint {folder} is not a folder: expected a folder with {EXPECTED}")
    cfg_path = folder / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise EngineError(f"SAM 3 checkpoint {folder} has no config.json: expected {EXPECTED}") from None
    except (OSError, ValueError) as exc:
        raise EngineError(f"SAM 3 checkpoint {cfg_path} is not readable JSON ({exc}): expected {EXPECTED}") from None
    found = config.get("model_type") if isinstance(config, dict) else None
    if found not in MODEL_TYPES:
        raise EngineError(f"SAM 3 checkpoint {folder} has model_type {found!r} in config.json: expected {EXPECTED}")
    weights = [folder / name for name in WEIGHTS if (folder / name).is_file()]
    if not weights:
        raise EngineError(f"SAM 3 checkpoint {folder} (model_type {found}) has no weights: expected {EXPECTED}")
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    has_text = found == "sam3_video" and any((folder / name).is_file() for name in TOKENIZER)
    return CheckpointInfo(folder.resolve(), found, has_text, size)


@dataclass
class Sam3Models:
    """The loaded models of one folder on one device (eval mode)."""

    info: CheckpointInfo
    tracker: object  # Sam3TrackerVideoModel: points and boxes
    video: object | None  # Sam3VideoModel: text concepts (None for a sam3_tracker_video folder)
    tokenizer: object | None  # the CLIP tokenizer of the concept model
    device: str


def _shared_tracker(video):
    """The video model's tracker with a vision encoder that shares the detector's backbone."""
    tracker = video.tracker_model
    vision = copy.copy(video.detector_model.vision_encoder)  # same class (Sam3VisionModel), own module table
    vision._modules = dict(vision._modules)
    vision.neck = video.tracker_neck
    tracker.vision_encoder = vision
    return tracker


@functools.lru_cache(maxsize=2)
def load_models(folder: str, device: str = "cpu") -> Sam3Models:
    """Load a checked folder once per process and device (first use, not at engine build)."""
    import torch
    from transformers import AutoTokenizer, Sam3TrackerVideoModel, Sam3VideoModel

    info = inspect_folder(folder)
    try:
        if info.model_type == "sam3_video":
            video = Sam3VideoModel.from_pretrained(str(info.folder), dtype=torch.float32).to(device).eval()
            tracker = _shared_tracker(video)
        else:
            video = None
            tracker = Sam3TrackerVideoModel.from_pretrained(str(info.folder), dtype=torch.float32).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(info.folder)) if info.has_text else None
    except (OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EngineError(f"SAM 3 checkpoint {info.folder} (model_type {info.model_type}) could not be loaded: "
                          f"{first}; expected {EXPECTED}") from exc
    log.info("%s loaded on %s", info.label, device)
    return Sam3Models(info, tracker, video, tokenizer, device)
