"""`medvl annotate --executor ray` on a real multi-node Ray cluster started here (`ray.cluster_utils.Cluster`:
a head with no CPUs and two worker nodes with one CPU each, so the two actors run on two nodes).

What is proved, on 8 small distinct chest-CT slabs (`ray_cases.py`) with `--text lungs --refine hu`:
- the Ray batch ends every volume ok, one folder each, nothing left in `.partial`, one summary row
  each, label maps voxel-identical to the local executor's;
- a worker node removed while a volume is in flight (and a fresh node added): the volume is redone
  by another worker; nothing lost, duplicated or truncated;
- a worker `kill -9`ed with `max_retries=0`: that volume is failed, the reason naming the worker's
  death, and the others finish (a volume whose file is gone fails on its own too);
- Ctrl-C twice: every worker is stopped (its CPU free) when the batch returns; a resume finishes;
- no room for a worker: every volume failed after the start timeout, naming it;
- an engine that cannot load: the batch stops with that error instead of restarting workers.
"""

from __future__ import annotations

import _thread
import csv
import importlib.util
import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import medvl
from medvl.batch.jobs import VolumeJob
from medvl.batch.publish import read_status
from medvl.batch.runner import run_batch
from medvl.errors import MedVLError
from medvl.io import read_mask, read_volume

from .ray_cases import SETTINGS, make_jobs

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                                 reason="needs the ray package (requirements/batch.txt)")]


@pytest.fixture(scope="module")
def cluster():
    """Head (0 CPUs) + 2 worker nodes (1 CPU each) on this machine; always shut down, driver included.

    The nodes use the machine's own address: started with `node_ip_address="127.0.0.1"` they run,
    but `ray.init(address="127.0.0.1:PORT")` rewrites a loopback address to the machine's address
    (`resolve_ip_for_localhost`) and then never reaches that GCS (Ray 2.60).
    """
    import ray
    from ray.cluster_utils import Cluster

    lib = str(Path(medvl.__file__).resolve().parents[1])
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([lib, old_path] if old_path else [lib])  # the workers' medvl
    started = None
    try:
        started = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(2):
            started.add_node(num_cpus=1)
        started.wait_for_nodes()
        yield started
    finally:
        ray.shutdown()
        if started is not None:
            started.shutdown()
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    return make_jobs(tmp_path_factory.mktemp("volumes"))


def ray_executor(cluster, **options):
    from medvl.batch.ray_pool import RayExecutor

    return RayExecutor(options.pop("settings", SETTINGS), address=cluster.address, **options)


class Watched:
    """The real RayExecutor, with every status its driver yields recorded.

    `kill(where)`, when given, is called from a thread once, as soon as a worker has started a
    volume (its private folder `OUT/.partial/<case>.<attempt>` exists) that its driver has not
    got back: `where` is that worker's host, pid and node id, and `case_id` its volume. If the
    worker still published it before dying (`late`: its retry finds the published result), the
    next volume started is the target, so `killed`, the last kill, always lost a volume in flight.
    `then()`, when given, runs in the main thread at the first status after the kill (Ray starts
    nodes only from the main thread).
    """

    def __init__(self, executor, kill=None, then=None):
        self.executor, self.kill, self.then = executor, kill, then
        self.name, self.workers = executor.name, executor.workers
        self.statuses: list[dict] = []
        self.killed: dict | None = None
        self.late: list[str] = []

    def run(self, items, out_dir, stop):
        done = threading.Event()
        killer = threading.Thread(target=self._kill_one_in_flight, args=(Path(out_dir), done), daemon=True)
        if self.kill is not None:
            killer.start()
        try:
            for status in self.executor.run(items, out_dir, stop):
                self.statuses.append(status)
                if self.killed is not None and self.then is not None:
                    self.then()
                    self.then = None
                yield status
        finally:
            done.set()
            if killer.is_alive():
                killer.join(30)

    def _kill_one_in_flight(self, out_dir: Path, done: threading.Event) -> None:
        ex, tried = self.executor, set()
        while self.killed is None and not done.is_set():
            for ref, (actor, (job, _)) in list(ex.busy.items()):
                started = any((out_dir / ".partial").glob(f"{job.case_id}.*"))
                if ref in tried or not started or actor not in ex.where or ex.ray.wait([ref], timeout=0)[0]:
                    continue
                tried.add(ref)
                where = dict(ex.where[actor], case_id=job.case_id)
                self.kill(where)
                _wait_gone(where["pid"])
                if (read_status(out_dir / job.case_id) or {}).get("pid") == where["pid"]:
                    self.late.append(job.case_id)  # published, then died: try the next one
                else:
                    self.killed = where
                break
            time.sleep(0.005)

    def close(self) -> None:
        self.executor.close()


