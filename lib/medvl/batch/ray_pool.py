"""`--executor ray`: a pool of Ray actors, each holding a warm engine, fed one volume at a time.

- Only paths and prompts travel (a `VolumeJob` is a few hundred bytes); each actor reads its
  volume and writes its outputs itself, so OUT must be a folder every node can reach (the same
  path on a shared file system; on one machine, any folder).
- The driver hands a volume to an idle actor and waits for any to finish (`ray.wait`), so a
  slow volume never holds up the others and no actor is given more than one volume at a time.
  Each actor runs one task at a time (Ray's default for a synchronous actor) with torch using
  the CPUs Ray gave it.
- A worker that dies (node lost, OOM-killed, `kill -9`) loses only its volume in flight: the
  driver sends it to another actor (up to `max_retries` times; after that the volume is
  recorded as failed, the reason naming the worker's death) and starts a replacement actor,
  used once it is ready, so the pool keeps its size. A volume given to an actor that had died
  while idle counts as an attempt too (Ray cannot tell the two apart).
  Publishing is atomic and idempotent (`publish.py`, `Annotator.run` reuses a result of the
  same hash), so a retried volume is written exactly once.
- An actor whose constructor raises (the engine cannot load) ends the batch with that error
  (MedVLError): every replacement would fail the same way. When no actor is ready or busy
  for `start_timeout_s` (the cluster has no room for one, or they keep dying while starting),
  the volumes not yet done are recorded as failed with that reason.
- `address`: None starts a local Ray instance (this machine's CPUs); "auto" or HOST:PORT joins
  a running cluster (`ray start --head` there; every node needs medvl installed).

State (driver side, one owner: this object): `starting` actor -> its `ready()` ref;
`idle` actors; `busy` task ref -> (actor, (job, fingerprint)); `where` actor -> the host, pid
and node id its `ready()` reported; `deaths` one line per worker lost. `close()` kills every
actor it started (starting, idle and busy).
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

        import ray
        import torch

        from medvl.batch.annotator import Annotator

        torch.set_num_threads(max(1, threads))
        self.annotator = Annotator(settings).warm()
        self.where = {"host": socket.gethostname(), "pid": os.getpid(),
                      "node_id": ray.get_runtime_context().get_node_id()}

    def ready(self) -> dict:
        return self.where

    def run(self, job, out_dir: str, fingerprint):
        return self.annotator.run(job, Path(out_dir), fingerprint)


def _largest_node_cpus(ray) -> int:
    return int(max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0))


def _lines(err: BaseException) -> list[str]:
    return [line.strip() for line in str(err).splitlines() if line.strip()]


class RayExecutor:
    name = "ray"

    def __init__(self, settings: BatchSettings, address: str | None = None, workers: int | None = None,
                 cpus_per_worker: int | None = None, max_retries: int = 3, start_timeout_s: float = 300.0,
                 init_options: dict | None = None):
        try:
            import ray
        except ImportError:
            raise MedVLError("--executor ray needs the ray package: pip install -r requirements/batch.txt") from None
        if max_retries < 0:
            raise BatchInputError(f"--max-retries {max_retries}: give 0 or more")
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
        # by default a worker never asks for more CPUs than the largest node has (else it could never start)
        self.cpus = cpus_per_worker or max(1, min(cluster_cpus // workers, _largest_node_cpus(ray)))
        self._actor_cls = ray.remote(num_cpus=self.cpus, max_restarts=0, max_task_retries=0)(_Worker)
        # a lost worker: its process or node died, or Ray cannot reach it (then it is killed to be sure)
        self._lost_errors = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                             ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError,
                             ray.exceptions.OutOfMemoryError, ray.exceptions.LocalRayletDiedError)
        self.starting: dict = {}  # actor handle -> its ready() ref, until it answers
        self.idle: list = []  # ready actors without a volume
        self.busy: dict = {}  # run() ref -> (actor, (job, fingerprint)): one volume per actor
        self.where: dict = {}  # actor handle -> {"host", "pid", "node_id"} from ready()
        self.deaths: list[str] = []  # one line per worker lost (while starting or on a volume)
        self.started = 0  # actors started, replacements included
        for _ in range(workers):
            self._spawn()

    def _spawn(self) -> None:
        actor = self._actor_cls.remote(self.settings, self.cpus)
        self.starting[actor] = actor.ready.remote()
        self.started += 1

    def run(self, items, out_dir: Path, stop) -> object:
        ray = self.ray
        pending = collections.deque(items)
        attempts: collections.Counter = collections.Counter()
        last_alive = time.monotonic()
        while pending or self.busy:
            while self.idle and pending and not stop.is_set():
                actor, item = self.idle.pop(), pending.popleft()
                self.busy[actor.run.remote(item[0], str(out_dir), item[1])] = (actor, item)
            if stop.is_set() and not self.busy:
                return
            while pending and not stop.is_set() and self._size() < self.workers:
                self._spawn()  # a lost worker's replacement (the pool keeps its size while volumes wait)
            done, _ = ray.wait([*self.busy, *self.starting.values()], num_returns=1, timeout=1.0)
            for ref in done:
                if ref in self.busy:
                    status = self._finished(ref, attempts, pending, out_dir)
                    if status is not None:
                        yield status
                else:
                    self._ready(ref)
            if self.idle or self.busy:
                last_alive = time.monotonic()
            elif time.monotonic() - last_alive > self.start_timeout_s:
                # no actor could start for that long: no room in the cluster, or each one died starting
                why = f"; last worker lost: {self.deaths[-1]}" if self.deaths else ""
                reason = (f"no Ray worker could start within {self.start_timeout_s:g} s ({self.cpus} CPUs per "
                          f"worker; cluster CPUs {ray.cluster_resources().get('CPU', 0):g}, largest node "
                          f"{_largest_node_cpus(ray)}; free some or give fewer --cpus-per-worker){why}")
                while pending:
                    yield _driver_failure(pending.popleft(), out_dir, self.settings, reason)
                return

    def _size(self) -> int:
        return len(self.starting) + len(self.idle) + len(self.busy)

    def _ready(self, ref) -> None:
        actor = next(a for a, r in self.starting.items() if r == ref)
        del self.starting[actor]
        try:
            self.where[actor] = self.ray.get(ref)
            self.idle.append(actor)
        except self._lost_errors as err:
            if getattr(err, "actor_init_failed", False):  # its constructor raised: so would every replacement
                raise MedVLError(f"Ray worker cannot start: {_lines(err)[-1] if _lines(err) else err!r}; "
                                 "run `medvl annotate` with --executor local on one volume to see the "
                                 "full error") from None
            self.deaths.append(f"while starting: {_lines(err)[0] if _lines(err) else type(err).__name__}")
            log.warning("a Ray worker died while starting: %s", self.deaths[-1])
            self._kill(actor)

    def _finished(self, ref, attempts, pending, out_dir):
        """A volume's task ended -> its status, or None when it goes back to `pending` (worker lost)."""
        ray = self.ray
        actor, item = self.busy.pop(ref)
        job = item[0]
        try:
            status = ray.get(ref)
        except self._lost_errors as err:
            where = self.where.pop(actor, {})
            lines = _lines(err) or [type(err).__name__]
            reason = (f"worker on {where.get('host', '?')} (pid {where.get('pid', '?')}) died: "
                      f"{' '.join(dict.fromkeys([lines[0], lines[-1]]))}")[:400]
            self.deaths.append(reason)
            attempts[job.case_id] += 1
            log.warning("%s lost (attempt %d): %s", job.case_id, attempts[job.case_id], reason)
            self._kill(actor)  # unreachable is not dead: never let two attempts at one volume run at once
            if attempts[job.case_id] <= self.max_retries:
                pending.appendleft(item)
                return None
            return _driver_failure(item, out_dir, self.settings,
                                   f"its Ray worker died {attempts[job.case_id]} time(s) (--max-retries "
                                   f"{self.max_retries}); last: {reason}")
        except ray.exceptions.RayTaskError as err:  # Annotator.run raised (an OSError writing OUT, ...)
            self.idle.append(actor)
            where = self.where.get(actor, {})
            cause = getattr(err, "cause", None) or err
            return _driver_failure(item, out_dir, self.settings,
                                   f"the Ray worker on {where.get('host', '?')} raised "
                                   f"{type(cause).__name__}: {(_lines(cause) or [''])[-1][:300]}")
        self.idle.append(actor)
        return status

    def _kill(self, actor) -> None:
        try:
            self.ray.kill(actor)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def close(self, wait_s: float = 10.0) -> None:
        """Kill every actor of the pool; volumes in flight (an abandoned batch) are stopped before this
        returns (up to `wait_s`), so no worker writes into OUT after the batch has ended."""
        for actor in [*self.starting, *self.idle, *(a for a, _ in self.busy.values())]:
            self._kill(actor)
        if self.busy:
            self.ray.wait(list(self.busy), num_returns=len(self.busy), timeout=wait_s)
        self.starting, self.idle, self.busy, self.where = {}, [], {}, {}
        if self._own_ray:
            self.ray.shutdown()


