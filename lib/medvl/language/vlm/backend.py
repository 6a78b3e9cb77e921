"""The language-backend setting: `VLMConfig`, parsed once at the edge, and the per-process model cache.

One setting for every entry point (STYLE rules 5 and 11): `VLMConfig()` (the default) is the
offline language layer (rules, sentence encoder, HU/atlas solvers, template text);
`VLMConfig.from_path(DIR, device)` names a Qwen2.5-VL, Qwen3-VL or Gemma 3 checkpoint folder,
or a [SEG]-token model (Sa2VA-Qwen2.5-VL, Citrus-V: family "segtoken", `segtoken.SegTokenModel`,
whose [SEG] hidden state prompts SAM 2 instead of a box; docs/segtoken.md).
The CLI builds it from `--vlm DIR --device cpu|cuda`, the server from `--conf vlm DIR`
(`--conf vlm_device cuda`), batch runs carry it in `BatchSettings`; the language layer
receives it inside `SolveSettings.vlm`.

`from_path` checks the folder at once (`checkpoint.inspect_checkpoint`: files, family,
weight layout) and that its weights fit in the free memory of the device, so a bad folder is
one error line before any work (the server refuses to start). Loading is lazy: `load_adapter`
loads a checkpoint on its first use and keeps it for the life of the process, keyed by
(resolved path, device) - one copy per process however many sessions, requests or volumes
use it (a batch worker loads it once).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from medvl.errors import EngineError
from medvl.language.vlm.checkpoint import CheckpointError, CheckpointInfo, check_memory, inspect_checkpoint

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
OFFLINE = {"backend": "offline", "model": "medvl rules + all-MiniLM-L6-v2 grounding, measured-fact text"}


@dataclass(frozen=True)
class VLMConfig:
    path: str = ""  # checkpoint folder; "" = the offline language layer (no VLM)
    device: str = "cpu"  # where the VLM runs: "cpu" or "cuda" (also "cuda:N")
    family: str = ""  # detected by from_path: qwen2_5_vl / qwen3_vl / gemma3 / segtoken

    def __post_init__(self):
        if self.device.split(":")[0] not in DEVICES:
            raise EngineError(f"VLM device {self.device!r} is not one of cpu, cuda (or cuda:N)")

    @property
    def enabled(self) -> bool:
        return bool(self.path)

    @property
    def model(self) -> str:
        """The checkpoint's name as replies show it (the folder's name)."""
        return Path(self.path).name if self.path else ""

    @classmethod
    def from_path(cls, path, device: str | None = None, available: int | None = None) -> "VLMConfig":
        """Checked setting for the checkpoint at `path` (see the module docstring); "" or None: offline.
        CheckpointError (one line) for a bad folder or one too large for the free memory."""
        device = device or cls.device
        if not path:
            return cls(device=device)
        cls(device=device)  # the device name first: a typo is named before the folder is read
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise EngineError(f"VLM device {device!r} requested but torch sees no CUDA device "
                                  f"(torch {torch.__version__}): use --device cpu")
        info = inspect_checkpoint(path)
        check_memory(info, device, available)
        return cls(str(info.path.resolve()), device, info.family)

    def describe(self) -> dict:
        """What replies and /info say about the language backend."""
        if not self.enabled:
            return dict(OFFLINE)
        return {"backend": "vlm", "family": self.family, "model": self.model, "path": self.path,
                "device": self.device}

    def to_dict(self) -> dict:
        """Hashed into batch settings: what changes the outputs."""
        return {"path": self.path, "device": self.device, "family": self.family} if self.enabled else {}


_CACHE: dict[tuple[str, str], object] = {}
_CACHE_LOCK = threading.Lock()


def load_adapter(config: VLMConfig):
    """The `VLMAdapter` (a `SegTokenModel` for family "segtoken") of `config`, loaded on first use and
    cached per process (path, device)."""
    from medvl.language.vlm.adapter import VLMAdapter
    from medvl.language.vlm.segtoken import SegTokenModel

    if not config.enabled:
        raise EngineError("no VLM configured: give --vlm DIR (server: --conf vlm DIR)")
    key = (str(Path(config.path).resolve()), config.device)
    with _CACHE_LOCK:  # one load at a time; others wait for it rather than loading a second copy
        adapter = _CACHE.get(key)
        if adapter is None:
            t0 = time.perf_counter()
            loader = SegTokenModel if config.family == SegTokenModel.family else VLMAdapter
            adapter = loader.from_dir(config.path, device=config.device)
            _CACHE[key] = adapter
            log.info("VLM %s (%s) loaded on %s in %.1f s", config.model, adapter.family, config.device,
                     time.perf_counter() - t0)
        return adapter


def loaded() -> list[tuple[str, str]]:
    """(path, device) of the checkpoints this process holds."""
    with _CACHE_LOCK:
        return list(_CACHE)


__all__ = ["CheckpointError", "CheckpointInfo", "VLMConfig", "load_adapter", "loaded"]
