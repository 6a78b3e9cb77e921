"""Benchmark: the `sam2` engine against MONAI Label 0.8.5's own SAM 2 infer path, side by side.

    python -m medvl.bench.sam2 --json bench_sam2.json            # 512 x 512 x 64 at 512 px
    python -m medvl.bench.sam2 --shape 8 128 128 --image-size 128 --json small.json

One run, the same random-weight SAM 2.1 model (saved once to a .pt both sides load),
the same volume file and the same clicks. Each side runs in its own subprocess, so its
peak RSS is its own; both build their model before the clock starts (MONAI Label builds
it inside the first request otherwise).

- ours: `VolumeSession` + `sam2` engine: read the file, click, propagate (both
  directions, `stop_at_empty=False` so random weights cannot end a walk early), write
  the label file; then a correction click and re-propagation, write again.
- MONAI Label: `monailabel.sam2.infer.Sam2InferTask.__call__` on 3D requests, as its
  server calls it: it loads the image, writes every slice as JPEG, loads them back as
  frames, adds the clicks and calls `propagate_in_video` (forward from the first clicked
  slice, re-encoding every frame because the stock predictor keeps one frame's
  features), then writes the label. Its module imports `skimage.util` and
  `sam2.sam2_image_predictor` (torchvision) for its 2D path only; the subprocess puts
  inert stand-ins for those two names in `sys.modules` - the 3D path never touches them.

Scenarios: "mid" (first click on the middle slice: the realistic case; MONAI's path
covers only the slices above it) and "edge" (first click on slice 0: both sides cover
every slice). Beside our full re-propagation, "converged" is the same correction with
`Sam2Settings.converge_stop=True` (the walk stops where it meets the previous run; Dice
against full re-propagation's labels). Ratios are MONAI seconds / our seconds (speed-up) and our peak / MONAI's
peak. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

log = logging.getLogger(__name__)

RESULT_TAG = "BENCH_SAM2_RESULT "


# -- measurement helpers (used inside each side's subprocess) -------------------------------------
def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    Path("/proc/self/clear_refs").write_text("5")


# -- the two sides -------------------------------------------------------------------------------
def _ours_first_click(engine, task: dict, out: Path):
    """Read the file, click, propagate both ways, write the label; the session for the correction."""
    from medvl.io import read_volume, write_mask
    from medvl.session import VolumeSession

    volume = read_volume(task["image"])
    session = VolumeSession(engine=engine)
    session.set_volume(volume)
    session.add_point(tuple(task["click"]), positive=True, obj_id=1, axis="k")
    filled = session.run_propagation(obj_id=1)
    write_mask(out, session.labels(), like=volume)
    return session, volume, filled


def _ours_correction(session, volume, task: dict, out: Path) -> int:
    """The background correction click, re-propagation, the label written again."""
    from medvl.io import write_mask

    session.add_point(tuple(task["correction"]), positive=False, obj_id=1, axis="k")
    filled = session.run_propagation(obj_id=1)
    write_mask(out, session.labels(), like=volume)
    return filled


def _side_ours(task: dict) -> dict:
    import torch

    from medvl.bench.machine import flop_counter
    from medvl.engines.sam2 import build_sam2_engine

    engine = build_sam2_engine(checkpoint=task["checkpoint"], image_size=task["image_size"], stop_at_empty=False,
                               converge_stop=False, threads=task.get("threads"))  # full re-propagation
    loaded = _rss_mb()
    _reset_peak()
    out = Path(task["work"]) / "ours_label.nii.gz"
    t0 = time.perf_counter()
    session, volume, filled_first = _ours_first_click(engine, task, out)
    first_s = time.perf_counter() - t0
    stats_first = session.stats()
    t1 = time.perf_counter()
    filled_second = _ours_correction(session, volume, task, out)
    correction_s = time.perf_counter() - t1
    stats = session.stats()
    result = {"first_click_s": first_s, "correction_s": correction_s, "threads": torch.get_num_threads(),
              "slices_filled_first": filled_first + 1, "slices_filled_correction": filled_second + 2,
              "encoder_passes_first": stats_first["encoder_passes"],
              "encoder_passes_correction": stats["encoder_passes"] - stats_first["encoder_passes"],
              "track_steps_correction": stats["track_steps"] - stats_first["track_steps"],
              "track_seconds_correction": stats["track_seconds"] - stats_first["track_seconds"],
              "decoder_seconds_correction": stats["decoder_seconds"] - stats_first["decoder_seconds"],
              "rss_loaded_mb": loaded, "peak_rss_mb": _rss_mb("VmHWM"),
              "feature_cache_mb": stats["cache_bytes"] / 2**20}
    full_labels = session.labels()
    # the same clicks again in a fresh session, untimed, to count the correction's FLOPs
    session, volume, _ = _ours_first_click(engine, task, out)
    with torch.inference_mode(), flop_counter() as counter:
        _ours_correction(session, volume, task, out)
    result["correction_gflop"] = counter.get_total_flops() / 1e9
    result["converged"] = _ours_converged(engine, task, out, full_labels)
    return result


def _ours_converged(engine, task: dict, out: Path, full_labels) -> dict:
    """The same clicks with `converge_stop=True` (same model): the correction's time, the slices it
    re-tracked, and its Dice against full re-propagation's labels (and both against the blob)."""
    from dataclasses import replace

    from medvl.engines.sam2.engine import Sam2Engine
    from medvl.metrics import dice

    variant = Sam2Engine(engine.model, replace(engine.settings, converge_stop=True), engine.label)
    session, volume, _ = _ours_first_click(variant, task, out)
    before = session.stats()
    t0 = time.perf_counter()
    _ours_correction(session, volume, task, out)
    seconds = time.perf_counter() - t0
    after, labels = session.stats(), session.labels()
    blob = volume.array > -500  # the synthetic object (-1000 outside, 40 inside, noise sd 20)
    return {"correction_s": seconds, "converge_iou": variant.settings.converge_iou,
            "converge_memory_tol": variant.settings.converge_memory_tol,
            "track_steps_correction": after["track_steps"] - before["track_steps"],
            "converged_stops": after["converged_stops"] - before["converged_stops"],
            "dice_vs_full_repropagation": round(dice(labels > 0, full_labels > 0), 5),
            "slices_differing_from_full": int((labels != full_labels).any(axis=(1, 2)).sum()),
            "dice_vs_blob": round(dice(labels > 0, blob), 5),
            "dice_vs_blob_full_repropagation": round(dice(full_labels > 0, blob), 5)}


