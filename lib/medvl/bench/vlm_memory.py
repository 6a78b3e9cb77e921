"""Peak memory of loading a VLM checkpoint against its size on disk (prints JSON).

    python -m medvl.bench.vlm_memory [--size-mb 500] [--family qwen2_5_vl] [--json OUT]

Builds a randomly initialised checkpoint of `--family` in the public layout
(`medvl.bench.vlm_tiny`), scaled by its number of decoder layers to about `--size-mb` of
safetensors weights, then loads it with `VLMAdapter.from_dir` in a fresh Python process
(so nothing of the build is in its memory) and reports that process's resident set size
before the load (after importing torch and transformers), its peak during the load
(VmHWM, reset after the imports) and after every weight has been read once (so pages of
a memory-mapped file count as they do in use). The goal: `peak_increase_mb / weights_mb` well under 2 - the
load holds one copy of the weights, not a state dict and a model side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    """VmHWM: this process's peak RSS since start or since `_reset_peak` (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0: clear_refs 5); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(path: str) -> dict:
    """In this process: RSS before, peak during and after loading `path` (MiB). The model's code
    (torch, transformers, the family's modeling and processor modules) is imported first and the
    peak reset, so the numbers are the load's own."""
    import gc

    from medvl.language.vlm.adapter import VLMAdapter, _image_processor_class, _model_class
    from medvl.language.vlm.checkpoint import inspect_checkpoint

    family = inspect_checkpoint(path).family
    _model_class(family), _image_processor_class(family)  # modeling/processing modules imported now
    from transformers import AutoTokenizer  # noqa: F401

    gc.collect()
    reset = _reset_peak()
    before, peak_before = _rss_mb(), _peak_mb()
    t0 = time.perf_counter()
    adapter = VLMAdapter.from_dir(path)
    seconds = time.perf_counter() - t0
    loaded = {"peak_load_mb": round(_peak_mb(), 1), "rss_load_mb": round(_rss_mb(), 1)}
    import torch

    with torch.inference_mode():  # every weight read once: mapped pages become resident, as in real use
        touched = sum(float(p.float().abs().sum()) > -1 for p in adapter.model.parameters())
    params = sum(p.numel() * p.element_size() for p in adapter.model.parameters())
    return {"rss_before_mb": round(before, 1), "peak_before_mb": round(peak_before, 1), "peak_reset": reset,
            **loaded, "peak_mb": round(_peak_mb(), 1), "rss_after_mb": round(_rss_mb(), 1), **_rss_parts(),
            "tensors_touched": touched, "model_tensors_mb": round(params / 2**20, 1),
            "load_seconds": round(seconds, 2)}


def _rss_parts() -> dict:
    """RssAnon (private memory) and RssFile (mapped file pages, e.g. safetensors) in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssFile:")):
            out[line.split(":")[0].lower() + "_mb"] = round(int(line.split()[1]) / 1024, 1)
    return out


def layers_for(family: str, size_mb: float, hidden: int, intermediate: int) -> int:
    """Decoder layers that bring the model to about `size_mb` (fp32), from two meta-device builds."""
    import torch

    from medvl.bench.vlm_tiny import model

    def size(layers):
        with torch.device("meta"):
            m = model(family, hidden=hidden, layers=layers, intermediate=intermediate)
        return sum(p.numel() * 4 for p in m.parameters()) / 2**20

    one, two = size(1), size(2)
    return max(1, round((size_mb - (one - (two - one))) / (two - one)))


def run(size_mb: float = 500.0, family: str = "qwen2_5_vl", hidden: int = 1024, intermediate: int = 2816,
        folder: str | None = None) -> dict:
    from medvl.bench.vlm_tiny import write_checkpoint
    from medvl.language.vlm.checkpoint import inspect_checkpoint

    layers = layers_for(family, size_mb, hidden, intermediate)
    with tempfile.TemporaryDirectory(prefix="medvl-vlm-mem-") as tmp:
        path = Path(folder or tmp) / f"{family}-{int(size_mb)}mb"
        t0 = time.perf_counter()
        write_checkpoint(family, path, hidden=hidden, layers=layers, intermediate=intermediate)
        build = time.perf_counter() - t0
        info = inspect_checkpoint(path)
        disk = sum(f.stat().st_size for f in info.weight_files) / 2**20
        env_path = str(Path(__file__).resolve().parents[2])
        code = f"import json, sys; sys.path.insert(0, {env_path!r}); from medvl.bench.vlm_memory import measure; " \
               f"print(json.dumps(measure({str(path)!r})))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                             encoding="utf-8", errors="replace")
        if out.returncode != 0:
            raise RuntimeError(f"measuring process failed: {out.stderr.strip().splitlines()[-1:]}")
        child = json.loads(out.stdout.strip().splitlines()[-1])
    increase = child["peak_mb"] - child["rss_before_mb"]
    return {"family": family, "layers": layers, "hidden": hidden, "weights_on_disk_mb": round(disk, 1),
            "weight_bytes_header_mb": round(info.weight_bytes / 2**20, 1), "build_seconds": round(build, 1),
            **child, "peak_increase_mb": round(increase, 1),
            "peak_increase_over_weights": round(increase / disk, 3),
            "one_copy": increase < 1.5 * disk,
            "note": "peak RSS (VmHWM) of a fresh process loading the checkpoint (VLMAdapter.from_dir, dtype auto, "
                    "cpu) and reading every weight once, minus its RSS after importing torch, transformers and the "
                    "family's model code; weights_on_disk_mb: the safetensors files"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m medvl.bench.vlm_memory", description=__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=float, default=500.0, help="target weights size (default 500)")
    p.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen3_vl", "gemma3"])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=2816)
    p.add_argument("--json", help="also write the JSON here")
    args = p.parse_args(argv)
    from medvl.bench import emit_json

    print(emit_json(run(args.size_mb, args.family, args.hidden, args.intermediate), args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
