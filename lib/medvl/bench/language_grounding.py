"""Grounding benchmark: acceptance precision/recall and concept accuracy on labelled prompts.

    python -m medvl.bench.language_grounding [--json OUT] [--tune]

Data: `lib/medvl/bench/data/grounding_prompts.json` (split "tune": the grounder's
threshold, margin and spelling length are chosen on it) and
`grounding_prompts_heldout.json` (split "heldout": written before tuning, never tuned on,
reported separately). Each prompt has `expected` (a concept name, or null: must be refused)
and the volume context (`modality`, `region`) it is grounded in.

Acceptance: a prompt is accepted when the grounder returns a concept. Precision = accepted
with the expected concept / accepted; recall = accepted with the expected concept / prompts
with an expected concept. `masks_for_unsupported_heldout` counts held-out prompts that
expect a refusal but were accepted: each would return a mask (goal 0).
`--tune` prints the grid search on the tune split that chose the defaults.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from medvl.bench import emit_json

DATA = Path(__file__).parent / "data"
FILES = {"tune": DATA / "grounding_prompts.json", "heldout": DATA / "grounding_prompts_heldout.json"}


def load(split: str) -> list[dict]:
    """The prompts of one split ("tune" or "heldout")."""
    rows = json.loads(FILES[split].read_text())["prompts"]
    return [r for r in rows if r["split"] == split]


def score(grounder, prompts: list[dict]) -> dict:
    """Acceptance precision/recall, concept accuracy and the errors of `grounder` on `prompts`."""
    accepted = correct = positives = wrong_concept = false_accept = 0
    errors = []
    for p in prompts:
        g = grounder.ground(p["text"], modality=p.get("modality"), region=p.get("region"))
        got = g.concept.name if g.concept else None
        positives += p["expected"] is not None
        accepted += got is not None
        ok = got == p["expected"]
        correct += ok and got is not None
        if got is not None and p["expected"] is None:
            false_accept += 1
        elif got is not None and not ok:
            wrong_concept += 1
        if not ok:
            errors.append({"text": p["text"], "modality": p.get("modality"), "region": p.get("region"),
                           "expected": p["expected"], "got": got, "status": g.status, "reason": g.reason})
    return {
        "prompts": len(prompts), "expected_accept": positives, "accepted": accepted,
        "acceptance_precision": round(correct / accepted, 4) if accepted else None,
        "acceptance_recall": round(correct / positives, 4) if positives else None,
        "concept_accuracy": round((len(prompts) - len(errors)) / len(prompts), 4) if prompts else None,
        "false_accepts": false_accept, "wrong_concept": wrong_concept, "errors": errors,
    }


def run(encoder=None, threshold: float | None = None, margin: float | None = None,
        long_word: int | None = None) -> dict:
    """Score the grounder (MiniLM unless `encoder` is given) on both splits."""
    from medvl.language import grounding

    if encoder is None:
        from medvl.language.encoder import default_encoder

        encoder = default_encoder()
    t0 = time.perf_counter()
    grounder = grounding.Grounder(encoder, threshold=grounding.THRESHOLD if threshold is None else threshold,
                                  margin=grounding.MARGIN if margin is None else margin,
                                  long_word=grounding.LONG_WORD if long_word is None else long_word)
    out = {"settings": {"threshold": grounder.threshold, "margin": grounder.margin, "long_word": grounder.long_word,
                        "encoder": type(encoder).__name__}}
    for split in FILES:
        out[split] = score(grounder, load(split))
    held = load("heldout")
    out["masks_for_unsupported_heldout"] = out["heldout"]["false_accepts"]
    out["unsupported_heldout_prompts"] = sum(p["expected"] is None for p in held)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def tune(encoder=None) -> dict:
    """Grid over threshold x margin x long_word on the TUNE split only: the configs with the
    fewest false accepts, then the fewest errors, form a plateau; the chosen one is the
    plateau's middle (nearest its median threshold and margin), not its edge."""
    from medvl.language.grounding import Grounder

    if encoder is None:
        from medvl.language.encoder import default_encoder

        encoder = default_encoder()
    prompts = load("tune")
    grid = []
    base = Grounder(encoder)
    thresholds = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
    margins = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25)
    for long_word in (7, 8, 9, 99):
        for threshold, margin in itertools.product(thresholds, margins):
            base.threshold, base.margin, base.long_word = threshold, margin, long_word
            s = score(base, prompts)
            grid.append({"threshold": threshold, "margin": margin, "long_word": long_word,
                         "errors": len(s["errors"]), "false_accepts": s["false_accepts"]})
    goal = min((r["false_accepts"], r["errors"]) for r in grid)
    plateau = [r for r in grid if (r["false_accepts"], r["errors"]) == goal]
    mid_t = float(np.median([r["threshold"] for r in plateau]))
    mid_m = float(np.median([r["margin"] for r in plateau]))
    mid_w = float(np.median([r["long_word"] for r in plateau]))
    best = min(plateau, key=lambda r: (abs(r["threshold"] - mid_t) + abs(r["margin"] - mid_m),
                                       abs(r["long_word"] - mid_w), -r["threshold"], -r["margin"]))
    return {"split": "tune", "best": best, "plateau": {"false_accepts": goal[0], "errors": goal[1],
                                                        "configs": len(plateau), "median_threshold": mid_t,
                                                        "median_margin": mid_m}, "grid": grid}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medvl.bench.language_grounding", description=__doc__.split("\n")[0])
    ap.add_argument("--json", metavar="OUT", help="also write the result to this file")
    ap.add_argument("--tune", action="store_true", help="print the grid search on the tune split instead")
    args = ap.parse_args(argv)
    result = tune() if args.tune else run()
    print(emit_json(result, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