def _install_stand_ins() -> None:
    """Names monailabel.sam2.infer imports for its 2D path only (see the module docstring)."""
    skimage, util = types.ModuleType("skimage"), types.ModuleType("skimage.util")
    util.img_as_ubyte = None
    skimage.util = util
    image_predictor = types.ModuleType("sam2.sam2_image_predictor")
    image_predictor.SAM2ImagePredictor = None
    for name, module in (("skimage", skimage), ("skimage.util", util), ("sam2.sam2_image_predictor", image_predictor)):
        sys.modules.setdefault(name, module)


def _side_monailabel(task: dict) -> dict:
    work = Path(task["work"])
    os.environ["MONAI_LABEL_DATASTORE_CACHE_PATH"] = str(work / "monailabel_cache")
    os.environ["MONAI_SAM_MODEL_PT"] = "file://" + task["monai_checkpoint"]
    os.environ["MONAI_SAM_MODEL_CFG"] = "file://" + task["monai_config"]
    _install_stand_ins()
    import torch
    from monailabel.sam2.infer import Sam2InferTask
    from sam2.build_sam import build_sam2_video_predictor

    from medvl.bench.machine import flop_counter

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    model_dir = str(Path(task["monai_checkpoint"]).parent)
    infer = Sam2InferTask(model_dir, dimension=3)
    predictor = build_sam2_video_predictor(infer.config_path, infer.path, device="cpu")
    infer.predictors["cpu"] = predictor  # built before the clock, as ours
    counts = {"encoder": 0, "frames": 0}
    forward_image, propagate = predictor.forward_image, predictor.propagate_in_video

    def counted_forward(*a, **kw):
        counts["encoder"] += 1
        return forward_image(*a, **kw)

    def counted_propagate(*a, **kw):
        for item in propagate(*a, **kw):
            counts["frames"] += 1
            yield item

    predictor.forward_image, predictor.propagate_in_video = counted_forward, counted_propagate
    loaded = _rss_mb()
    _reset_peak()
    click, fix = task["click"], task["correction"]
    request = {"image": task["image"], "device": "cpu", "foreground": [list(click)], "background": []}
    t0 = time.perf_counter()
    infer(dict(request))
    first_s = time.perf_counter() - t0
    first = dict(counts)
    t1 = time.perf_counter()
    infer(dict(request, foreground=[list(click)], background=[list(fix)]))  # the client sends every click
    correction_s = time.perf_counter() - t1
    result = {"first_click_s": first_s, "correction_s": correction_s, "threads": torch.get_num_threads(),
              "slices_filled_first": first["frames"], "slices_filled_correction": counts["frames"] - first["frames"],
              "encoder_passes_first": first["encoder"],
              "encoder_passes_correction": counts["encoder"] - first["encoder"],
              "rss_loaded_mb": loaded, "peak_rss_mb": _rss_mb("VmHWM")}
    # the correction request again, untimed, to count its FLOPs (each request recomputes everything)
    with torch.inference_mode(), flop_counter() as counter:
        infer(dict(request, foreground=[list(click)], background=[list(fix)]))
    result["correction_gflop"] = counter.get_total_flops() / 1e9
    return result


