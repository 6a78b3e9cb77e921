"""`Sam2Settings`: every option of the `sam2` engine, parsed once at the edge.

Sources, first match wins: explicit arguments (CLI `--checkpoint`, `--sam2-config`,
`--image-size`), the server's `--conf` keys (`settings_from_conf`), then the
environment (`MEDVL_SAM2_CHECKPOINT`, `MEDVL_SAM2_CONFIG`, `MEDVL_SAM2_IMAGE_SIZE`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Mapping

from medvl.errors import EngineError
from medvl.intensity import IntensitySettings

ENV_CHECKPOINT = "MEDVL_SAM2_CHECKPOINT"
ENV_CONFIG = "MEDVL_SAM2_CONFIG"
ENV_IMAGE_SIZE = "MEDVL_SAM2_IMAGE_SIZE"

# server --conf keys -> Sam2Settings fields
CONF_KEYS = {
    "sam2_checkpoint": "checkpoint",
    "sam2_config": "config",
    "sam2_image_size": "image_size",
    "sam2_cache_mb": "cache_bytes",
    "sam2_device": "device",
}


@dataclass(frozen=True)
class Sam2Settings:
    checkpoint: str | None = None  # local SAM 2 / 2.1 / MedSAM2 .pt; None: $MEDVL_SAM2_CHECKPOINT; never downloaded
    config: str | None = None  # preset name (see model.PRESETS) or .yaml path; None: from the checkpoint's file name
    image_size: int | None = None  # square model input; None: the config's (1024 SAM 2.x, 512 MedSAM2)
    cache_bytes: int = 2 * 2**30  # image-feature budget per bound volume (4.2 MB/slice at 512 px, 16.8 MB at 1024)
    run_cache_bytes: int = 512 * 2**20  # memory-bank walks kept for reuse beyond the ones in use
    device: str = "cpu"  # torch device of the model
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    intensity: IntensitySettings = IntensitySettings()  # per-modality mapping into [0, 1]
    fill_hole_area: int = 8  # fill background islands up to this many low-res pixels (SAM 2's default)
    stop_at_empty: bool = True  # an empty mask ends a walk (False: walk to the volume's edge)
    # re-propagation after a correction stops where it converges (docs/sam2.md "Convergence stop"):
    # a walk that agrees with the previous run on num_maskmem consecutive slices keeps the old results beyond;
    # on by default: Dice vs full re-propagation 0.99999 / 0.99994 on the bench's two scenarios (random weights)
    converge_stop: bool = True  # False: every correction re-tracks its whole walk (the old behaviour)
    converge_iou: float = 0.98  # a slice agrees when the low-res masks' IoU is at least this (both empty: 1)
    converge_memory_tol: float = 0.01  # ... and its memory differs by at most this (mean |new - old| / mean |old|)
    random_tiny: bool = False  # TESTS ONLY: a tiny random-weight model, no checkpoint
    seed: int = 0  # random weights' seed (random_tiny, benchmarks)

    def resolved(self) -> "Sam2Settings":
        """Fill checkpoint / config / image size from the environment where not given."""
        env = os.environ
        size = self.image_size
        if size is None and env.get(ENV_IMAGE_SIZE):
            size = _as_int(env[ENV_IMAGE_SIZE], ENV_IMAGE_SIZE)
        return replace(self, checkpoint=self.checkpoint or env.get(ENV_CHECKPOINT) or None,
                       config=self.config or env.get(ENV_CONFIG) or None, image_size=size)


def _as_int(value, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise EngineError(f"{what}={value!r} is not an integer") from None


def settings_from_conf(conf: Mapping[str, str], base: Sam2Settings = Sam2Settings()) -> Sam2Settings:
    """Settings from MONAI Label `--conf` pairs (strings): sam2_checkpoint, sam2_config,
    sam2_image_size, sam2_cache_mb, sam2_device; an unknown "sam2_..." key is an EngineError naming
    it, keys without that prefix are not the engine's and are ignored."""
    unknown = sorted(k for k in conf if k.startswith("sam2_") and k not in CONF_KEYS)
    if unknown:
        raise EngineError(f"--conf {unknown[0]} is not a sam2 setting: use {', '.join(CONF_KEYS)}")
    values: dict = {}
    for key, field_name in CONF_KEYS.items():
        if key not in conf or conf[key] in (None, ""):
            continue
        raw = conf[key]
        if field_name == "image_size":
            values[field_name] = _as_int(raw, key)
        elif field_name == "cache_bytes":
            values[field_name] = _as_int(raw, key) * 2**20
        else:
            values[field_name] = str(raw)
    return replace(base, **values)