def _wait_gone(pid: int, timeout_s: float = 10.0) -> None:
    """Until process `pid` has exited (a zombie counts: it runs no more code)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.02)
    raise AssertionError(f"worker pid {pid} still alive {timeout_s:g} s after it was killed")


def check_outputs(out: Path, jobs, statuses=None) -> dict[str, dict]:
    """Each case exactly once and whole: one folder with a parseable status.json (and a label map that
    reads back on its image's grid when ok), nothing in .partial, one summary.csv row per case;
    the driver's statuses (when given) one per case. -> {case_id: published status}."""
    ids = sorted(j.case_id for j in jobs)
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != ".partial") == ids
    partial = out / ".partial"
    assert not partial.exists() or not any(partial.iterdir()), sorted(p.name for p in partial.iterdir())
    published = {}
    for job in jobs:
        status = json.loads((out / job.case_id / "status.json").read_text())
        assert status["case_id"] == job.case_id
        if status["status"] == "ok":
            labels = read_mask(out / job.case_id / status["outputs"]["labels"], like=read_volume(job.source))
            assert labels.array.any(), job.case_id
        published[job.case_id] = status
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["case_id"] for r in rows) == ids  # one object per volume: one row each
    assert {r["case_id"]: r["volume_status"] for r in rows} == {c: s["status"] for c, s in published.items()}
    if statuses is not None:
        assert sorted(s["case_id"] for s in statuses) == ids  # N statuses, each case once
    return published


def test_ray_batch_equals_local(cluster, jobs, tmp_path):
    local = run_batch(jobs, tmp_path / "local", SETTINGS, executor="local", progress="quiet")
    assert local.counts == {"ok": len(jobs), "refused": 0, "failed": 0}

    from medvl.batch.ray_pool import RayExecutor

    watched = Watched(RayExecutor(SETTINGS, address=cluster.address))  # the cluster's 2 CPUs -> 2 workers
    try:
        result = run_batch(jobs, tmp_path / "ray", SETTINGS, executor=watched, progress="quiet")
    finally:
        watched.close()
    assert (result.executor, result.workers, result.ran) == ("ray", 2, len(jobs))
    assert result.counts == {"ok": len(jobs), "refused": 0, "failed": 0}
    published = check_outputs(tmp_path / "ray", jobs, watched.statuses)
    reference = check_outputs(tmp_path / "local", jobs)
    assert len({s["hash"] for s in published.values()}) == len(jobs)  # distinct volumes
    assert len({s["pid"] for s in published.values()}) == 2  # both workers had volumes
    assert all(s["pid"] != os.getpid() for s in published.values())
    for job in jobs:
        assert published[job.case_id]["hash"] == reference[job.case_id]["hash"]
        ours = read_mask(tmp_path / "ray" / job.case_id / "labels.nii.gz")
        theirs = read_mask(tmp_path / "local" / job.case_id / "labels.nii.gz")
        assert ours.geometry.same_as(theirs.geometry)
        np.testing.assert_array_equal(ours.array, theirs.array, err_msg=job.case_id)


def test_node_lost_mid_batch_redoes_its_volume(cluster, jobs, tmp_path):
    def lose_node(where):  # as a machine losing power: its worker and all of Ray's processes there at once
        node = next(n for n in cluster.worker_nodes if n.node_id == where["node_id"])
        os.kill(where["pid"], signal.SIGKILL)  # else the worker outlives its raylet for ~0.5 s (and may publish)
        cluster.remove_node(node, allow_graceful=False)

    watched = Watched(ray_executor(cluster, workers=2, max_retries=2), kill=lose_node,
                      then=lambda: cluster.add_node(num_cpus=1))  # room for the replacement worker
    try:
        result = run_batch(jobs, tmp_path, SETTINGS, executor=watched, progress="quiet")
    finally:
        watched.close()
    assert watched.killed is not None, f"no volume was killed in flight (late: {watched.late})"
    assert result.counts == {"ok": len(jobs), "refused": 0, "failed": 0}
    published = check_outputs(tmp_path, jobs, watched.statuses)
    assert published[watched.killed["case_id"]]["pid"] != watched.killed["pid"]  # redone by another worker
    deaths = watched.executor.deaths  # a replacement placed on the lost node before Ray knew dies starting
    assert len([d for d in deaths if not d.startswith("while starting")]) == 1 + len(watched.late), deaths
    assert 3 <= watched.executor.started <= 2 + len(deaths)  # the lost volume waited: a replacement started
    assert any(str(watched.killed["pid"]) in death for death in watched.executor.deaths)


