"""Shared brain-MR cases for the atlas and brain-solver tests: a small seeded validation
phantom (known deformation, coronal grid 2 x 2 x 4 mm, bias and noise). Registrations are
cached by volume content (medvl.language.atlas.register), so both test files pay for one."""

from __future__ import annotations

from functools import lru_cache

from medvl.bench.brain_phantom import PhantomSettings, make_phantom
from medvl.bench.language_brain import grounding  # noqa: F401  (re-exported for the tests)

PHANTOM = PhantomSettings(spacing=(2.0, 2.0, 4.0), orientation="coronal")


@lru_cache(maxsize=1)
def phantom():
    return make_phantom(seed=3, settings=PHANTOM)
