"""The `sam2` engine: SAM 2 / SAM 2.1 / MedSAM2 memory-bank propagation from a local checkpoint.

    from medvl.engines.sam2 import available, build_sam2_engine
    if available():                                  # a checkpoint is configured and present
        engine = build_sam2_engine()                 # MEDVL_SAM2_CHECKPOINT, config from its name
    engine = build_sam2_engine("ckpt/MedSAM2_latest.pt")                  # medsam2 preset, 512 px
    engine = build_sam2_engine("ckpt/sam2.1_hiera_small.pt", image_size=512)

Without a checkpoint the engine is unavailable (`available()` says why) and nothing is
downloaded. `build_sam2_engine(random_tiny=True)` is a tiny random-weight model for tests.
See docs/sam2.md for the install and for use from the CLI, the server and Slicer.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from medvl.engines.sam2.settings import ENV_CHECKPOINT, Sam2Settings, settings_from_conf
from medvl.errors import EngineError

log = logging.getLogger(__name__)

__all__ = ["Availability", "Sam2Settings", "available", "build_sam2_engine", "resolve_spec", "settings_from_conf"]

INSTALL_HINT = ("install it with `SAM2_BUILD_CUDA=0 pip install --no-build-isolation --no-deps sam2==1.1.0` "
                "after `pip install -c requirements/constraints.txt -r requirements/sam2.txt` (docs/sam2.md)")
NO_CHECKPOINT = (f"the sam2 engine needs a local SAM 2 / SAM 2.1 / MedSAM2 checkpoint: pass --checkpoint FILE.pt, "
                 f"set {ENV_CHECKPOINT}, or sam2_checkpoint=FILE.pt in the server --conf (nothing is downloaded)")


@dataclass(frozen=True)
class Availability:
    ok: bool  # the engine can be built here
    reason: str  # what it would load, or why not and how to fix it

    def __bool__(self) -> bool:
        return self.ok


def _require_sam2() -> None:
    try:
        import sam2.sam2_video_predictor  # noqa: F401
    except ImportError as exc:
        raise EngineError(f"the sam2 package is not importable ({exc}): {INSTALL_HINT}") from None


def resolve_spec(settings: Sam2Settings):
    """The `model.ModelSpec` the settings name; EngineError naming path and config when they do not fit."""
    from medvl.engines.sam2 import model

    s = settings.resolved()
    if s.random_tiny:
        return model.ModelSpec(model.RANDOM_TINY, None, s.image_size or 64, s.device)
    if not s.checkpoint:
        raise EngineError(NO_CHECKPOINT)
    path = Path(s.checkpoint).expanduser()
    config = s.config or model.config_for_checkpoint(path)
    if config is None:
        raise EngineError(f"cannot tell the config of SAM 2 checkpoint {path} from its name: pass --sam2-config "
                          f"(one of {', '.join(model.PRESETS)}, or a .yaml file)")
    if not path.is_file():
        raise EngineError(f"SAM 2 checkpoint {path} (config {config}) does not exist: pass an existing .pt file "
                          f"(--checkpoint, {ENV_CHECKPOINT} or sam2_checkpoint in the server --conf)")
    size = s.image_size or model.default_image_size(config)
    return model.ModelSpec(config, path, int(size), s.device)


def available(settings: Sam2Settings | None = None) -> Availability:
    """Whether a sam2 engine can be built from `settings` (or the environment); loads nothing."""
    try:
        _require_sam2()
        spec = resolve_spec(settings or Sam2Settings())
    except EngineError as exc:
        return Availability(False, str(exc))
    return Availability(True, f"sam2 {spec.config} at {spec.image_size} px from {spec.checkpoint or 'random weights'}")


@functools.lru_cache(maxsize=2)
def _shared_model(spec, seed: int):
    from medvl.engines.sam2.model import build_model

    return build_model(spec, seed=seed)


def build_sam2_engine(checkpoint: str | None = None, config: str | None = None, image_size: int | None = None,
                      random_tiny: bool = False, settings: Sam2Settings | None = None, **options):
    """A `Sam2Engine` from a checkpoint (or the environment); `random_tiny=True` is for tests only.

    `options` are other `Sam2Settings` fields (cache_bytes, device, threads, stop_at_empty, ...).
    The model is shared between engines built from the same file, config and image size.
    """
    from medvl.engines.sam2.engine import Sam2Engine

    _require_sam2()
    base = settings or Sam2Settings()
    given = {k: v for k, v in dict(checkpoint=checkpoint, config=config, image_size=image_size).items()
             if v is not None}
    s = replace(base, **given, random_tiny=random_tiny or base.random_tiny, **options).resolved()
    if s.threads:
        torch.set_num_threads(s.threads)
    spec = resolve_spec(s)
    model = _shared_model(spec, s.seed)
    label = f"{spec.config} @ {spec.image_size}px" + (f" from {spec.checkpoint}" if spec.checkpoint else
                                                      " (RANDOM weights, tests only)")
    return Sam2Engine(model, s, label)
