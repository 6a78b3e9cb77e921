"""The `sam3` engine: SAM 3 (transformers `Sam3VideoModel` / `Sam3TrackerVideoModel`) from a local folder.

    from medvl.engines.sam3 import build_sam3_engine
    engine = build_sam3_engine("ckpt/sam3")            # checks the folder now, loads on first use
    engine = build_sam3_engine("ckpt/sam3", device="cuda")

Points and boxes go to the tracker, text concepts to the concept model (every instance its
own object). Nothing is downloaded. See docs/sam3.md.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from medvl.engines.sam3.settings import ENV_CHECKPOINT, Sam3Settings, settings_from_conf
from medvl.errors import EngineError

__all__ = ["Sam3Settings", "build_sam3_engine", "settings_from_conf"]

NO_CHECKPOINT = (f"the sam3 engine needs a local SAM 3 checkpoint folder: pass --checkpoint DIR, set "
                 f"{ENV_CHECKPOINT}, or sam3_checkpoint DIR (or checkpoint DIR) in the server --conf "
                 f"(nothing is downloaded; docs/sam3.md)")


def build_sam3_engine(checkpoint: str | None = None, device: str | None = None, settings: Sam3Settings | None = None,
                      **options):
    """A `Sam3Engine` for a checked checkpoint folder; the models load on first use.

    `options` are other `Sam3Settings` fields (cache_bytes, threads, stop_at_empty, ...).
    """
    from medvl.engines.sam3.checkpoint import inspect_folder
    from medvl.engines.sam3.engine import Sam3Engine

    base = settings or Sam3Settings()
    given = {k: v for k, v in dict(checkpoint=checkpoint, device=device).items() if v is not None}
    s = replace(base, **given, **options).resolved()
    if not s.checkpoint:
        raise EngineError(NO_CHECKPOINT)
    if s.device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(f"sam3 device {s.device!r} asked for, but torch sees no CUDA device: use --device cpu")
    if s.threads:
        torch.set_num_threads(s.threads)
    return Sam3Engine(inspect_folder(s.checkpoint), s)
