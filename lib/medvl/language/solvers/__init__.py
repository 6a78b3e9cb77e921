"""Concept solvers: a grounded prompt -> a 3D mask of the volume, with what was decided.

`solve(volume, grounding, session=None)` runs the concept's solver. Tissue concepts (body,
lungs, left/right lung, airway, bone, fat) come from calibrated CT Hounsfield ranges
(`anatomy.CTAnatomy`). The nodule concept finds lesion candidates from HU
(`nodule.find_candidates`), picks one by the prompt's side/size/level words, and - with a
session and `refine != "hu"` - hands the segmentation engine a box on the candidate's
largest slice and lets it propagate. `refine="auto"` (the default) keeps the engine's mask only
where it agrees with the HU evidence (Dice >= `agree_min` = 0.8), else the HU mask: the
engine may move the boundary, not change the object. Measured on the sample CTs (nodule
from text, `python -m medvl.language.bench`): HU alone 0.872 (lung2) / 0.944 (lung1);
engine always 0.927 / 0.735 (engine-HU agreement 0.869 / 0.726); auto 0.927 / 0.944.
Without a session the HU mask is the answer (no model, a few seconds).

Brain MR concepts dispatch to `VOLUME_SOLVERS` (`solvers.brain`): solver "atlas" (structures of
a registered template, cached per volume) and "mr_lesion" (abnormal region vs the registered
tissue model and midline mirror). They take `(volume, grounding, session, settings)` and need
no CT anatomy.

With a VLM configured (`SolveSettings.vlm`), every understood concept is solved by the VLM
instead: it is asked for a box on key slices, the box becomes a session prompt and the engine
propagates it (`medvl.language.vlm.tasks.solve_with_vlm`); "none" is a NotFoundError.

Masks are bool numpy (k, j, i) in the volume's grid.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from medvl.language.errors import SolverError
from medvl.language.grounding import Grounding
from medvl.language.solvers import brain as _brain
from medvl.language.solvers import nodule as _nodule
from medvl.language.solvers.anatomy import CTAnatomy, anatomy_for, require_ct
from medvl.language.vlm.backend import VLMConfig
from medvl.metrics import dice
from medvl.volume import Volume

log = logging.getLogger(__name__)

REFINE_MODES = ("hu", "engine", "auto")


@dataclass(frozen=True)
class SolveSettings:
    refine: str = "auto"  # "hu": HU candidate as is; "engine": box + propagation; "auto": engine if it agrees
    agree_min: float = 0.8  # "auto": minimum Dice between engine and HU masks to keep the engine's
    box_margin: int = 3  # voxels added around the candidate's box on its largest slice
    obj_id: int = 1  # session object used for refinement
    nodule: _nodule.NoduleSettings = field(default_factory=_nodule.NoduleSettings)
    brain: _brain.BrainSettings = field(default_factory=_brain.BrainSettings)  # atlas registration, MR lesion
    vlm: VLMConfig = field(default_factory=VLMConfig)  # language backend: offline (default) or a VLM checkpoint

    @property
    def needs_session(self) -> bool:
        """True when solving uses the engine: refinement, or a VLM's box that the engine propagates."""
        return self.refine != "hu" or self.vlm.enabled


@dataclass
class SolveResult:
    mask: np.ndarray  # bool (k, j, i)
    concept: str  # concept name
    info: dict  # method, qualifiers used, candidates, seconds per stage, message

    def __iter__(self):  # `mask, info = solve(...)` also works
        return iter((self.mask, self.info))


def _tissue(attr: str) -> Callable:
    def run(anatomy: CTAnatomy, grounding: Grounding, session, settings: SolveSettings):
        mask = getattr(anatomy, attr)
        if not mask.any():
            raise SolverError(f"no {attr.replace('_', ' ')} found in {anatomy.volume.name or 'this volume'}")
        return mask.copy(), {"method": "hu"}
    return run


SOLVERS: dict[str, Callable] = {
    "body": _tissue("body"),
    "lungs": _tissue("lungs"),
    "left_lung": _tissue("left_lung"),
    "right_lung": _tissue("right_lung"),
    "airway": _tissue("airway"),
    "bone": _tissue("bone"),
    "fat": _tissue("fat"),
    "nodule": _nodule.solve_nodule,
}


