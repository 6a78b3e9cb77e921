"""`ServerSettings`: the server's typed configuration, parsed once from `--conf KEY VALUE`.

MONAI Label hands the app its `--conf` pairs as a flat `{str: str}` dict; `from_conf`
turns them into typed fields here and nowhere else. Pairs named after the chosen engine
(`sam2_config`, `sam2_image_size`, ...) are that engine's own; they are kept in
`engine_conf` and checked here by the engine's parser (`medvl.engines`). Other keys this
app does not know are logged and ignored, because MONAI Label itself passes some (e.g.
`server_mode`).

`vlm DIR` (with `vlm_device cpu|cuda`) names a vision-language checkpoint; it is checked here,
at start (`VLMConfig.from_path`: files, family, weight layout, free memory), so a bad folder
stops the server with one line instead of failing the first request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields

from pathlib import Path

from medvl.engines import ENGINES, engine_options_from_conf
from medvl.errors import EngineError, MedVLError
from medvl.language.vlm.backend import VLMConfig

logger = logging.getLogger(__name__)

AXES = ("i", "j", "k")


class ConfigError(MedVLError):
    """A `--conf KEY VALUE` pair has a value of the wrong type or out of range."""


@dataclass(frozen=True)
class ServerSettings:
    engine: str = "litemedsam"  # segmentation engine name (medvl.engines) shared by all sessions
    checkpoint: str = ""  # user-supplied weights path for the engine; "" = the packaged default
    labels: tuple[str, ...] = ("lesion",)  # label names offered to clients; label n -> object id n
    cache_mb: int = 2048  # memory bound over all sessions (volume + embeddings + masks), LRU by bytes
    session_ttl_s: float = 1800.0  # a session idle this long is dropped
    default_axis: str = "k"  # slicing/propagation axis when a request names none
    threads: int = 0  # torch intra-op threads for the engine; 0 = leave torch's default
    text_refine: str = field(default_factory=lambda: _shared_refine())  # nodule refinement when a request names none: hu / engine / auto; default SolveSettings.refine, shared with the CLI
    report_dir: str = ""  # where medvl_report writes report.json/.md/overview.png; "" = <studies>/.medvl-reports
    reports_kept: int = 64  # newest reports kept in report_dir (older ones deleted)
    max_propagation_s: float = 300.0  # propagation compute one request may use; then it stops, keeping what was done
    max_upload_mb: int = 1024  # largest upload (image or label file, as sent); bigger bodies get HTTP 413
    max_voxels: int = 512 * 512 * 2048  # largest image an upload may declare (voxels; data <= 4 bytes each)
    pacs_cache: str = ""  # --studies <DICOMweb URL>: series cache (a folder per URL); "" = ~/.cache/medvl/dicomweb
    vlm: str = ""  # vision-language checkpoint folder (Qwen2.5-VL, Qwen3-VL, Gemma 3; docs/vlm.md); "" = offline
    vlm_device: str = field(default_factory=lambda: _shared_vlm_device())  # where the VLM runs: cpu / cuda
    engine_conf: tuple[tuple[str, str], ...] = ()  # the engine's own --conf pairs ("<engine>_...", e.g. sam2_config)
    language: VLMConfig = field(default_factory=VLMConfig)  # the checked language backend (from vlm, vlm_device)

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ConfigError(f"engine {self.engine!r} is not one of {', '.join(sorted(ENGINES))}")
        if self.default_axis not in AXES:
            raise ConfigError(f"default_axis {self.default_axis!r} is not one of i, j, k")
        if self.cache_mb <= 0:
            raise ConfigError(f"cache_mb must be > 0 (MiB over all sessions), got {self.cache_mb}")
        if self.session_ttl_s <= 0:
            raise ConfigError(f"session_ttl_s must be > 0 seconds, got {self.session_ttl_s}")
        if self.text_refine not in ("hu", "engine", "auto"):
            raise ConfigError(f"text_refine {self.text_refine!r} is not one of hu, engine, auto")
        if self.max_propagation_s <= 0:
            raise ConfigError(f"max_propagation_s must be > 0 seconds, got {self.max_propagation_s}")
        if self.max_upload_mb < 1 or self.max_voxels < 1:
            raise ConfigError(f"max_upload_mb and max_voxels must be >= 1, got {self.max_upload_mb}, {self.max_voxels}")
        if self.reports_kept < 1:
            raise ConfigError(f"reports_kept must be >= 1, got {self.reports_kept}")
        if not self.labels or any(not name for name in self.labels):
            raise ConfigError(f"labels must be a comma-separated list of names, got {self.labels!r}")
        if self.vlm_device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"vlm_device {self.vlm_device!r} is not one of cpu, cuda (or cuda:N)")
        if self.vlm and (self.language.path != str(Path(self.vlm).expanduser().resolve())
                         or self.language.device != self.vlm_device):
            try:  # checked at start: files, family, weight layout, memory (loaded on the first language request)
                object.__setattr__(self, "language", VLMConfig.from_path(self.vlm, self.vlm_device))
            except EngineError as exc:
                raise ConfigError(f"--conf vlm: {exc}") from None

    def engine_options(self) -> dict:
        """Options for `medvl.engines.get_engine(self.engine, ...)` from `engine_conf`."""
        try:
            return engine_options_from_conf(self.engine, dict(self.engine_conf))
        except EngineError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def cache_bytes(self) -> int:
        return int(self.cache_mb) * 1024 * 1024

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The `--conf` keys (engine_conf is filled from the engine's own "<engine>_..." keys)."""
        return tuple(f.name for f in fields(cls) if f.name not in ("engine_conf", "language"))

    @classmethod
    def from_conf(cls, conf: dict | None) -> "ServerSettings":
        """Typed settings from MONAI Label's `--conf` dict (all values strings)."""
        conf = conf or {}
        values = {key: _parse(key, raw) for key, raw in conf.items() if key in cls.keys()}
        own = f"{values.get('engine', cls.engine)}_"
        for key in conf:
            if key not in values and not key.startswith(own):
                logger.info("--conf %s is not a MedVL setting (known: %s); left to MONAI Label", key,
                            ", ".join(cls.keys()))
        values["engine_conf"] = tuple(sorted((k, str(v)) for k, v in conf.items() if k.startswith(own)))
        settings = cls(**values)
        settings.engine_options()  # a bad engine key fails the start, named
        return settings


def _parse(key: str, raw):
    default = getattr(ServerSettings, key)
    text = str(raw).strip()
    try:
        if isinstance(default, tuple):
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = type(default).__name__
        raise ConfigError(f"--conf {key} {raw!r}: expected {kind}, e.g. --conf {key} {default}") from None
    return text


def _shared_vlm_device() -> str:
    """The one default of the VLM device (medvl.language.vlm.backend.VLMConfig), shared with the CLI."""
    return VLMConfig().device


def _shared_refine() -> str:
    """The one default of the text solvers' `refine` (medvl.language.solvers.SolveSettings)."""
    from medvl.language.solvers import SolveSettings

    return SolveSettings().refine
