"""`--executor ray`: a pool of Ray actors, each holding a warm engine, fed one volume at a time.

- Only paths and prompts travel (a `VolumeJob` is a few hundred bytes); each actor reads its
  volume and writes its outputs itself, so OUT must be a folder every node can reach (the same
  path on a shared file system; on one machine, any folder).
- The driver hands a volume to an idle actor and waits for any to finish (`ray.wait`), so a
  slow volume never holds up the others and no actor is given more than one volume at a time.
- A worker that dies (node lost, OOM-killed, `kill -9`) loses only its volume in flight: the
  driver sends it to another actor (up to `max_retries` times; after that the volume is
  recorded as failed with the reason) and starts a replacement actor, used once it is ready.
  Publishing is atomic and idempotent (`publish.py`, `Annotator.run` reuses a result of the
  same hash), so a retried volume is written exactly once.
- `address`: None starts a local Ray instance (this machine's CPUs); "auto" or HOST:PORT joins
  a running cluster (`ray start --head` there; every node needs medvl installed).
"""

from __future__ import annotations

import collections
import logging
import os
import time
from pathlib import Path

from medvl.batch.jobs import BatchInputError, BatchSettings
from medvl.errors import MedVLError

log = logging.getLogger(__name__)


class _Worker:
    """The actor: one warm Annotator; torch threads = the CPUs Ray gave it."""

    def __init__(self, settings: BatchSettings, threads: int):
        import socket

        import torch

        from medvl.batch.annotator import Annotator

        torch.set_num_threads(max(1, threads))
        self.annotator = Annotator(settings).warm()
        self.where = {"host": socket.gethostname(), "pid": os.getpid()}

    def ready(self) -> dict:
        return self.where

    def run(self, job, out_dir: str, fingerprint):
        return self.annotator.run(job, Path(out_dir), fingerprint)


class RayExecutor:
    name = "ray"

    def __init__(self, settings: BatchSettings, address: str | None = None, workers: int | None = None,
                 cpus_per_worker: int | None = None, max_retries: int = 3, start_timeout_s: float = 300.0,
                 init_options: dict | None = None):
        try:
            import ray
        except ImportError:
            raise MedVLError("--executor ray needs the ray package: pip install -r requirements/batch.txt") from None
        self.ray = ray
        self.settings = settings
        self.max_retries = max_retries
        self.start_timeout_s = start_timeout_s
        self._own_ray = False
        if not ray.is_initialized():
            opts = dict(init_options or {})
            if address is None:  # a private local instance sized to this machine
                opts.setdefault("num_cpus", os.cpu_count())
                opts.setdefault("object_store_memory", 128 * 2**20)
                self._own_ray = True
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False, **opts)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise BatchInputError(f"cannot reach the Ray cluster at {address!r}: "
                                      f"{str(err).splitlines()[0]}; start one with `ray start --head` "
                                      "or leave out --ray-address") from None
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        if workers is None:
            workers = max(1, cluster_cpus // (cpus_per_worker or 1))
        if workers < 1:
            raise BatchInputError(f"--workers {workers}: give at least 1")
        self.workers = workers
        self.cpus = cpus_per_worker or max(1, min(cluster_cpus, os.cpu_count() or 1) // workers)
        self._actor_cls = ray.remote(num_cpus=self.cpus, max_restarts=0, max_task_retries=0)(_Worker)
        self.actors: dict = {}  # actor handle -> its ready() ref, until ready
        self.idle: list = []
        self.started = 0
        for _ in range(workers):
            self._spawn()

    def _spawn(self) -> None:
        actor = self._actor_cls.remote(self.settings, self.cpus)
        self.actors[actor] = actor.ready.remote()
        self.started += 1

    def run(self, items, out_dir: Path, stop) -> object:
        ray = self.ray
        pending = collections.deque(items)
        attempts: collections.Counter = collections.Counter()
        in_flight: dict = {}  # ref -> (actor, item)
        last_alive = time.monotonic()
        while pending or in_flight:
            while self.idle and pending and not stop.is_set():
                actor, item = self.idle.pop(), pending.popleft()
                in_flight[actor.run.remote(item[0], str(out_dir), item[1])] = (actor, item)
            if stop.is_set() and not in_flight:
                return
            waiting = list(in_flight) + list(self.actors.values())
            if not waiting:
                return
            done, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in done:
                if ref in in_flight:
                    actor, item = in_flight.pop(ref)
                    status = self._result(ref, actor, item, attempts, pending, out_dir)
                    if status is not None:
                        yield status
                else:
                    self._ready(ref)
            if self.idle or in_flight:
                last_alive = time.monotonic()
            elif time.monotonic() - last_alive > self.start_timeout_s:
                for job, _ in pending:  # no actor could start for minutes (no CPUs left in the cluster)
                    yield _driver_failure(job, out_dir, self.settings, "no Ray worker could start within "
                                          f"{self.start_timeout_s:.0f} s (cluster CPUs {ray.cluster_resources().get('CPU', 0)})")
                return

    def _ready(self, ref) -> None:
        actor = next(a for a, r in self.actors.items() if r == ref)
        del self.actors[actor]
        try:
            self.ray.get(ref)
            self.idle.append(actor)
        except self.ray.exceptions.RayActorError as err:
            log.warning("a Ray worker died while starting: %s", str(err).splitlines()[0])
            self._spawn()
        except self.ray.exceptions.RayTaskError as err:  # the engine itself cannot load: no point retrying
            raise MedVLError(f"Ray worker cannot start: {str(err.cause if hasattr(err, 'cause') else err)}") from None

    def _result(self, ref, actor, item, attempts, pending, out_dir):
        ray = self.ray
        try:
            status = ray.get(ref)
            self.idle.append(actor)
            return status
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.ObjectLostError) as err:
            job = item[0]
            attempts[job.case_id] += 1
            reason = str(err).splitlines()[0][:300]
            log.warning("worker died on %s (attempt %d): %s", job.case_id, attempts[job.case_id], reason)
            self._spawn()  # a replacement; used once it is ready
            if attempts[job.case_id] <= self.max_retries:
                pending.appendleft(item)
                return None
            return _driver_failure(job, out_dir, self.settings,
                                   f"its Ray worker died {attempts[job.case_id]} times; last: {reason}")

    def close(self) -> None:
        for actor in [*self.idle, *self.actors]:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.idle, self.actors = [], {}
        if self._own_ray:
            self.ray.shutdown()


def _driver_failure(job, out_dir: Path, settings: BatchSettings, reason: str) -> dict:
    """Record a volume the workers could not finish as failed (its own status.json, published atomically)."""
    import json
    import uuid

    from medvl.batch.publish import partial_dir, publish, read_status

    final = Path(out_dir) / job.case_id
    existing = read_status(final)
    if existing and existing.get("status") in ("ok", "refused"):
        return existing
    status = {"case_id": job.case_id, "source": job.source, "status": "failed", "reason": reason, "hash": None,
              "objects": [], "outputs": {}, "settings": settings.to_dict(), "job": job.to_dict(),
              "timings_s": {}, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = partial_dir(out_dir) / f"{job.case_id}.driver-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    (tmp / "status.json").write_text(json.dumps(status, indent=2) + "\n")
    publish(tmp, final, "")
    return status
