"""The interactive protocol through the real server, with the stock MONAI Label client's parameters.

`medvl bench-interactive --via-server` starts the MONAI Label server (`medvl.server.launch`)
on a temporary studies folder holding the selected targets' images (or talks to `--url`),
then per target sends what the stock Slicer client sends: the ROI (a flat box on the
label's largest slice) with every foreground and background click so far, in one request
per step. Each reply's mask is scored; a refused step (HTTP 4xx/5xx) is counted and the
protocol goes on with the last mask. Seconds per step are client wall times (HTTP included).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from medvl.bench.clicks import next_click
from medvl.metrics import dice
from medvl.bench.interactive import DROP, _box_corners, largest_slice
from medvl.io import read_mask, write_volume
from medvl.slicing import take_slice


def image_id(target_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", target_name).strip("_")


def flat_roi(label: np.ndarray) -> list[int]:
    """The stock client's ROI [i0, i1, j0, j1, k0, k1] for the label's box on its largest k slice."""
    k = largest_slice(label, "k")
    lo, hi = _box_corners(take_slice(label, "k", k), k, "k")
    return [lo[0], hi[0], lo[1], hi[1], k, k]


def run_target(client, image: str, target, clicks: int = 5) -> dict:
    label = target.label
    params = {"roi": flat_roi(label), "foreground": [], "background": [], "label": image,
              "result_extension": ".nii.gz", "reset_state": True}
    workdir = Path(tempfile.mkdtemp(prefix="medvl-bench-http-"))
    steps, refused, pred = [], [], np.zeros_like(label)
    try:
        for n in range(clicks + 1):
            if n:
                click = next_click(pred, label, target.volume.geometry.spacing, axes=("k",))
                if click is None:
                    break
                params["foreground" if click.positive else "background"].append(list(click.ijk))
                params["reset_state"] = False
            t0 = time.perf_counter()
            reply = client.infer(image, params)
            seconds = time.perf_counter() - t0
            if reply.status != 200:
                refused.append({"step": n, "status": reply.status, "detail": reply.detail})
            elif reply.image:
                mask = read_mask(reply.save(workdir / f"step{n}.nii.gz"))
                if not mask.geometry.same_as(target.volume.geometry):
                    raise AssertionError(f"{image}: the reply's geometry differs: "
                                         f"{mask.geometry.describe_difference(target.volume.geometry)}")
                pred = mask.array > 0
            steps.append({"step": n, "dice": round(dice(pred, label), 4), "seconds": round(seconds, 3),
                          "status": reply.status, "quality": (reply.json or {}).get("quality")})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    curve = [s["dice"] for s in steps] + [steps[-1]["dice"]] * (clicks + 1 - len(steps))
    return {"target": target.name, "group": target.group, "form": target.form, "via": "server",
            "dice": curve, "final": curve[-1],
            "auc": round(float(np.mean([(a + b) / 2 for a, b in zip(curve, curve[1:])])) if clicks else curve[0], 4),
            "seconds": [s["seconds"] for s in steps], "steps": steps, "refused": refused,
            "drops": sum(1 for a, b in zip(curve, curve[1:]) if b < a - DROP)}


def run(plan, clicks: int, url: str | None = None, log=None) -> list[dict]:
    """Rows for every (spec, form) of `plan`, through a server started here (or at `url`, whose
    datastore must already hold images named by `image_id`)."""
    from medvl.bench.devset import load_target
    from medvl.server.client import ServerClient

    targets = [load_target(spec, form) for spec, form in plan]
    rows: list[dict] = []

    def drive(server_url: str) -> None:
        client = ServerClient(server_url, client_id="medvl-bench-interactive")
        for t in targets:
            rows.append(run_target(client, image_id(t.name), t, clicks))
            if log:
                log(rows[-1])

    if url:
        drive(url)
        return rows
    from medvl.server.launch import ServerProcess

    studies = Path(tempfile.mkdtemp(prefix="medvl-bench-studies-"))
    try:
        for t in targets:
            write_volume(studies / f"{image_id(t.name)}.nii.gz", t.volume)
        with ServerProcess(studies) as server:
            drive(server.url)
    finally:
        shutil.rmtree(studies, ignore_errors=True)
    return rows
