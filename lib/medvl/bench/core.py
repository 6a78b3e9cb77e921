"""`medvl bench`: one-prompt 3D Dice, latency and encoder throughput on the sample cases.

Per case, from ONE prompt on the label's largest slice: a box (the label's bounding box)
and, separately, one foreground click at the label voxel nearest the label's centroid on
that slice (both point strategies, side by side). Plus the oracle (the label's box on
every label slice: the ceiling), seconds to the first mask, seconds for the full
propagation, a correction click on an encoded slice, encoder passes vs slices holding
the object, peak RSS; and this machine's fp32 matmul GFLOPS next to the encoder's.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from medvl.bench.machine import count_flops, matmul_gflops, peak_rss_mb
from medvl.io import read_mask, read_volume
from medvl.metrics import dice

from medvl.session import VolumeSession
from medvl.slicing import bbox2d

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "sample_data"


def click_near_centroid(mask2d: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask pixel nearest the mask's centroid."""
    ys, xs = np.nonzero(mask2d)
    cy, cx = ys.mean(), xs.mean()
    n = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return int(xs[n]), int(ys[n])


def _timed_run(session: VolumeSession, prompt) -> dict:
    before = session.stats().get("encoder_passes", 0)
    t0 = time.perf_counter()
    prompt(session)
    t1 = time.perf_counter()
    session.run_propagation()
    t2 = time.perf_counter()
    return {"first_mask_s": t1 - t0, "propagation_s": t2 - t1,
            "encoder_passes": session.stats()["encoder_passes"] - before}


def bench_case(case: dict, engine: str) -> dict:
    volume = read_volume(SAMPLE_DIR / case["image"], modality=case.get("modality"))
    label = read_mask(SAMPLE_DIR / case["label"], like=volume).array > 0
    k = int(np.argmax(label.sum(axis=(1, 2))))
    x0, y0, x1, y1 = bbox2d(label[k])
    cx, cy = click_near_centroid(label[k])
    true_slices = np.flatnonzero(label.any(axis=(1, 2)))
    out: dict = {"case": case["case"], "prompt_slice": k, "label_slices": [int(true_slices[0]), int(true_slices[-1])]}

    session = VolumeSession(engine)
    session.set_volume(volume)
    box = _timed_run(session, lambda s: s.add_box((x0, y0, k), (x1, y1, k)))
    pred = session.mask(1)
    ks = np.flatnonzero(pred.any(axis=(1, 2)))
    box.update(dice=dice(pred, label), predicted_slices=[int(ks[0]), int(ks[-1])] if ks.size else None)
    t0 = time.perf_counter()
    session.add_point((cx, cy, k), positive=True)  # correction click on an encoded slice
    box["correction_click_s"] = time.perf_counter() - t0
    out["box"] = box

    clicks = {}  # same session, reset: the encoded slices are reused, this measures Dice only
    settings = session.engine.settings
    for strategy in ("box_search", "sam_points"):
        if hasattr(settings, "point_strategy"):
            session.engine.settings = replace(settings, point_strategy=strategy)
        session.reset()
        session.add_point((cx, cy, k), positive=True)
        session.run_propagation()
        clicks[strategy] = {"dice": dice(session.mask(1), label)}
    session.engine.settings = settings
    out["click"] = {"point": [cx, cy, k], **clicks}

    session.reset()
    for z in true_slices:
        a, b, c, d = bbox2d(label[z])
        session.add_box((a, b, int(z)), (c, d, int(z)))
    out["oracle_dice"] = dice(session.mask(1), label)
    out["encoded_slices"] = session.stats()["encoder_passes"]
    out["object_slices"] = int(true_slices.size)
    out["peak_rss_mb"] = peak_rss_mb()  # process peak so far (cases run in order)
    return out


def _best_seconds(fn, x, repeats: int = 5) -> float:
    with torch.inference_mode():
        fn(x)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t0)
    return best


def encoder_throughput(engine) -> dict:
    """The engine's encoder next to the plain (unfused, channels-first) definition, same run."""
    from medvl.engines.litemedsam.model import LiteMedSAM, load_litemedsam

    x = torch.rand(1, 3, 256, 256)
    # FLOPs of the architecture, counted on the plain (unfused) module: the fused oneDNN
    # kernels the engine runs are the same arithmetic but invisible to FlopCounterMode
    flops = count_flops(LiteMedSAM().image_encoder.eval(), x)
    plain = load_litemedsam(engine.settings.checkpoint, fuse=False).image_encoder
    fast = _best_seconds(engine.model.image_encoder, x)
    slow = _best_seconds(plain, x)
    return {"encoder_gflop_per_slice": flops / 1e9, "encoder_s_per_slice": fast,
            "encoder_gflops": flops / fast / 1e9, "plain_encoder_s_per_slice": slow,
            "plain_encoder_gflops": flops / slow / 1e9, "speedup_vs_plain": slow / fast}


def run_benchmark(cases=None, engine: str = "litemedsam") -> dict:
    meta = json.loads((SAMPLE_DIR / "cases.json").read_text())["cases"]
    chosen = [c for c in meta if not cases or c["case"] in cases]
    report: dict = {"engine": engine, "torch_threads": torch.get_num_threads()}
    start_peak = matmul_gflops()
    report["cases"] = [bench_case(c, engine) for c in chosen]
    session = VolumeSession(engine)
    enc = encoder_throughput(session.engine)
    # the machine's peak, measured before the cases and right after the encoder; the higher counts
    report["machine_matmul_gflops_fp32"] = max(start_peak, matmul_gflops())
    enc["share_of_matmul_peak"] = enc["encoder_gflops"] / report["machine_matmul_gflops_fp32"]
    report["encoder"] = enc
    report["peak_rss_mb"] = peak_rss_mb()
    return _rounded(report)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
