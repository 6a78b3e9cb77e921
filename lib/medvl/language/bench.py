"""Language-layer benchmark: text -> mask Dice per case and refinement mode, and the time of
a full report from text. Prints JSON (a command, not a timed test):

    PYTHONPATH=lib python -m medvl.language.bench [--case lung2] [--refine hu engine auto] [--json out.json]

Dice is against the expert label in sample_data (cases.json). The report timing is cold in
this process (sentence encoder load included): read image, ground, solve, measure, narrate,
write report.json/.md/overview.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medvl.bench import emit_json

DEFAULT_PROMPTS = {"lung1": ["nodule", "segment the tumour in the right lung"],
                   "lung2": ["nodule", "segment the tumour in the left lung"]}


def _cases(data_dir: Path, names):
    cases = json.loads((data_dir / "cases.json").read_text())["cases"]
    return [c for c in cases if (not names or c["case"] in names) and c["modality"] == "CT"]


def report_timing(data_dir: Path, case: str = "lung2", text: str = "segment the tumour in the left lung",
                  refine: str = "hu", engine: str = "litemedsam") -> dict:
    from medvl.io import read_volume
    from medvl.language.report import build_report, write_report
    from medvl.language.solvers import SolveSettings

    t0 = time.perf_counter()
    volume = read_volume(data_dir / f"{case}_image.nii.gz")
    session = None
    if refine != "hu":
        from medvl.session import VolumeSession

        session = VolumeSession(engine=engine)
    report = build_report(volume, texts=[text], session=session, settings=SolveSettings(refine=refine))
    with tempfile.TemporaryDirectory() as tmp:
        write_report(report, volume, tmp)
    return {"case": case, "text": text, "refine": refine, "seconds": round(time.perf_counter() - t0, 2),
            "stages": report.seconds, "objects": [o.name for o in report.objects],
            "unchecked_numbers": report.narrative_check.get("unchecked")}


def text_dice(data_dir: Path, names=None, refine_modes=("hu", "engine", "auto"), engine: str = "litemedsam") -> list[dict]:
    from medvl.io import read_mask, read_volume
    from medvl.language.grounding import ground
    from medvl.language.solvers import SolveSettings, solve
    from medvl.metrics import dice

    rows = []
    session = None
    for case in _cases(data_dir, names):
        volume = read_volume(data_dir / case["image"])
        label = read_mask(data_dir / case["label"], like=volume).array > 0
        for text in DEFAULT_PROMPTS.get(case["case"], ["nodule"]):
            for mode in refine_modes:
                if mode != "hu" and session is None:
                    from medvl.session import VolumeSession

                    session = VolumeSession(engine=engine)
                t0 = time.perf_counter()
                try:
                    res = solve(volume, ground(text), session if mode != "hu" else None, SolveSettings(refine=mode))
                except Exception as err:  # noqa: BLE001 - a failed row is reported, the bench goes on
                    rows.append({"case": case["case"], "text": text, "refine": mode, "error": str(err)})
                    continue
                rows.append({"case": case["case"], "text": text, "refine": mode,
                             "dice": round(dice(res.mask, label), 4), "method": res.info["method"],
                             "engine_hu_dice": res.info.get("engine_hu_dice"),
                             "voxels": int(res.mask.sum()), "label_voxels": int(label.sum()),
                             "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m medvl.language.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="sample_data")
    ap.add_argument("--case", action="append", help="case name (default: every CT case)")
    ap.add_argument("--refine", nargs="+", default=["hu", "engine", "auto"], choices=["hu", "engine", "auto"])
    ap.add_argument("--engine", default="litemedsam")
    ap.add_argument("--no-report", action="store_true", help="skip the report timing")
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args(argv)
    data = Path(args.data)
    out = {"machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()}}
    if not args.no_report:
        out["report"] = report_timing(data)
    out["text_to_mask"] = text_dice(data, args.case, tuple(args.refine), args.engine)
    print(emit_json(out, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
