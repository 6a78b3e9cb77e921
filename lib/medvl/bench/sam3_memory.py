"""Peak memory of loading a SAM 3 checkpoint folder against the size of its weights (prints JSON).

    python -m medvl.bench.sam3_memory [--folder DIR] [--vit-hidden 1024 --vit-layers 10]

Without `--folder` it writes the tiny RANDOM-weight folder with its backbone scaled up
(`medvl.bench.sam3_tiny_random`; about 500 MB at the defaults) and measures that. The load
runs in a fresh child process: peak resident memory (VmHWM) after `load_models` minus the
resident memory after the imports, divided by the bytes of the weight files; every weight
is read once after the load, so weights still backed by the mapped file are counted too. One copy of the
weights plus allocator slack is a ratio near 1; a second copy (the backbone loaded twice,
or a state dict kept beside the model) shows as 2 or more.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys
def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
import torch, transformers  # noqa: F401
from medvl.engines.sam3.checkpoint import inspect_folder, load_models
from transformers import Sam3VideoModel, Sam3TrackerVideoModel  # noqa: F401
base = vm("VmRSS:")
models = load_models(sys.argv[1], "cpu")
unique = {id(p): p for m in (models.video, models.tracker) if m is not None for p in m.parameters()}
with torch.no_grad():
    for p in unique.values():
        p.sum()  # read every weight once: pages of a memory-mapped file count only once touched
params = sum(p.numel() * p.element_size() for p in unique.values())
print(json.dumps({"rss_after_imports": base, "peak_rss": vm("VmHWM:"), "rss_after_load": vm("VmRSS:"),
                  "param_bytes": params, "weight_bytes": inspect_folder(sys.argv[1]).weight_bytes}))
"""


def measure(folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    m["peak_over_weights"] = round((m["peak_rss"] - m["rss_after_imports"]) / m["weight_bytes"], 3)
    m["resident_over_weights"] = round((m["rss_after_load"] - m["rss_after_imports"]) / m["weight_bytes"], 3)
    return m


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="an existing SAM 3 checkpoint folder (default: write the scaled random one)")
    parser.add_argument("--vit-hidden", type=int, default=1024)
    parser.add_argument("--vit-layers", type=int, default=12)
    args = parser.parse_args(argv)
    if args.folder:
        report = {"folder": args.folder, **measure(Path(args.folder))}
    else:
        from medvl.bench.sam3_tiny_random import write_tiny_random_sam3

        with tempfile.TemporaryDirectory(prefix="medvl-sam3-mem-") as tmp:
            folder = write_tiny_random_sam3(Path(tmp) / "ckpt", vit_hidden=args.vit_hidden, vit_layers=args.vit_layers)
            report = {"folder": f"tiny random, ViT {args.vit_layers} x {args.vit_hidden} (RANDOM weights)",
                      **measure(folder)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
