"""`Sam3Settings`: every option of the `sam3` engine, parsed once at the edge.

Sources, first match wins: explicit arguments (CLI `--checkpoint`, `--device`), the
server's `--conf` keys (`settings_from_conf`: sam3_checkpoint, sam3_device, sam3_cache_mb),
then the environment (`MEDVL_SAM3_CHECKPOINT`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Mapping

from medvl.errors import EngineError
from medvl.intensity import IntensitySettings

ENV_CHECKPOINT = "MEDVL_SAM3_CHECKPOINT"

# server --conf keys -> Sam3Settings fields
CONF_KEYS = {
    "sam3_checkpoint": "checkpoint",
    "sam3_device": "device",
    "sam3_cache_mb": "cache_bytes",
}


@dataclass(frozen=True)
class Sam3Settings:
    checkpoint: str | None = None  # SAM 3 checkpoint folder (config.json + safetensors); never downloaded
    device: str = "cpu"  # torch device of the models ("cuda" when asked)
    cache_bytes: int = 2 * 2**30  # image-feature budget per bound volume (bytes)
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    intensity: IntensitySettings = IntensitySettings()  # per-modality mapping into [0, 1]
    stop_at_empty: bool = True  # an empty mask ends a walk (False: walk to the volume's edge)
    concept_threshold: float | None = None  # text: keep instances scoring above; None: the checkpoint's config

    def resolved(self) -> "Sam3Settings":
        return replace(self, checkpoint=self.checkpoint or os.environ.get(ENV_CHECKPOINT) or None)


def settings_from_conf(conf: Mapping[str, str], base: Sam3Settings = Sam3Settings()) -> Sam3Settings:
    """Settings from MONAI Label `--conf` pairs; an unknown "sam3_..." key is an EngineError naming it."""
    unknown = sorted(k for k in conf if k.startswith("sam3_") and k not in CONF_KEYS)
    if unknown:
        raise EngineError(f"--conf {unknown[0]} is not a sam3 setting: use {', '.join(CONF_KEYS)}")
    values: dict = {}
    for key, name in CONF_KEYS.items():
        raw = conf.get(key)
        if raw in (None, ""):
            continue
        if name == "cache_bytes":
            try:
                values[name] = int(str(raw).strip()) * 2**20
            except ValueError:
                raise EngineError(f"--conf {key}={raw!r} is not an integer (megabytes)") from None
        else:
            values[name] = str(raw)
    return replace(base, **values)