def test_worker_killed_without_retries_fails_only_its_volume(cluster, jobs, tmp_path):
    # plus a volume whose file is gone: Annotator.run raises in the worker (it cannot hash it)
    gone = VolumeJob(case_id="gone", source=str(tmp_path / "gone.nii.gz"))
    batch = [*jobs, gone]
    watched = Watched(ray_executor(cluster, workers=2, max_retries=0),
                      kill=lambda where: os.kill(where["pid"], signal.SIGKILL))
    try:
        result = run_batch(batch, tmp_path / "out", SETTINGS, executor=watched, progress="quiet")
    finally:
        watched.close()
    assert watched.killed is not None, f"no volume was killed in flight (late: {watched.late})"
    assert result.counts == {"ok": len(jobs) - 1, "refused": 0, "failed": 2}  # a late kill's volume is ok
    published = check_outputs(tmp_path / "out", batch, watched.statuses)
    failed = published[watched.killed["case_id"]]
    assert failed["status"] == "failed"
    assert "Ray worker died 1 time(s)" in failed["reason"] and str(watched.killed["pid"]) in failed["reason"]
    assert not (tmp_path / "out" / watched.killed["case_id"] / "labels.nii.gz").exists()
    assert published["gone"]["status"] == "failed"
    assert "gone.nii.gz does not exist" in published["gone"]["reason"]
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        reasons = {r["case_id"]: r["volume_reason"] for r in csv.DictReader(f)}
    assert reasons[watched.killed["case_id"]] == failed["reason"]


def test_ctrl_c_twice_stops_the_workers_and_a_resume_finishes(cluster, jobs, tmp_path):
    import ray

    watched = Watched(ray_executor(cluster, workers=2))
    stop, pool_pids = threading.Event(), []

    def press_ctrl_c_twice_once_a_volume_runs():  # as a person would: the runner's SIGINT handler sees both
        ex, deadline = watched.executor, time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(not ex.ray.wait([ref], timeout=0)[0] for ref in list(ex.busy)):
                pool_pids.extend(w["pid"] for w in list(ex.where.values()))
                _thread.interrupt_main()  # first: finish the volumes in flight
                stop.wait(10)
                _thread.interrupt_main()  # second: abandon them
                return
            time.sleep(0.05)

    presser = threading.Thread(target=press_ctrl_c_twice_once_a_volume_runs, daemon=True)
    presser.start()
    try:
        result = run_batch(jobs, tmp_path, SETTINGS, executor=watched, progress="quiet", stop=stop)
    finally:
        presser.join(30)
        watched.close()
    assert result.interrupted and result.ran < len(jobs) and pool_pids, (result, pool_pids)
    for pid in pool_pids:  # close() stopped every worker, the one with a volume in flight too
        _wait_gone(pid, timeout_s=3.0)
    deadline = time.monotonic() + 10
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU", 0) == 2  # the pool's CPUs are free again

    resumed = run_batch(jobs, tmp_path, SETTINGS, executor="local", progress="quiet")
    assert (resumed.skipped, resumed.ran) == (result.counts["ok"], len(jobs) - result.counts["ok"])
    assert resumed.counts["ok"] == resumed.ran
    check_outputs(tmp_path, jobs)  # each case once and whole, the abandoned attempt cleaned away


def test_no_room_for_a_worker_fails_the_volumes_after_the_start_timeout(cluster, jobs, tmp_path):
    # 2 CPUs per worker, but no node has more than 1: the actor can never be placed
    watched = Watched(ray_executor(cluster, cpus_per_worker=2, start_timeout_s=3))
    try:
        result = run_batch(jobs[:2], tmp_path, SETTINGS, executor=watched, progress="quiet")
    finally:
        watched.close()
    assert (result.workers, result.counts["failed"]) == (1, 2)
    for status in check_outputs(tmp_path, jobs[:2], watched.statuses).values():
        assert status["reason"].startswith("no Ray worker could start within 3 s (2 CPUs per worker; cluster CPUs "
                                           "2, largest node 1;"), status["reason"]


def test_engine_that_cannot_load_stops_the_batch(cluster, jobs, tmp_path):
    settings = replace(SETTINGS, engine="no-such-engine")
    executor = ray_executor(cluster, settings=settings, workers=1, start_timeout_s=60)  # default: 1 CPU each
    try:
        with pytest.raises(MedVLError, match="Ray worker cannot start: .*unknown engine 'no-such-engine'"):
            run_batch(jobs[:1], tmp_path, settings, executor=executor, progress="quiet")
    finally:
        executor.close()
    assert executor.cpus == 1 and executor.started == 1  # not restarted again and again