def _driver_failure(item, out_dir: Path, settings: BatchSettings, reason: str) -> dict:
    """Record a volume the workers could not finish as failed (its own status.json, published atomically),
    unless a worker had published its result (same hash) before it was lost: then that result."""
    import json
    import uuid

    from medvl.batch.fingerprint import input_fingerprint, job_hash
    from medvl.batch.publish import partial_dir, publish, read_status

    job, fingerprint = item
    final = Path(out_dir) / job.case_id
    existing = read_status(final)
    if existing and fingerprint is None:  # --no-resume plans without hashing: hash it now
        try:
            fingerprint = input_fingerprint(job.source, existing.get("input"))
        except OSError:
            pass
    if fingerprint and existing and existing.get("status") in ("ok", "refused") and \
            existing.get("hash") == job_hash(fingerprint["sha256"], job.to_dict(), settings.to_dict()):
        return dict(existing, reused=True)
    status = {"case_id": job.case_id, "source": job.source, "status": "failed", "reason": reason, "hash": None,
              "objects": [], "outputs": {}, "settings": settings.to_dict(), "job": job.to_dict(),
              "timings_s": {}, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = partial_dir(out_dir) / f"{job.case_id}.driver-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    (tmp / "status.json").write_text(json.dumps(status, indent=2) + "\n")
    publish(tmp, final, "")
    return status
