"""`medvl bench-annotate`: `medvl annotate` throughput, memory and resume, local vs Ray, in one run.

    medvl bench-annotate --json docs/bench/annotate.json
    medvl bench-annotate --quick            # 3 tiny volumes, local only (seconds; for tests)

Data: `annotate_data.build` writes N (default 24) distinct volumes made from the three
sample scans (crops, resampled and re-oriented copies of lung1, lung2 CT and brain1 MR)
and a manifest with one expert box per volume in LPS millimetres.

Each configuration runs as its own subprocess `medvl annotate MANIFEST --json-progress`
(local with 1 worker, Ray with 1 worker, Ray with 2 workers), so its process start,
imports, Ray start-up and memory are what a user gets. While it runs, its whole process
tree (the driver, and for Ray the raylet, GCS and worker processes) is polled every
`POLL_S`: summed RSS (peak kept, and the peak until the N/2-th volume), summed PSS
(shared pages counted once), CPU seconds by role (driver, Ray actor, raylet, GCS, agents)
and OS threads. Per-volume times come from the progress events (arrival time on our side,
and the worker's own `seconds` from status.json). Torch threads: local keeps torch's
default (2 here), a Ray actor gets CPUs // workers (2 for one worker): the same.

Ray overhead at one worker, as % of local's per-volume time:
- wall: (wall time / N) of Ray vs of local (start-up included);
- steady: (last volume event - first volume event) / (N - 1), start-up excluded;
- and, to tell dispatch from compute, the worker's own seconds (the median of the per-case
  ratios) and the time between volumes outside any worker (`ratios`). The optional pair
  `local_1thread` / `ray1_1cpu` repeats the comparison with one torch thread.
local and ray1 run twice, in mirrored order (local, ray1, ray2, ray1#2, local#2), and each
pair of repeats is averaged (`run_order`, `combine`): this machine's speed drifts between
runs, and `drift_pct` (the same configuration's second run against its first, per case)
says by how much in this run.
Resume: the finished local batch run again (`--resume`, the default): the whole process
wall time and run_batch's own `seconds`. Agreement: label maps of every configuration
against local (voxel-identical count, min Dice per case and label), plus Dice of the box
object against the expert label (a check on the physical-box path, per source scan).
The machine: CPU count, measured fp32 matmul GFLOPS, and CPU use of other processes
during each run (the machine may be shared; that load is reported, not subtracted).
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from medvl.bench import emit_json
from medvl.bench.annotate_runs import CONTENDED_CPUS, import_seconds, run_annotate, summary_stats, wait_quiet

CONFIGS = {"local": ["--executor", "local"], "ray1": ["--executor", "ray", "--workers", "1"],
           "ray2": ["--executor", "ray", "--workers", "2"],
           # optional, one torch thread each (a free core for everything else): is Ray's overhead CPU contention?
           "local_1thread": ["--executor", "local"], "ray1_1cpu": ["--executor", "ray", "--workers", "1",
                                                                   "--cpus-per-worker", "1"]}
CONFIG_ENV = {"local_1thread": {"OMP_NUM_THREADS": "1"}}
DEFAULT_CONFIGS = ("local", "ray1", "ray2")
REFERENCE = {"ray1": "local", "ray2": "local", "ray1_1cpu": "local_1thread", "local_1thread": "local"}
GOALS = {"ray1_overhead_wall_pct": 10.0, "ray1_overhead_steady_pct": 10.0, "resume_wall_s": 5.0,
         "resume_run_batch_s": 5.0, "local_rss_growth_pct": 10.0, "outputs_min_dice": 0.99}


def torch_threads(config: str) -> int:
    """Torch threads of each worker: local keeps torch's default (this process's: same environment);
    a Ray actor gets `RayExecutor`'s share, CPUs // workers, and calls torch.set_num_threads with it
    (Ray also sets OMP_NUM_THREADS to the actor's CPUs inside the worker)."""
    import torch

    args = CONFIGS[config]
    if "OMP_NUM_THREADS" in CONFIG_ENV.get(config, {}):
        return int(CONFIG_ENV[config]["OMP_NUM_THREADS"])
    if "--cpus-per-worker" in args:
        return int(args[args.index("--cpus-per-worker") + 1])
    if "--workers" in args:
        return max(1, (os.cpu_count() or 1) // int(args[args.index("--workers") + 1]))
    return torch.get_num_threads()


# ---- outputs ----------------------------------------------------------------------------------
def _labels(out_dir: Path, case_id: str) -> np.ndarray | None:
    from medvl.batch.publish import read_status
    from medvl.io import read_mask

    status = read_status(out_dir / case_id) or {}
    name = (status.get("outputs") or {}).get("labels")
    return read_mask(out_dir / case_id / name).array if name and status.get("status") == "ok" else None


def compare_outputs(reference: Path, other: Path, case_ids) -> dict:
    """Label maps of `other` against `reference`: identical count, min Dice over cases and labels."""
    from medvl.metrics import dice

    identical, dices, missing = 0, [], []
    for cid in case_ids:
        a, b = _labels(reference, cid), _labels(other, cid)
        if a is None or b is None:
            missing.append(cid)
            continue
        identical += bool(np.array_equal(a, b))
        for value in sorted(set(np.unique(a)) | set(np.unique(b)) - {0}):
            dices.append(dice(a == value, b == value))
    return {"voxel_identical": identical, "compared": len(case_ids) - len(missing), "missing": missing,
            "min_dice": round(min(dices), 4) if dices else None, "mean_dice": round(float(np.mean(dices)), 4)
            if dices else None}


def expert_dice(out_dir: Path, data_dir: Path, cases: list[dict]) -> dict:
    """Dice of the box object (label 1) against the case's expert label, by source scan."""
    from medvl.metrics import dice
    from medvl.io import read_mask

    by_source: dict = {}
    for case in cases:
        labels = _labels(out_dir, case["case_id"])
        if labels is None:
            continue
        expert = read_mask(data_dir / case["label"]).array > 0
        by_source.setdefault(case["source"], []).append(dice(labels == 1, expert))
    return {s: {"mean": round(float(np.mean(v)), 3), "min": round(float(np.min(v)), 3), "cases": len(v)}
            for s, v in sorted(by_source.items())}


# ---- the machine ------------------------------------------------------------------------------
def machine(gflops_n: int) -> dict:
    import psutil
    import torch

    from medvl.bench.machine import matmul_gflops

    out = {"python": platform.python_version(), "processor": platform.machine(), "cpus": os.cpu_count(),
           "physical_cores": psutil.cpu_count(logical=False), "torch": torch.__version__,
           "torch_threads_default": torch.get_num_threads(), "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
           "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "load_avg_1m_at_start": os.getloadavg()[0]}
    if gflops_n:
        threads = torch.get_num_threads()
        out["matmul_gflops_fp32"] = round(matmul_gflops(gflops_n), 1)
        torch.set_num_threads(1)
        out["matmul_gflops_fp32_1_thread"] = round(matmul_gflops(gflops_n), 1)
        torch.set_num_threads(threads)
        out["matmul_n"] = gflops_n
    return out


# ---- the whole bench --------------------------------------------------------------------------
def _pct(a, b):
    return round(100.0 * (a / b - 1.0), 1) if a is not None and b else None


def paired_pct(run: dict, ref: dict) -> float | None:
    """Median over the cases of (worker seconds in `run` / in `ref`) - 1, in %: the same volume in both."""
    mine = {v["case_id"]: v["worker_s"] for v in run["per_volume"]}
    ratios = [mine[v["case_id"]] / v["worker_s"] for v in ref["per_volume"] if mine.get(v["case_id"]) and v["worker_s"]]
    return round(100 * (float(np.median(ratios)) - 1), 1) if ratios else None


def ratios(runs: dict) -> dict:
    """Each run against its reference (REFERENCE; % more than the reference). Per volume: wall / N,
    steady (start-up excluded), the worker's own seconds (median, and the median of the per-case
    ratios: the same volume in both runs), and the time between volumes not spent in a worker
    (steady minus the mean worker seconds; 1-worker runs only)."""
    out = {}
    for name, r in runs.items():
        ref = runs.get(REFERENCE.get(name, ""))
        if ref is None:
            continue
        entry = {"reference": REFERENCE[name],
                 "wall_s_per_volume_pct": _pct(r["wall_s_per_volume"], ref["wall_s_per_volume"]),
                 "steady_s_per_volume_pct": _pct(r["steady_s_per_volume"], ref["steady_s_per_volume"]),
                 "worker_s_median_pct": _pct(r["worker_seconds"].get("median"), ref["worker_seconds"].get("median")),
                 "worker_s_paired_median_pct": paired_pct(r, ref),
                 "startup_s_extra": round(r["first_volume_event_s"] - r["per_volume"][0]["worker_s"]
                                          - ref["first_volume_event_s"] + ref["per_volume"][0]["worker_s"], 2)
                 if r["per_volume"] and ref["per_volume"] else None,
                 "peak_rss_pct": _pct(r["peak_rss_mb"], ref["peak_rss_mb"])}
        if "--workers 2" not in " ".join(CONFIGS[name]):
            entry["between_volumes_s"] = {  # steady time minus the worker's own, volumes 2..N (as steady)
                n: round(x["steady_s_per_volume"] - float(np.mean([v["worker_s"] for v in x["per_volume"][1:]])), 3)
                for n, x in ((name, r), (REFERENCE[name], ref)) if x["steady_s_per_volume"]}
        out[f"{name}_vs_{REFERENCE[name]}"] = entry
    return out


def combine(runs: list[dict]) -> dict:
    """One configuration's repeats as one: times per volume averaged over the repeats (each case's worker
    seconds too), peaks and other processes' load the largest, RSS growth the worst."""
    def mean(key):
        values = [r.get(key) for r in runs]
        return None if None in values else round(float(np.mean(values)), 3)

    per_case: dict = {}
    for r in runs:
        for v in r["per_volume"]:
            if v["worker_s"]:
                per_case.setdefault(v["case_id"], []).append(v["worker_s"])
    per_volume = [{"case_id": c, "worker_s": round(float(np.mean(w)), 3)} for c, w in per_case.items()]
    growth = [_pct(r["peak_rss_mb"], r["peak_rss_mb_at_half"]) for r in runs if r.get("peak_rss_mb_at_half")]
    wall = mean("wall_s_per_volume")
    return {"repeats": len(runs), "ok": min(r["ok"] or 0 for r in runs), "wall_s_per_volume": wall,
            "steady_s_per_volume": mean("steady_s_per_volume"), "first_volume_event_s": mean("first_volume_event_s"),
            "volumes_per_hour_wall": round(3600 / wall, 1) if wall else 0.0,
            "worker_seconds": summary_stats([v["worker_s"] for v in per_volume]), "per_volume": per_volume,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "peak_pss_mb": max(r["peak_pss_mb"] for r in runs),
            "rss_growth_pct": max(growth) if growth else None, "cpu_utilisation_pct": mean("cpu_utilisation_pct"),
            "other_processes_cpus": max(r["other_processes_cpus"] for r in runs)}


def _goal(value, target, higher_is_better=False) -> dict:
    met = None if value is None else (value >= target if higher_is_better else value <= target)
    return {"value": value, "target": f"{'>=' if higher_is_better else '<='} {target}", "met": met}


def goals(res: dict, runs: dict) -> dict:
    """Each goal: value, target, met (None: not measured). `runs`: each configuration's repeats combined."""
    n = res["dataset"]["volumes"]
    local, ray1 = runs.get("local"), runs.get("ray1")
    resume = res.get("resume")
    out = {}
    out["ray1_overhead_wall_pct"] = _goal(
        _pct(ray1["wall_s_per_volume"], local["wall_s_per_volume"]) if local and ray1 else None,
        GOALS["ray1_overhead_wall_pct"])
    out["ray1_overhead_steady_pct"] = _goal(
        _pct(ray1["steady_s_per_volume"], local["steady_s_per_volume"]) if local and ray1 else None,
        GOALS["ray1_overhead_steady_pct"])
    out["resume_wall_s"] = _goal(resume["wall_s"] if resume else None, GOALS["resume_wall_s"])
    out["resume_run_batch_s"] = _goal(resume["run_batch_s"] if resume else None, GOALS["resume_run_batch_s"])
    out["local_rss_growth_pct"] = _goal(local.get("rss_growth_pct") if local else None,
                                        GOALS["local_rss_growth_pct"])
    dices = [c["min_dice"] for c in res["agreement"].values() if c.get("min_dice") is not None]
    out["outputs_min_dice"] = _goal(min(dices) if dices else None, GOALS["outputs_min_dice"], higher_is_better=True)
    oks = {name: r["ok"] for name, r in res["runs"].items()}
    out["all_volumes_ok"] = {"value": oks, "target": f"== {n} in every run",
                             "met": all(v == n for v in oks.values())}
    if resume:
        out["resume_skipped_all"] = {"value": resume["skipped"], "target": f"== {n}, ran 0",
                                     "met": resume["skipped"] == n and resume["volumes"] == 0}
    return out


def summary(res: dict, runs: dict) -> dict:
    """The key numbers side by side (repeats combined): throughput next to the machine's own peak, memory, CPU."""
    m = res["machine"]
    out = {"cpus": m["cpus"], "machine_matmul_gflops_fp32": m.get("matmul_gflops_fp32"),
           "machine_matmul_gflops_fp32_1_thread": m.get("matmul_gflops_fp32_1_thread"), "runs": {}}
    for name, r in runs.items():
        out["runs"][name] = {"runs": res["repeats_of"][name], "volumes_per_hour": r["volumes_per_hour_wall"],
                             "volumes_per_hour_steady": round(3600 / r["steady_s_per_volume"], 1)
                             if r["steady_s_per_volume"] else None,
                             "worker_s_median": r["worker_seconds"].get("median"),
                             "peak_rss_mb": r["peak_rss_mb"], "peak_pss_mb": r["peak_pss_mb"],
                             "cpu_utilisation_pct": r["cpu_utilisation_pct"],
                             "other_processes_cpus": r["other_processes_cpus"]}
    if res.get("resume"):
        out["resume"] = {k: res["resume"].get(k) for k in ("wall_s", "run_batch_s", "start_event_s", "import_s")}
    return out


def run_order(configs: list[str], repeats: int) -> list[tuple[str, int]]:
    """(config, repeat) in run order: every config once, then local and ray1 again in mirrored order
    (local, ray1, ray2, ray1#2, local#2): this machine's speed drifts by up to ~25 % within minutes
    (measured: the same local run 25 % slower 8 minutes later), and a mirrored order gives both
    configurations the same mean position in time, so a steady drift cancels in the comparison."""
    order = [(name, 1) for name in configs]
    again = [name for name in configs if name in ("local", "ray1")]
    for rep in range(2, repeats + 1):
        order += [(name, rep) for name in (again[::-1] if rep % 2 == 0 else again)]
    return order


def run(args) -> dict:
    from medvl.bench.annotate_data import build

    if args.quick:
        args.volumes, args.configs, args.half_ij, args.half_k, args.gflops_n = 3, ["local"], 20, 0, 256
        args.wait_quiet, args.repeats = 0.0, 1
    configs = list(dict.fromkeys(args.configs))
    if "local" not in configs:
        configs.insert(0, "local")  # the reference of every ratio and comparison
    work = Path(args.work or tempfile.mkdtemp(prefix="medvl-bench-annotate-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict = {"benchmark": "bench-annotate", "data": "distinct crops / resampled / re-oriented copies of the "
                 "sample scans lung1, lung2 (CT) and brain1 (MR), one expert box each in LPS mm",
                 "machine": machine(args.gflops_n)}
    tb = time.perf_counter()
    data = build(work / "data", args.volumes, text_on_ct=args.text_on_ct, half_ij=args.half_ij,
                 half_k=args.half_k)
    cases = data["cases"]
    res["dataset"] = {"volumes": len(cases), "build_s": round(time.perf_counter() - tb, 2),
                      "distinct_files": len({c["sha256"] for c in cases}),
                      "by_source": {s: sum(c["source"] == s for c in cases) for s in sorted({c["source"] for c in cases})},
                      "orientations": sorted({c["recipe"]["orient"] for c in cases}),
                      "axial_axis_counts": {a: sum(c["axial_axis"] == a for c in cases) for a in "ijk"},
                      "formats": sorted({c["recipe"]["fmt"] for c in cases}),
                      "voxels": summary_stats([np.prod(c["size_ijk"]) for c in cases]),
                      "prompts": "1 box per volume" + ("; CT rows also the text 'nodule'" if args.text_on_ct else "")}
    res["runs"], res["repeats_of"], outs = {}, {}, {}
    for name, rep in run_order(configs, args.repeats):
        key = name if rep == 1 else f"{name}#{rep}"
        res["repeats_of"].setdefault(name, []).append(key)
        outs[key] = work / (f"out_{name}" if rep == 1 else f"out_{name}_{rep}")
        waited = wait_quiet(args.wait_quiet)
        r = res["runs"][key] = run_annotate(data["manifest"], str(outs[key]), CONFIGS[name],
                                            half_at=len(cases) // 2 if name == "local" else None,
                                            env=CONFIG_ENV.get(name))
        r["waited_for_quiet_s"], r["torch_threads_per_worker"] = waited, torch_threads(name)
        if key == "local" and not args.no_resume:
            res["resume"] = run_annotate(data["manifest"], str(work / "out_local"), CONFIGS["local"])
            if not args.quick:  # where a resume's seconds go: the interpreter and imports
                res["resume"]["import_s"] = {m: import_seconds(m) for m in ("medvl.cli", "medvl.batch.runner")}
    res["resume_note"] = "the finished local batch run again in a fresh process (resume is the default)"
    combined = {name: combine([res["runs"][k] for k in keys]) for name, keys in res["repeats_of"].items()}
    res["combined"] = {name: {k: v for k, v in c.items() if k != "per_volume"} for name, c in combined.items()}
    ids = [c["case_id"] for c in cases]
    res["agreement"] = {key: compare_outputs(outs["local"], out, ids) for key, out in outs.items() if key != "local"}
    res["expert_dice_local"] = expert_dice(work / "out_local", work / "data", cases)
    res["ratios"] = ratios(combined)
    res["drift_pct"] = {name: paired_pct(res["runs"][keys[-1]], res["runs"][keys[0]])
                        for name, keys in res["repeats_of"].items() if len(keys) > 1}
    res["summary"] = summary(res, combined)
    contended = [n for n, r in [*res["runs"].items(), ("resume", res.get("resume") or {})] if r.get("contended")]
    if contended:
        res["warning"] = (f"other processes used CPUs during {', '.join(contended)} (other_processes_cpus > "
                          f"{CONTENDED_CPUS}): those times include waiting for them; rerun on a quiet machine")
    res["goals"] = goals(res, combined)
    res["goals_not_measured"] = [k for k, g in res["goals"].items() if g["met"] is None]
    res["all_goals_met"] = all(g["met"] for g in res["goals"].values())  # an unmeasured goal is not met
    res["seconds_total"] = round(time.perf_counter() - t0, 1)
    res["work_dir"] = str(work) if args.keep else None
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return res


def add_arguments(parser) -> None:
    parser.add_argument("--json", metavar="OUT", help="also write the JSON here")
    parser.add_argument("--volumes", type=int, default=24, help="distinct volumes in the batch (default 24)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(DEFAULT_CONFIGS),
                        help="executors to run (local always runs: it is the reference); local_1thread and "
                             "ray1_1cpu: the same pair with one torch thread (a free core for Ray's processes)")
    parser.add_argument("--text-on-ct", action="store_true", help="CT rows also ask for the text object 'nodule'")
    parser.add_argument("--half-ij", type=int, default=None, help="force the crop half-width (source voxels)")
    parser.add_argument("--half-k", type=int, default=None, help="force the slices kept either side")
    parser.add_argument("--gflops-n", type=int, default=2048, help="matmul size for the machine's peak (0: skip)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of local and ray1 (mirrored order, "
                        "averaged; default 2)")
    parser.add_argument("--no-resume", action="store_true", help="skip the resume measurement")
    parser.add_argument("--wait-quiet", type=float, default=120.0, metavar="S",
                        help="before each run wait up to S seconds for the CPUs to be idle (shared machines)")
    parser.add_argument("--work", help="work folder (kept); default a temporary one, removed unless --keep")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--quick", action="store_true", help="3 one-slice volumes, local only, small matmul (a "
                        "smoke test in seconds; its numbers mean nothing)")


def main(args) -> int:
    res = run(args)
    text = emit_json(res, args.json, indent=1)
    print(text)
    return 0
