"""Server overhead per click on a real image: HTTP round trip minus engine time. Prints JSON.

Starts the real server (`medvl.server.launch`) on a temporary studies folder holding only
the image (or talks to `--url`), makes one warm-up click (volume load + slice encoding,
reported apart), then `--clicks` corrections on the same session, each adding one
foreground point inside the object - so every click runs the engine (prompt + propagation)
on cached embeddings. Odd clicks ask for the full mask, even ones for the changed-box
crop: both response kinds are measured side by side in one run.

Per click: http_s (client wall time, request sent -> multipart read), engine_s (the
server's `engine_seconds`: prompt + propagation), server_s (the app's own total),
overhead_s = http_s - engine_s, split into app_s = server_s - engine_s (parse, mask,
file write) and transport_s = http_s - server_s (HTTP, MONAI Label, multipart).
Goals (issue 3): median overhead <= 10 % of median engine time and <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from medvl.server import DEFAULT_STUDIES

GOAL_RATIO, GOAL_ABS_S = 0.10, 0.050


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", default=str(DEFAULT_STUDIES / "lung2_image.nii.gz"), help="image file")
    parser.add_argument("--label", default=None,
                        help="its label file, to place the clicks (default: <case>_label next to the image)")
    parser.add_argument("--clicks", type=int, default=6, help="clicks after the warm-up (half full, half crop)")
    parser.add_argument("--url", default=None, help="use a running server (the image must be in its datastore)")
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    parser.add_argument("--seed", type=int, default=0)


def click_points(label_path: Path, count: int, seed: int) -> list[list[int]]:
    """`count` distinct ITK (i, j, k) voxels inside the label on its largest slice, centre first."""
    from medvl.io import read_mask

    label = read_mask(label_path).array.astype(bool)
    k = int(np.argmax(label.sum(axis=(1, 2))))
    js, is_ = np.nonzero(label[k])
    order = np.argsort((js - js.mean()) ** 2 + (is_ - is_.mean()) ** 2)
    inner = order[: max(count * 4, 1)]  # the most central voxels, far from the border
    rng = np.random.default_rng(seed)
    picks = [inner[0]] + list(rng.choice(inner[1:], size=min(count, len(inner) - 1), replace=False))
    return [[int(is_[n]), int(js[n]), k] for n in picks[: count + 1]]


def _summary(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    return {"median": round(statistics.median(values), 4), "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 4),
            "min": round(ordered[0], 4), "max": round(ordered[-1], 4)}


def measure(url: str, image_id: str, points: list[list[int]]) -> dict:
    """Warm-up click with points[0], then one click per further point (alternating full / crop)."""
    from medvl.server.client import ServerClient

    client = ServerClient(url, client_id="medvl-bench")
    client.infer(image_id, {"foreground": [], "reset_state": True})  # start from an empty object
    warm = client.infer(image_id, {"foreground": points[:1]})
    if warm.status != 200:
        raise RuntimeError(f"warm-up click failed: {warm.status} {warm.detail}")
    clicks = []
    for n in range(1, len(points)):
        mode = "full" if n % 2 else "crop"
        reply = client.infer(image_id, {"foreground": points[: n + 1], "crop": mode == "crop"})
        if reply.status != 200:
            raise RuntimeError(f"click {n} failed: {reply.status} {reply.detail}")
        j = reply.json
        engine, server = j["engine_seconds"], j["latencies"]["total"]
        clicks.append({"mode": mode, "http_s": round(reply.seconds, 4), "engine_s": engine, "server_s": server,
                       "overhead_s": round(reply.seconds - engine, 4), "app_s": round(server - engine, 4),
                       "transport_s": round(reply.seconds - server, 4), "encoder_passes": j["encoder_passes"],
                       "bytes": len(reply.image or b""), "action": j["action"],
                       "mask_s": j["latencies"]["stages"].get("mask", 0.0),
                       "write_s": j["latencies"]["stages"].get("write", 0.0)})
    out = {"warmup": {"http_s": round(warm.seconds, 3), "engine_s": warm.json["engine_seconds"],
                      "encoder_passes": warm.json["encoder_passes"], "stages": warm.json["latencies"]["stages"]},
           "encoder_passes_after_warmup": sum(c["encoder_passes"] for c in clicks)}
    for mode in ("full", "crop"):
        rows = [c for c in clicks if c["mode"] == mode]
        stats = {key: _summary([c[key] for c in rows]) for key in
                 ("http_s", "engine_s", "overhead_s", "app_s", "mask_s", "write_s", "transport_s", "bytes")}
        if rows:
            ratio = stats["overhead_s"]["median"] / max(stats["engine_s"]["median"], 1e-9)
            stats["overhead_ratio"] = round(ratio, 4)
            stats["goal_ratio_le_10pct"] = ratio <= GOAL_RATIO
            stats["goal_abs_le_50ms"] = stats["overhead_s"]["median"] <= GOAL_ABS_S
        out[mode] = stats
    out["clicks"] = clicks
    out["load_average"] = _load_average()
    return out


def _load_average() -> list[float] | None:
    """1/5/15-minute load averages: timings on a busy machine are slower (see ../shared/ASSETS.md)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def run(args: argparse.Namespace) -> dict:
    image = Path(args.image)
    stem = image.name.split(".")[0]
    label = Path(args.label) if args.label else image.with_name(stem.replace("_image", "_label") + ".nii.gz")
    points = click_points(label, args.clicks, args.seed)
    result = {"image": str(image), "click_count": args.clicks}
    if args.url:
        result.update(url=args.url, **measure(args.url, stem, points))
        return result
    from medvl.server.launch import ServerProcess

    studies = Path(tempfile.mkdtemp(prefix="medvl-bench-"))
    try:
        shutil.copy(image, studies / image.name)
        with ServerProcess(studies, conf=args.conf) as server:
            result.update(url=server.url, **measure(server.url, stem, points))
    finally:
        shutil.rmtree(studies, ignore_errors=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="medvl-server-bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    print(json.dumps(run(parser.parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
