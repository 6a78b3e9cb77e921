"""`medvl bench-language`: every goal of trustworthy text grounding in one JSON (a command,
not a timed test). Three parts, each its own module with its own `python -m` entry:

- `grounding` (`bench.language_grounding`): acceptance precision/recall and concept accuracy
  of the refusal rule on the labelled prompt set, tune split and the held-out split that was
  written before tuning and never tuned on; unsupported held-out prompts that would return a
  mask (goal 0).
- `nodules` (`bench.language_nodules`): text -> mask Dice of nodule paraphrases on the
  sample CTs lung1 and lung2 with the defaults every entry point shares (goal >= 0.85,
  "the largest nodule" on lung1 included), and detection of synthetic nodules of known size
  inserted into their lung fields.
- `brain` (`bench.language_brain`): atlas grounding on synthetic deformations of the template
  (mean Dice over thalamus, putamen, caudate, hippocampus, amygdala, both sides: goal >= 0.75;
  first structure <= 60 s, later ones <= 1 s), the MR lesion rule on brain1 (goal >= 0.6) and
  "not found" on a healthy template.

    medvl bench-language --json OUT [--parts grounding nodules brain] [--seeds 0 1]
"""

from __future__ import annotations

import json
import platform
import time

from medvl.bench import emit_json

PARTS = ("grounding", "nodules", "brain")


def _grounding() -> dict:
    from medvl.bench.language_grounding import run

    res = run()
    goals = {"unsupported_heldout_masks==0": res["masks_for_unsupported_heldout"] == 0}
    return res, goals


def _nodules() -> dict:
    from medvl.bench.language_nodules import run

    res = run()
    s = res["paraphrase_summary"]
    largest = [r["dice"] for r in res["paraphrases"] if r["case"] == "lung1" and "largest" in r["text"]]
    goals = {f"{case}_paraphrase_min_dice>=0.85": s[case]["min_dice"] >= 0.85 for case in sorted(s)}
    goals["lung1_largest_nodule_dice>=0.85"] = bool(largest) and min(largest) >= 0.85
    return res, goals


def _brain(seeds) -> dict:
    from medvl.bench.language_brain import run

    res = run(tuple(seeds))
    return res, dict(res["goals"])


def run(parts=PARTS, seeds=(0, 1)) -> dict:
    """Run the chosen parts; `goals` maps each goal to whether it was met."""
    out: dict = {"machine": {"python": platform.python_version(), "processor": platform.machine()},
                 "parts": list(parts), "goals": {}}
    for part in parts:
        t0 = time.perf_counter()
        res, goals = {"grounding": _grounding, "nodules": _nodules,
                      "brain": lambda: _brain(seeds)}[part]()
        res["seconds_part"] = round(time.perf_counter() - t0, 1)
        out[part] = res
        out["goals"].update({f"{part}: {k}": bool(v) for k, v in goals.items()})
    out["all_goals_met"] = all(out["goals"].values())
    return out


def add_arguments(parser) -> None:
    parser.add_argument("--json", metavar="OUT", help="also write the JSON here")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which parts to run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="brain phantom seeds")


def main(args) -> int:
    res = run(args.parts, args.seeds)
    emit_json(res, args.json, indent=1)
    print(json.dumps({"goals": res["goals"], "all_goals_met": res["all_goals_met"]}, indent=1))
    return 0
