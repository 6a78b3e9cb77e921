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


ENGINES: dict[str, Callable[..., object]] = {
    "litemedsam": _litemedsam,
}


def get_engine(name: str, **options):
    factory = ENGINES.get(name)
    if factory is None:
        raise EngineError(f"unknown engine {name!r}: choose one of {', '.join(sorted(ENGINES))}")
    return factory(**options)
