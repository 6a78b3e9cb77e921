"""Brain MR benchmark: atlas structures on the validation phantom, the MR lesion rule on brain1
and on a healthy template, refusals on CT and non-brain MR.

    python -m medvl.bench.language_brain --json OUT [--seeds 0 1] [--engine]

Prints JSON: per-structure Dice (both sides) of affine+deformable and affine-only
registration on seeded phantoms (`medvl.bench.brain_phantom`: random affine + B-spline
deformation, sagittal 1 x 1 x 3 mm grid, bias field, Rician noise), their means over thalamus,
putamen, caudate, hippocampus and amygdala, seconds to the first structure (registration) and
to a later one (lookup), brain1 lesion Dice against its expert label, a 10 mm lesion inserted
into phantom 0 (not used for tuning), and whether the healthy template, phantom 0 and the
refusals answer as they must. Timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from medvl.bench import emit_json
from medvl.bench.brain_phantom import PhantomSettings, healthy_template, insert_lesion, make_phantom
from medvl.language import atlas as _atlas
from medvl.language.atlas import labels as _labels
from medvl.language.concepts import Concept
from medvl.language.errors import SolverError
from medvl.language.grounding import Grounding, Qualifiers
from medvl.metrics import dice

SCORED = ("thalamus", "putamen", "caudate", "hippocampus", "amygdala")
SAMPLE_DIR = Path(__file__).resolve().parents[3] / "sample_data"


def concept(name: str, solver: str = "atlas", kind: str = "tissue") -> Concept:
    """A brain concept as the vocabulary defines it (for benchmarks/tests that bypass grounding)."""
    return Concept(name, name.replace("_", " "), kind, solver, ("MR",), (name.replace("_", " "),),
                   (name.replace("_", " "),))


def grounding(name: str, side: str | None = None, solver: str = "atlas", kind: str = "tissue") -> Grounding:
    return Grounding(text=f"{side or ''} {name}".strip(), concept=concept(name, solver, kind),
                     qualifiers=Qualifiers(side=side), method="keyword", score=1.0)


def score_phantom(seed: int, deformable: bool, phantom_settings: PhantomSettings = PhantomSettings()) -> dict:
    """Dice per scored structure and side for one phantom, and the seconds of each step."""
    from medvl.language.solvers import SolveSettings, solve
    from medvl.language.solvers.brain import BrainSettings

    ph = make_phantom(seed, phantom_settings)
    settings = SolveSettings(brain=BrainSettings(registration=_atlas.RegistrationSettings(deformable=deformable)))
    _atlas.clear_cache()
    out: dict = {"dice": {}}
    for n, name in enumerate(SCORED):
        for side in ("left", "right"):
            t0 = time.perf_counter()
            res = solve(ph.volume, grounding(name, side), settings=settings)
            dt = time.perf_counter() - t0
            if n == 0 and side == "left":
                out["seconds_first"] = round(dt, 2)
                out["registration"] = res.info["registration"]
                out["seconds_stages"] = res.info["seconds_registration_stages"]
            else:
                out["seconds_later_max"] = round(max(out.get("seconds_later_max", 0.0), dt), 3)
            truth = np.isin(ph.labels, _labels.structures()[name].values(side))
            out["dice"][f"{side}_{name}"] = round(dice(res.mask, truth), 3)
    out["mean_dice"] = round(float(np.mean(list(out["dice"].values()))), 3)
    return out


def lesion_cases(engine: bool = False) -> dict:
    """brain1 lesion Dice (evidence, and engine when asked) and the healthy template's answer."""
    from medvl.io import read_mask, read_volume
    from medvl.language.solvers import SolveSettings, solve

    out = {}
    vol = read_volume(SAMPLE_DIR / "brain1_image.nii.gz")
    label = read_mask(SAMPLE_DIR / "brain1_label.nii.gz", like=vol).array > 0
    g = grounding("brain_lesion", solver="mr_lesion", kind="lesion")
    t0 = time.perf_counter()
    res = solve(vol, g, settings=SolveSettings(refine="hu"))
    out["brain1"] = {"dice": round(dice(res.mask, label), 3), "seconds": round(time.perf_counter() - t0, 2),
                     "region_ml": res.info.get("region_ml"), "registration": res.info["registration"]}
    if engine:
        from medvl.session import VolumeSession

        t0 = time.perf_counter()
        res = solve(vol, g, session=VolumeSession(), settings=SolveSettings(refine="auto"))
        out["brain1_auto"] = {"dice": round(dice(res.mask, label), 3), "method": res.info["method"],
                              "engine_evidence_dice": res.info.get("engine_evidence_dice"),
                              "seconds": round(time.perf_counter() - t0, 2)}
    ph = make_phantom(0)
    lesioned, truth = insert_lesion(ph)
    try:
        res = solve(lesioned, g, settings=SolveSettings(refine="hu"))
        truth_ml = float(truth.sum() * np.prod(lesioned.geometry.spacing)) / 1000
        out["phantom_inserted_lesion"] = {"found": True, "dice": round(dice(res.mask, truth), 3),
                                          "truth_ml": round(truth_ml, 2)}
    except SolverError as e:
        out["phantom_inserted_lesion"] = {"found": False, "message": str(e)}
    try:
        res = solve(ph.volume, g, settings=SolveSettings(refine="hu"))
        out["phantom_healthy"] = {"not_found": False, "voxels": int(res.mask.sum())}
    except SolverError as e:
        out["phantom_healthy"] = {"not_found": True, "message": str(e)}
    healthy = healthy_template()
    try:
        res = solve(healthy, g, settings=SolveSettings(refine="hu"))
        out["healthy_template"] = {"not_found": False, "voxels": int(res.mask.sum())}
    except SolverError as e:
        out["healthy_template"] = {"not_found": True, "message": str(e)}
    return out