# -- orchestration ----------------------------------------------------------------------------------
def _prepare(work: Path, shape, image_size: int, config: str, seed: int) -> dict:
    """The shared inputs: volume file, random-weight checkpoint, MONAI's config copy."""
    import numpy as np

    from medvl.engines.sam2 import model as sam2_model
    from medvl.geometry import Geometry
    from medvl.io import write_volume
    from medvl.volume import Volume

    k, j, i = shape
    rng = np.random.default_rng(seed)
    kk, jj, ii = np.indices(shape, sparse=True)
    blob = ((kk - k / 2) / (k / 3)) ** 2 + ((jj - j / 2) / (j / 5)) ** 2 + ((ii - i / 2) / (i / 6)) ** 2 <= 1
    array = np.where(blob, 40, -1000) + rng.normal(0, 20, shape)
    image = work / "volume.nii.gz"
    write_volume(image, Volume(np.round(array).astype(np.int16), Geometry(spacing=(0.7, 0.7, 2.5)), "CT", "bench"))

    checkpoint = work / f"{config}.pt"  # named as the preset, so our side finds the config from the name
    sam2_model.write_random_checkpoint(checkpoint, config, image_size, seed)
    monai_dir = work / "monai_model"
    monai_dir.mkdir()
    (monai_dir / checkpoint.name).symlink_to(checkpoint)
    monai_config = sam2_model.write_config_yaml(monai_dir / f"{config}_{image_size}.yaml", config, image_size)
    return {"image": str(image), "checkpoint": str(checkpoint), "monai_checkpoint": str(monai_dir / checkpoint.name),
            "monai_config": str(monai_config), "image_size": image_size, "work": str(work)}


def _clicks(shape, scenario: str) -> tuple[list[int], list[int]]:
    """(first click, correction click) as ITK (i, j, k) voxels."""
    k, j, i = shape
    if scenario == "mid":
        return [i // 2, j // 2, k // 2], [i // 2 + i // 12, j // 2, k // 2 + max(1, k // 8)]
    if scenario == "edge":
        return [i // 2, j // 2, 0], [i // 2 + i // 12, j // 2, k // 2]
    raise ValueError(f"unknown scenario {scenario!r}: use mid or edge")


def _run_side(side: str, task: dict, timeout_s: int) -> dict:
    cmd = [sys.executable, "-m", "medvl.bench.sam2", "--side", side, "--task", json.dumps(task)]
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout_s,
                          env=dict(os.environ))
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"{side} side failed (exit {proc.returncode}): {proc.stderr[-2000:]}")


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def _add_roofline(entry: dict, peak: float) -> None:
    """Achieved GFLOPS per side, and the correction speed-up ours would reach at the matmul peak.

    The bound: MONAI's measured seconds over the time our counted correction FLOPs take at
    the machine's fp32 matmul peak with zero overhead. Below the goal, no tuning of our
    kernels reaches it on this machine: only doing less work would.
    """
    for side in ("ours", "monailabel"):
        if side in entry:
            entry[side]["correction_gflops_achieved"] = round(entry[side]["correction_gflop"] /
                                                              entry[side]["correction_s"], 1)
            entry[side]["correction_share_of_peak"] = round(entry[side]["correction_gflops_achieved"] / peak, 3)
    if "ratios" in entry:
        floor_s = entry["ours"]["correction_gflop"] / peak
        entry["ratios"]["correction_speedup_bound_at_peak"] = _ratio(entry["monailabel"]["correction_s"], floor_s)