# solvers working on the volume itself (no CT anatomy): (volume, grounding, session, settings) -> (mask, info)
VOLUME_SOLVERS: dict[str, Callable] = {
    "atlas": _brain.solve_atlas,
    "mr_lesion": _brain.solve_mr_lesion,
}


def refine_if_agrees(volume: Volume, session, evidence: np.ndarray, settings: "SolveSettings", method: str,
                     agreement_key: str) -> tuple[np.ndarray, dict]:
    """The engine's mask from a box around `evidence` (bool (k, j, i)) when it agrees with it
    (Dice >= `settings.agree_min`, or always with refine="engine"), else the evidence itself:
    the engine may move the boundary, not change the object. Returns (mask, info) with the
    engine's seconds, the agreement under `agreement_key` and the method ("<method>+engine" or
    "<method> (engine mask disagreed)")."""
    t1 = time.perf_counter()
    eng = refine_with_session(volume, session, evidence, settings.obj_id, settings.box_margin)
    agree = dice(eng, evidence)
    info = {"seconds_engine": round(time.perf_counter() - t1, 3), agreement_key: round(agree, 3)}
    if settings.refine == "engine" or agree >= settings.agree_min:
        return eng, {**info, "method": f"{method}+engine"}
    return evidence, {**info, "method": f"{method} (engine mask disagreed)"}


def refine_with_session(volume: Volume, session, seed_mask: np.ndarray, obj_id: int = 1, margin: int = 3) -> np.ndarray:
    """Box prompt (ITK (i, j, k) corners) around `seed_mask` on its largest axial slice, then
    the engine's propagation; returns the session's bool (k, j, i) mask of `obj_id`."""
    same_image = session.volume is not None and session.volume.array is volume.array and \
        session.volume.geometry == volume.geometry  # e.g. a copy that only overrides the modality
    if not same_image:
        session.set_volume(volume)  # another image: the session starts over on it
    elif obj_id in session.objects:
        session.reset(obj_id)
    areas = seed_mask.sum(axis=(1, 2))
    k = int(np.argmax(areas))
    rows = np.flatnonzero(seed_mask[k].any(axis=1))
    cols = np.flatnonzero(seed_mask[k].any(axis=0))
    ni, nj = volume.size_ijk[0], volume.size_ijk[1]
    i0, i1 = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin, ni - 1)
    j0, j1 = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin, nj - 1)
    session.add_box((i0, j0, k), (i1, j1, k), obj_id=obj_id)
    session.run_propagation(obj_id)
    return session.mask(obj_id)


def solve(volume: Volume, grounding: Grounding, session=None, settings: SolveSettings = SolveSettings()) -> SolveResult:
    """The mask of a grounded concept on `volume` (see the module docstring).

    Raises NotUnderstoodError for a grounding that was not understood and SolverError when
    the concept cannot be solved here (modality, nothing found).
    """
    grounding.require()
    if settings.refine not in REFINE_MODES:
        raise SolverError(f"refine={settings.refine!r}: choose one of {', '.join(REFINE_MODES)}")
    concept = grounding.concept
    t0 = time.perf_counter()
    if settings.vlm.enabled:  # the VLM's box on a key slice, propagated by the engine (medvl.language.vlm.tasks)
        from medvl.language.vlm.tasks import solve_with_vlm

        mask, info = solve_with_vlm(volume, grounding, session, settings)
    elif concept.solver in VOLUME_SOLVERS:
        mask, info = VOLUME_SOLVERS[concept.solver](volume, grounding, session, settings)
    else:
        require_ct(volume, concept.label)
        anatomy = anatomy_for(volume)
        mask, info = SOLVERS[concept.solver](anatomy, grounding, session, settings)
        info["seconds_anatomy"] = dict(anatomy.seconds)
    info.update(concept=concept.name, label=concept.label, grounding=grounding.as_dict(),
                seconds=round(time.perf_counter() - t0, 3), voxels=int(mask.sum()))
    info["message"] = f"{concept.label}: {info['voxels']} voxels ({info['method']})"
    log.info("solved %r -> %s", grounding.text, info["message"])
    return SolveResult(mask=mask, concept=concept.name, info=info)
