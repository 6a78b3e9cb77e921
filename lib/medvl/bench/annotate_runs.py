"""One `medvl annotate` subprocess, measured: its whole process tree polled (RSS, PSS, CPU by
role, OS threads) and its `--json-progress` events timed as they arrive. Used by
`medvl bench-annotate` (`annotate.py`, which describes what each number means).

The machine may be shared: `wait_quiet` waits for idle CPUs before a run, and each run
reports how many CPUs other processes used meanwhile (`other_processes_cpus`, `contended`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

POLL_S = 0.2
CONTENDED_CPUS = 0.25  # other processes using more than this many CPUs on average: the run's numbers are suspect
PSS_EVERY = 5  # polls between PSS samples (reading smaps costs more than RSS)


# ---- one subprocess, its process tree polled --------------------------------------------------
class TreeMonitor:
    """RSS / PSS / CPU of a process and all its descendants, polled until it exits."""

    def __init__(self, pid: int):
        import psutil

        self.psutil, self.root = psutil, psutil.Process(pid)
        self.peak_rss = self.peak_pss = 0
        self.peak_procs = 0
        self.peak_breakdown: dict = {}
        self.cpu: dict = {}  # pid -> (role, last user+system seconds seen)
        self.threads: dict = {}  # pid -> {"role", "threads"} (largest OS thread count seen)
        self.polls = 0

    def _role(self, p) -> str:
        if p.pid == self.root.pid:
            return "driver"
        try:
            name = " ".join(p.cmdline()[:4]) or p.name()
        except (self.psutil.Error, OSError):
            return "other"
        for key, role in (("_Worker", "ray_actor"), ("raylet", "raylet"), ("gcs_server", "gcs_server"),
                          ("DashboardAgent", "ray_agents"), ("RuntimeEnvAgent", "ray_agents"),
                          ("dashboard", "ray_agents"), ("log_monitor", "ray_agents"), ("monitor.py", "ray_agents")):
            if key in name:
                return role
        return "ray_idle_worker" if name.startswith("ray::") or "default_worker" in name else "other"

    def poll(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except self.psutil.Error:
            return
        rss, pss, by_role = 0, 0, {}
        sample_pss = self.polls % PSS_EVERY == 0
        for p in procs:
            try:
                with p.oneshot():
                    mem = p.memory_info().rss
                    cpu = p.cpu_times()
                    nthreads = p.num_threads()
                if sample_pss:
                    pss += p.memory_full_info().pss
            except (self.psutil.Error, OSError):
                continue
            role = self._role(p)  # each poll: a Ray worker renames itself (ray::IDLE, then ray::_Worker) ...
            if role == "other" and p.pid in self.cpu:
                role = self.cpu[p.pid][0]  # ... and an exiting one may lose its name: keep the last known
            rss += mem
            by_role[role] = by_role.get(role, 0) + mem
            self.cpu[p.pid] = (role, cpu.user + cpu.system)
            seen = self.threads.get(p.pid)
            if seen is None:
                seen = self.threads[p.pid] = {"role": role, "threads": nthreads}
            seen["role"], seen["threads"] = role, max(seen["threads"], nthreads)
        if rss > self.peak_rss:
            self.peak_rss, self.peak_procs = rss, len(procs)
            self.peak_breakdown = {k: round(v / 2**20, 1) for k, v in sorted(by_role.items())}
        self.peak_pss = max(self.peak_pss, pss)
        self.polls += 1

    def cpu_seconds(self) -> dict:
        out: dict = {}
        for role, seconds in self.cpu.values():
            out[role] = round(out.get(role, 0.0) + seconds, 2)
        return out


def _busy_cpu_s() -> float:
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def wait_quiet(max_s: float, busy_below: float = 0.15) -> float:
    """Wait (at most `max_s`) until the machine's CPUs are less than `busy_below` busy over 2 s; -> seconds waited.
    The machine may be shared: a run timed while others compute measures them too."""
    import psutil

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_s:
        if psutil.cpu_percent(interval=2.0) < 100 * busy_below:
            break
    return round(time.perf_counter() - t0, 1)


def _env(extra: dict | None = None) -> dict:
    lib = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = lib + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_annotate(manifest: str, out_dir: str, extra: list[str], half_at: int | None = None,
                 env: dict | None = None) -> dict:
    """One `medvl annotate ... --json-progress` subprocess, measured (see the module docstring)."""
    cmd = [sys.executable, "-m", "medvl.cli", "annotate", manifest, "--out", out_dir, "--json-progress", *extra]
    busy0, t0 = _busy_cpu_s(), time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            errors="replace", env=_env(env))
    monitor = TreeMonitor(proc.pid)
    events: list[tuple[float, dict]] = []
    half = {}

    def read_events():
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            events.append((time.perf_counter() - t0, event))
            if event.get("event") == "volume" and half_at and event.get("done") == half_at:
                half["peak_rss_mb"] = monitor.peak_rss / 2**20  # the running peak when the N/2-th volume ends

    reader = threading.Thread(target=read_events, daemon=True)
    reader.start()
    while proc.poll() is None:
        monitor.poll()
        time.sleep(POLL_S)
    wall = time.perf_counter() - t0
    reader.join(timeout=10)
    stderr = proc.stderr.read()
    busy = _busy_cpu_s() - busy0
    volumes = [(t, e) for t, e in events if e.get("event") == "volume"]
    end = next((e for _, e in events if e.get("event") == "end"), {})
    start_t = next((t for t, e in events if e.get("event") == "start"), None)
    cpu = monitor.cpu_seconds()
    tree_cpu = sum(cpu.values())
    n = len(volumes)
    ncpu = os.cpu_count() or 1
    res = {"command": " ".join([*(f"{k}={v}" for k, v in (env or {}).items()), "medvl", *cmd[3:]]), "exit_code": proc.returncode, "wall_s": round(wall, 2),
           "run_batch_s": end.get("seconds"), "volumes": n, "ok": end.get("ok"), "refused": end.get("refused"),
           "failed": end.get("failed"), "skipped": end.get("skipped"),
           "volumes_per_hour_wall": round(3600 * n / wall, 1) if n else 0.0,
           "volumes_per_hour_run_batch": end.get("volumes_per_hour"),
           "wall_s_per_volume": round(wall / n, 3) if n else None,
           "start_event_s": round(start_t, 2) if start_t is not None else None,
           "first_volume_event_s": round(volumes[0][0], 2) if n else None,
           "steady_s_per_volume": round((volumes[-1][0] - volumes[0][0]) / (n - 1), 3) if n > 1 else None,
           "worker_seconds": summary_stats([e.get("seconds") for _, e in volumes]),
           "per_volume": [{"case_id": e["case_id"], "status": e["status"], "event_s": round(t, 2),
                           "worker_s": e.get("seconds")} for t, e in volumes],
           "peak_rss_mb": round(monitor.peak_rss / 2**20, 1), "peak_pss_mb": round(monitor.peak_pss / 2**20, 1),
           "peak_rss_by_role_mb": monitor.peak_breakdown, "processes_at_peak": monitor.peak_procs,
           "cpu_s_by_role": cpu, "cpu_s": round(tree_cpu, 1),
           "cpu_utilisation_pct": round(100 * tree_cpu / (wall * ncpu), 1),
           "other_processes_cpus": round(max(0.0, busy - tree_cpu) / wall, 2),
           "contended": max(0.0, busy - tree_cpu) / wall > CONTENDED_CPUS,
           "os_threads_max": _thread_roles(monitor.threads)}
    if half_at:
        res["peak_rss_mb_at_half"] = round(half.get("peak_rss_mb", float("nan")), 1)
        res["half_at"] = half_at
    if proc.returncode not in (0, 3):
        res["stderr_tail"] = stderr[-2000:]
    return res


def _thread_roles(threads: dict) -> dict:
    out: dict = {}
    for info in threads.values():
        if info["role"] in ("driver", "ray_actor"):
            out.setdefault(info["role"], []).append(info["threads"])
    return out


def summary_stats(values) -> dict:
    v = [float(x) for x in values if x is not None]
    if not v:
        return {}
    return {"median": round(float(np.median(v)), 3), "mean": round(float(np.mean(v)), 3),
            "p90": round(float(np.percentile(v, 90)), 3), "min": round(min(v), 3), "max": round(max(v), 3)}


def import_seconds(module: str) -> float:
    """Wall time of a fresh `python -c "import MODULE"` (interpreter start included): what every
    `medvl annotate` pays before it looks at a single volume."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, env=_env())
    return round(time.perf_counter() - t0, 2)