def refusals() -> dict:
    """CT and a non-brain MR (lung1 relabelled MR) must be refused with a SolverError."""
    from medvl.io import read_volume
    from medvl.language.solvers import solve

    out = {}
    for key, modality in (("ct", "CT"), ("non_brain_mr", "MR")):
        vol = read_volume(SAMPLE_DIR / "lung1_image.nii.gz", modality=modality)
        try:
            solve(vol, grounding("thalamus", "left"))
            out[key] = {"refused": False}
        except SolverError as e:
            out[key] = {"refused": True, "message": str(e)}
    return out


def run(seeds=(0, 1), engine: bool = False) -> dict:
    res: dict = {"atlas": _labels.ATLAS_NAME, "phantom": PhantomSettings().__dict__, "seeds": list(seeds)}
    for mode, deformable in (("deformable", True), ("affine_only", False)):
        per = [score_phantom(s, deformable) for s in seeds]
        res[mode] = {"per_seed": per, "mean_dice": round(float(np.mean([p["mean_dice"] for p in per])), 3),
                     "seconds_first_max": max(p["seconds_first"] for p in per),
                     "seconds_later_max": max(p["seconds_later_max"] for p in per)}
    res["lesion"] = lesion_cases(engine)
    res["refusals"] = refusals()
    res["goals"] = {"mean_dice>=0.75": res["deformable"]["mean_dice"] >= 0.75,
                    "first<=60s": res["deformable"]["seconds_first_max"] <= 60,
                    "later<=1s": res["deformable"]["seconds_later_max"] <= 1,
                    "brain1_dice>=0.6": res["lesion"]["brain1"]["dice"] >= 0.6,
                    "healthy_not_found": res["lesion"]["healthy_template"]["not_found"]}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the JSON here too")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--engine", action="store_true", help="also refine the brain1 lesion with LiteMedSAM")
    a = ap.parse_args(argv)
    res = run(tuple(a.seeds), a.engine)
    print(emit_json(res, a.json, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
