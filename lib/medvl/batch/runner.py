"""The batch runner behind `medvl annotate` (and the app's `/batch/infer`): plan, run, summarise.

1. Plan: a volume is skipped (`--resume`, the default) when its `status.json` says ok or
   refused with the same hash (input bytes, its prompts, engine, settings, medvl version:
   `fingerprint.job_hash`) and its outputs are there; everything else is to do (failed
   volumes are tried again).
2. Run: the executor (local or Ray) annotates each volume into its own folder, published
   atomically (`publish.py`); progress is reported per finished volume.
3. Summarise: `summary.csv` / `summary.parquet` rebuilt from the published statuses.

Ctrl-C once: finish the volumes in progress, then stop (the summary is written). Twice:
abandon them (their private folders are removed; nothing half-written is published).
One `OUT/.lock` per output folder keeps two batches from writing into the same folder.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from medvl.batch.fingerprint import input_fingerprint, job_hash
from medvl.batch.jobs import BatchInputError, BatchSettings, VolumeJob
from medvl.batch.progress import Progress
from medvl.batch.publish import clean_partial, read_status
from medvl.batch.summary import write_summary

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    out_dir: str
    total: int
    skipped: int
    ran: int = 0
    counts: dict = field(default_factory=lambda: {"ok": 0, "refused": 0, "failed": 0})
    seconds: float = 0.0
    interrupted: bool = False
    executor: str = "local"
    workers: int = 1
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"out_dir": self.out_dir, "total": self.total, "skipped": self.skipped, "ran": self.ran,
                **self.counts, "seconds": round(self.seconds, 3), "interrupted": self.interrupted,
                "executor": self.executor, "workers": self.workers,
                "volumes_per_hour": round(3600 * self.ran / self.seconds, 1) if self.seconds and self.ran else 0.0,
                "summary": {k: str(v) for k, v in self.summary.items()}}


def is_done(job: VolumeJob, out_dir: Path, settings: BatchSettings) -> tuple[bool, dict | None]:
    """-> (skip it, its input fingerprint or None when the input cannot be read)."""
    status = read_status(out_dir / job.case_id)
    try:
        fp = input_fingerprint(job.source, (status or {}).get("input"))
    except OSError:
        return False, None  # the worker reads it and records why it failed
    if not status or status.get("status") not in ("ok", "refused"):
        return False, fp
    if status.get("hash") != job_hash(fp["sha256"], job.to_dict(), settings.to_dict()):
        return False, fp
    outputs = (status.get("outputs") or {}).values()
    return all((out_dir / job.case_id / name).exists() for name in outputs), fp


def plan(jobs: list[VolumeJob], out_dir: Path, settings: BatchSettings, resume: bool = True):
    """-> (to do: [(job, fingerprint)], number skipped)."""
    todo, skipped = [], 0
    for job in jobs:
        done, fp = is_done(job, out_dir, settings) if resume else (False, None)
        if done:
            skipped += 1
        else:
            todo.append((job, fp))
    return todo, skipped


class _OutputLock:
    def __init__(self, out_dir: Path):
        self.path = out_dir / ".lock"
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise BatchInputError(f"another medvl annotate (pid {holder}) is writing to {self.path.parent}; "
                                  "wait for it or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class _CtrlC:
    """First SIGINT: set `stop` (finish what runs); second: KeyboardInterrupt (abandon it)."""

    def __init__(self, progress: Progress):
        self.stop = threading.Event()
        self.progress = progress
        self.previous = None

    def _handler(self, signum, frame):
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        self.progress.note("Ctrl-C: finishing the volume(s) in progress, then stopping; press Ctrl-C again to "
                           "abandon them")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def make_executor(name: str, settings: BatchSettings, **options):
    if name == "local":
        from medvl.batch.local import LocalExecutor

        return LocalExecutor(settings)
    if name == "ray":
        from medvl.batch.ray_pool import RayExecutor

        return RayExecutor(settings, **options)
    raise BatchInputError(f"executor {name!r}: choose local or ray")


def run_batch(jobs: list[VolumeJob], out_dir, settings: BatchSettings, executor="local", resume: bool = True,
              progress: str = "bar", executor_options: dict | None = None, stop: threading.Event | None = None
              ) -> BatchResult:
    """Annotate `jobs` into `out_dir` (see the module docstring). `executor`: a name or an executor object."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with _OutputLock(out_dir):
        clean_partial(out_dir)
        todo, skipped = plan(jobs, out_dir, settings, resume)
        result = BatchResult(out_dir=str(out_dir), total=len(jobs), skipped=skipped)
        prog = Progress(len(jobs), len(todo), skipped, progress)
        ex = None
        try:
            with _CtrlC(prog) as ctrl_c:
                if stop is not None:  # a caller's own stop event (server, tests) also stops the batch
                    ctrl_c.stop = stop
                if todo:
                    ex = make_executor(executor, settings, **(executor_options or {})) if isinstance(executor, str) \
                        else executor
                    result.executor, result.workers = ex.name, getattr(ex, "workers", 1)
                    for status in ex.run(todo, out_dir, ctrl_c.stop):
                        result.ran += 1
                        state = status.get("status", "failed")
                        result.counts[state] = result.counts.get(state, 0) + 1
                        prog.volume(status)
                result.interrupted = ctrl_c.stop.is_set() and result.ran < len(todo)
        except KeyboardInterrupt:
            result.interrupted = True
            prog.note("Ctrl-C again: abandoned the volume(s) in progress (nothing half-written is kept)")
        finally:
            if ex is not None and isinstance(executor, str):
                ex.close()
            clean_partial(out_dir)
            result.summary = write_summary(out_dir, [j.case_id for j in jobs])
            result.seconds = time.perf_counter() - t0
            prog.end(result.to_dict())
    return result