def run(json_out: str | None = None, compare_monailabel: bool = True, shape=(64, 512, 512), image_size: int = 512,
        config: str = "sam2.1_hiera_t", scenarios=("mid", "edge"), seed: int = 0, threads: int | None = None,
        timeout_s: int = 3600) -> dict:
    """Run the benchmark; print and return the JSON report (also written to `json_out`)."""
    import torch

    from medvl.bench.machine import matmul_gflops

    if threads:
        torch.set_num_threads(threads)
    peaks = [matmul_gflops()]
    report: dict = {"volume_kji": list(shape), "image_size": image_size, "config": config,
                    "weights": f"random (seed {seed}), identical on both sides", "torch": torch.__version__,
                    "cpu_threads": threads or torch.get_num_threads(), "load_avg_start": os.getloadavg(),
                    "scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="bench_sam2_") as tmp:
        base = _prepare(Path(tmp), shape, image_size, config, seed)
        for scenario in scenarios:
            click, fix = _clicks(shape, scenario)
            task = dict(base, click=click, correction=fix, threads=threads)
            entry: dict = {"click_ijk": click, "correction_ijk": fix}
            entry["ours"] = _run_side("ours", task, timeout_s)
            if compare_monailabel:
                entry["monailabel"] = theirs = _run_side("monailabel", task, timeout_s)
                ours = entry["ours"]
                entry["ratios"] = {
                    "first_click_speedup": _ratio(theirs["first_click_s"], ours["first_click_s"]),
                    "first_click_speedup_per_filled_slice": _ratio(
                        theirs["first_click_s"] / max(1, theirs["slices_filled_first"]),
                        ours["first_click_s"] / max(1, ours["slices_filled_first"])),
                    "correction_speedup": _ratio(theirs["correction_s"], ours["correction_s"]),
                    "correction_speedup_converged": _ratio(theirs["correction_s"], ours["converged"]["correction_s"]),
                    "peak_rss_ours_over_theirs": _ratio(ours["peak_rss_mb"], theirs["peak_rss_mb"]),
                    "work_rss_ours_over_theirs": _ratio(ours["peak_rss_mb"] - ours["rss_loaded_mb"],
                                                        theirs["peak_rss_mb"] - theirs["rss_loaded_mb"]),
                    "correction_work_theirs_over_ours": _ratio(theirs["correction_gflop"], ours["correction_gflop"]),
                }
            report["scenarios"][scenario] = entry
    peaks.append(matmul_gflops())
    report["matmul_peak_gflops_fp32"] = peak = max(peaks)  # the higher of the two, bracketing the runs
    report["load_avg_end"] = os.getloadavg()
    for entry in report["scenarios"].values():
        _add_roofline(entry, peak)
    text = json.dumps(report, indent=2)
    print(text)
    if json_out:
        Path(json_out).write_text(text + "\n")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medvl.bench.sam2", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument("--no-monailabel", action="store_true", help="only our engine")
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 512, 512), metavar=("K", "J", "I"))
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--config", default="sam2.1_hiera_t")
    parser.add_argument("--scenario", action="append", choices=("mid", "edge"), help="default: both")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--side", choices=("ours", "monailabel"), help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        logging.basicConfig(level=logging.WARNING)
        result = (_side_ours if args.side == "ours" else _side_monailabel)(json.loads(args.task))
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0
    run(args.json, not args.no_monailabel, tuple(args.shape), args.image_size, args.config,
        tuple(args.scenario or ("mid", "edge")), threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
