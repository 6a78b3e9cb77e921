"""Nodule grounding benchmark: text -> mask Dice for nodule paraphrases on the sample CTs,
and detection of synthetic nodules of known size inserted into their lung fields.

    PYTHONPATH=lib python -m medvl.bench.language_nodules [--json OUT] [--refine hu] [--no-synthetic]

1. Paraphrases (`PARAPHRASES`, 10 per case; side and zone words are read from the expert
   label's location, so each prompt is true of its case) are grounded with the default
   grounder and solved with the same settings as the CLI (`SolveSettings()`, today
   refine="auto" with a LiteMedSAM session; `--refine hu` for the HU-only answer). Dice
   against the expert label of sample_data (cases.json). The engine's answer depends only on
   the HU mask it is given, so paraphrases that pick the same candidate share one engine run.
2. Synthetic nodules (`medvl.bench.synthetic_nodules`, seeded): diameters `SIZES_MM` at each
   location type (free in parenchyma, touching a vessel, on the pleura) in lung1 and lung2,
   one volume per case and location. A nodule is detected when a candidate that passed every
   check overlaps it; its size error compares the volume-equivalent diameter of the grown
   candidate with the true diameter. A false candidate is a passing candidate that overlaps
   neither an inserted nodule nor the expert lesion.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from medvl.bench import emit_json

SIZES_MM = (2, 3, 4, 6, 8, 10, 15, 20, 25, 30)
BINS = ((2, 5), (6, 9), (10, 19), (20, 30))  # diameter bins (mm, inclusive) of the detection table
PARAPHRASES = ("nodule", "the largest nodule", "the tumour in the {side} lung", "lung mass", "segment the lesion",
               "the biggest mass in the {side} lung", "pulmonary nodule", "the cancer", "the {zone} lung nodule",
               "show me the spot on the lung")


def _cases(data_dir: Path):
    cases = json.loads((data_dir / "cases.json").read_text())["cases"]
    return [c for c in cases if c["modality"] == "CT"]


def paraphrase_dice(data_dir: Path, refine: str | None = None, engine: str = "litemedsam") -> list[dict]:
    """One row per (case, paraphrase): Dice, method, seconds; see the module docstring."""
    from medvl.io import read_mask, read_volume
    from medvl.language.errors import MedVLError
    from medvl.language.grounding import ground
    from medvl.language.report import object_facts
    from medvl.language.solvers import SolveSettings, solve
    from medvl.metrics import dice
    from medvl.language.solvers.anatomy import anatomy_for

    settings = SolveSettings(refine=refine) if refine else SolveSettings()
    session = None
    if settings.refine != "hu":
        from medvl.session import VolumeSession

        session = VolumeSession(engine)
    rows = []
    for case in _cases(data_dir):
        volume = read_volume(data_dir / case["image"])
        label = read_mask(data_dir / case["label"], like=volume).array > 0
        truth = object_facts(volume, label, "expert", "lesion", "expert label", anatomy_for(volume))
        engine_runs: dict[bytes, tuple[np.ndarray, dict]] = {}
        for template in PARAPHRASES:
            text = template.format(side=truth.side, zone=truth.zone)
            t0 = time.perf_counter()
            try:
                g = ground(text)
                hu = solve(volume, g, None, SolveSettings(refine="hu"))
                key = np.packbits(hu.mask).tobytes()
                if settings.refine == "hu":
                    mask, info = hu.mask, hu.info
                elif key in engine_runs:
                    mask, info = engine_runs[key]
                else:
                    res = solve(volume, g, session, settings)
                    mask, info = engine_runs.setdefault(key, (res.mask, res.info))
            except MedVLError as err:
                rows.append({"case": case["case"], "text": text, "dice": 0.0, "error": str(err)})
                continue
            rows.append({"case": case["case"], "text": text, "dice": round(dice(mask, label), 4),
                         "dice_hu": round(dice(hu.mask, label), 4), "method": info["method"], "why": info.get("why"),
                         "passing_candidates": info.get("passing_candidates"),
                         "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def synthetic_detection(data_dir: Path, sizes=SIZES_MM, seed: int = 0) -> dict:
    """Rows per inserted nodule, the table per (location, size bin), false candidates per volume."""
    from medvl.bench.synthetic_nodules import LOCATIONS, insert_nodules
    from medvl.io import read_mask, read_volume
    from medvl.language.solvers.anatomy import anatomy_for
    from medvl.language.solvers.nodule import find_candidates, regrow

    rows, false_counts = [], []
    for case in _cases(data_dir):
        volume = read_volume(data_dir / case["image"])
        label = read_mask(data_dir / case["label"], like=volume).array > 0
        for n_loc, location in enumerate(LOCATIONS):
            new, inserted = insert_nodules(volume, [(d, location) for d in sizes], seed=seed + n_loc, avoid=label)
            a = anatomy_for(new)
            cands = [c for c in find_candidates(a) if c.passed]
            masks = [c.full_mask(a.hu.shape) for c in cands]
            used = set()
            for n in inserted:
                hit = next((i for i, m in enumerate(masks) if (m & n.mask).any()), None)
                row = {"case": case["case"], "location": location, "diameter_mm": n.diameter_mm,
                       "detected": hit is not None}
                if hit is not None:
                    used.add(hit)
                    grown = regrow(a, cands[hit])
                    d_eq = 2 * (3 * grown.sum() * a.voxel_ml * 1000 / (4 * np.pi)) ** (1 / 3)
                    row.update(measured_mm=round(float(d_eq), 2), size_error_pct=round(100 * (d_eq / n.diameter_mm - 1), 1))
                rows.append(row)
            skipped = len(sizes) - len(inserted)
            false = [i for i, m in enumerate(masks) if i not in used and not (m & label).any()]
            false_counts.append({"case": case["case"], "location": location, "false_candidates": len(false),
                                 "not_placed": skipped})
    table = []
    for location in LOCATIONS:
        for lo, hi in BINS:
            sel = [r for r in rows if r["location"] == location and lo <= r["diameter_mm"] <= hi]
            det = [r for r in sel if r["detected"]]
            table.append({"location": location, "diameter_mm": f"{lo}-{hi}", "inserted": len(sel),
                          "detected": len(det),
                          "mean_abs_size_error_pct": round(float(np.mean([abs(r["size_error_pct"]) for r in det])), 1)
                          if det else None})
    return {"table": table, "false_candidates": false_counts, "nodules": rows}


def run(data_dir: str | Path = "sample_data", refine: str | None = None, synthetic: bool = True) -> dict:
    """Everything above as one JSON-ready dict, with the goals checked."""
    data_dir = Path(data_dir)
    t0 = time.perf_counter()
    para = paraphrase_dice(data_dir, refine)
    out: dict = {"settings": {"refine": refine or "default (SolveSettings)"}, "paraphrases": para}
    summary = {}
    for case in sorted({r["case"] for r in para}):
        ds = [r["dice"] for r in para if r["case"] == case]
        summary[case] = {"mean_dice": round(float(np.mean(ds)), 4), "min_dice": round(float(np.min(ds)), 4),
                         "goal_0.85_met": bool(min(ds) >= 0.85)}
    out["paraphrase_summary"] = summary
    if synthetic:
        out["synthetic"] = synthetic_detection(data_dir)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medvl.bench.language_nodules", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="sample_data")
    ap.add_argument("--refine", choices=["hu", "engine", "auto"], help="default: SolveSettings' (as the CLI)")
    ap.add_argument("--no-synthetic", action="store_true", help="skip the synthetic-nodule table")
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args(argv)
    out = run(args.data, args.refine, not args.no_synthetic)
    print(emit_json(out, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
