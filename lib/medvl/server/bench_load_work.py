"""The parts of `medvl bench-load` that do the work: images and their expected objects, the
request mix, one client thread, the server handle (kill -9, restart, RSS) and the checks.

Arrays are numpy (k, j, i); prompts sent to the server are ITK (i, j, k). Masks are kept as
the reply's file bytes while the load runs and read back only in the checks afterwards,
so the client threads spend no CPU beside the server's on the 2-core machines we measure on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medvl import metrics

logger = logging.getLogger(__name__)

# The mix of one client's requests (weights; the first request is always a first click).
MIX = {"first": 0.10, "correction": 0.35, "undo": 0.15, "text": 0.10, "report": 0.07, "vqa": 0.08, "save": 0.15}
KINDS = ("first", "correction", "undo", "text", "report", "vqa", "save_infer", "save_put")
INTERACTIVE = ("first", "correction", "undo", "save_infer")  # requests that run medvl_interactive
LESION = "lesion"  # the object every click addresses (the server's first configured label)
TEXT = "nodule"  # the text prompt on CT images (medvl.language grounds it on lung CT; not on MR)
QUESTION = f"How large is the {LESION}?"
DICE_TOLERANCE = 0.02  # a loaded mask is wrong when its Dice to the unloaded mask is below 1 - this


@dataclass
class Case:
    """One image of the benchmark's studies folder and the prompts derived from its expert label."""

    image_id: str  # datastore id (file stem)
    path: Path  # image file in the studies folder
    label: np.ndarray  # expert label, bool (k, j, i), in this image's index space
    ct: bool  # text prompts only on CT
    box: list  # [[i0, j0, k], [i1, j1, k]]: the label's bounding box on its largest k slice
    points: list  # ITK (i, j, k) voxels inside the label on that slice, most central first
    note: str = ""  # how the image was made (copy, reoriented copy)


def central_points(label: np.ndarray, count: int, seed: int) -> list[list[int]]:
    """`count` distinct ITK (i, j, k) voxels inside `label` (bool (k, j, i)) on its largest k
    slice: the most central first, then seeded picks among the 4 x count most central."""
    k = int(np.argmax(label.sum(axis=(1, 2))))
    js, is_ = np.nonzero(label[k])
    order = np.argsort((js - js.mean()) ** 2 + (is_ - is_.mean()) ** 2, kind="stable")
    inner = order[: max(count * 4, 2)]
    rng = np.random.default_rng(seed)
    picks = [inner[0]] + list(rng.choice(inner[1:], size=min(count - 1, len(inner) - 1), replace=False))
    return [[int(is_[n]), int(js[n]), k] for n in picks]


def slice_box(label: np.ndarray) -> list[list[int]]:
    """Corner pair [[i0, j0, k], [i1, j1, k]] of `label`'s (bool (k, j, i)) bbox on its largest k slice."""
    k = int(np.argmax(label.sum(axis=(1, 2))))
    j, i = np.nonzero(label[k])
    return [[int(i.min()), int(j.min()), k], [int(i.max()), int(j.max()), k]]


def make_cases(sample_dir: Path, studies: Path, names: list[str], corrections: int, seed: int) -> list[Case]:
    """Copy the sample images into `studies`; a name ending in "_rot" is that case rotated 180
    degrees in plane (i and j reversed, direction and origin changed so every voxel keeps its
    physical place), written with medvl.io, its expert label reversed the same way."""
    from medvl.geometry import Geometry
    from medvl.io import read_mask, read_volume, write_volume
    from medvl.volume import Volume

    cases = []
    for name in names:
        base = name[:-4] if name.endswith("_rot") else name
        volume = read_volume(sample_dir / f"{base}_image.nii.gz")
        label = read_mask(sample_dir / f"{base}_label.nii.gz", like=volume).array > 0
        if name.endswith("_rot"):
            g = volume.geometry
            ni, nj, _ = volume.size_ijk
            d = g.direction_matrix.copy()
            d[:, :2] *= -1
            rotated = Geometry(g.index_to_physical([ni - 1, nj - 1, 0]), g.spacing, d)
            volume = Volume(np.ascontiguousarray(volume.array[:, ::-1, ::-1]), rotated, volume.modality)
            label = np.ascontiguousarray(label[:, ::-1, ::-1])
            path = write_volume(studies / f"{name}_image.nii.gz", volume)
            note = f"{base} rotated 180 degrees in plane (i, j reversed; direction columns i, j negated)"
        else:
            path = studies / f"{name}_image.nii.gz"
            path.write_bytes((sample_dir / f"{base}_image.nii.gz").read_bytes())
            note = f"copy of sample_data/{base}_image.nii.gz"
        cases.append(Case(f"{name}_image", path, label, volume.modality == "CT", slice_box(label),
                          central_points(label, corrections + 1, seed), note))
    return cases


def plan(seed: int, client: int, requests: int) -> list[str]:
    """The planned kinds of one client's requests (seeded): a first click, then draws from MIX;
    the request before the midpoint and the last one are saves, so labels are saved on both
    sides of the kill. A kind that cannot run in the client's state is swapped when it runs."""
    rng = random.Random(seed * 1000 + client)
    kinds = ["first"] + rng.choices(list(MIX), weights=list(MIX.values()), k=max(requests - 1, 0))
    kinds = kinds[:requests]
    for n in {max(requests // 2 - 1, 1), requests - 1}:
        if 0 < n < requests:
            kinds[n] = "save"
    return kinds


# ---- the server ---------------------------------------------------------------------------
class ServerHandle:
    """The benchmark's server: started with a private TMPDIR (so its temp files are ours to
    count), killed with SIGKILL on its process group, restarted on the same studies and port."""

    def __init__(self, studies: Path, tmp: Path, logs: Path, conf):
        self.studies, self.tmp, self.logs, self.conf = studies, tmp, logs, list(conf)
        self.process = None  # medvl.server.launch.ServerProcess
        self.url = ""
        self.epoch = 0  # +1 on every (re)start
        self.down = threading.Event()  # set from just before the kill until the restart answers
        self.up = threading.Event()  # set while a server answers

    def start(self, port: int | None = None) -> float:
        from medvl.server.launch import ServerProcess

        t0 = time.perf_counter()
        process = ServerProcess(self.studies, conf=self.conf, port=port,
                                log_path=self.logs / f"server-{self.epoch + 1}.log")
        saved = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = str(self.tmp)  # read by server_env() in start(); our own tempdir is cached
        try:
            process.start()
        finally:
            if saved is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved
        self.process, self.url = process, process.url
        self.epoch += 1
        self.down.clear()
        self.up.set()
        return time.perf_counter() - t0

    def kill(self) -> None:
        """SIGKILL to the whole process group: no shutdown code runs, as in a crash."""
        self.down.set()
        self.up.clear()
        os.killpg(self.process.process.pid, signal.SIGKILL)
        self.process.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.up.clear()

    def rss_mb(self) -> float | None:
        """VmRSS summed over the server's process group (it runs in its own session)."""
        if self.process is None or not self.process.alive():
            return None
        return group_rss_mb(self.process.process.pid)


def group_rss_mb(pgid: int) -> float | None:
    total, found = 0, False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:  # field 5: pgrp
                continue
            for line in Path(entry.path, "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    found = True
        except (OSError, ValueError, IndexError):
            continue
    return round(total / 1024, 1) if found else None


# ---- one client ------------------------------------------------------------------------------
@dataclass
class Record:
    """One request as the client saw it; masks checked after the run (`check_records`)."""

    client: int
    kind: str
    image_id: str
    seconds: float
    status: int
    outcome: str  # "ok", "error", "session_lost" (410 after the restart), "evicted" (410, budget)
    expect: tuple | None = None  # reference key of the mask it must carry
    mask: bytes | None = None  # the reply's mask file
    ext: str = ".nrrd"
    detail: str = ""
    check: dict = field(default_factory=dict)  # report / vqa: {"voxels": what the session's object has}
    epoch: int = 0


class OutageError(Exception):
    """The server went away under a request (kill -9): retried after the restart."""


class LoadClient:
    """One client thread: its own client_id and session on its image; the request sequence of `plan`.

    State of its lesion object: `first` ("box" or "point") and `n` correction points, the
    same states the unloaded reference walked (`reference_key`).
    """

    def __init__(self, index: int, case: Case, kinds: list[str], server: ServerHandle, shared: "Shared",
                 corrections: int, refine: str):
        self.index, self.case, self.kinds, self.server, self.shared = index, case, kinds, server, shared
        self.client_id = f"bench-load-{index}"
        self.corrections, self.refine = corrections, refine
        self.generation = None  # medvl_session of the live session; None: start a new one
        self.generation_epoch = 0  # the server start that gave it
        self.first, self.n = None, 0  # lesion state: None = no object yet
        self.voxels = None  # the lesion's voxels in the last mask reply
        self.last_mask: tuple[bytes, str] | None = None
        self.saves = 0
        self.records: list[Record] = []

    def run(self) -> None:
        from medvl.server.client import ServerClient

        self.api = ServerClient(self.server.url, client_id=self.client_id, timeout_s=600)
        self.http_epoch = self.server.epoch
        for planned in self.kinds:
            self.shared.wait_started()
            while True:
                try:
                    self._one(planned)
                    break
                except _Retry:
                    continue  # the 410 is recorded; the request runs again on a new session
                except OutageError:
                    self.shared.outage()
                    self.server.up.wait()
                    self.api.url = self.server.url
            self.shared.done()

    # ---- a request ------------------------------------------------------------------------
    def _one(self, planned: str) -> None:
        if self.http_epoch != self.server.epoch:  # new server: drop the old server's pooled connections
            import requests

            self.api.http, self.api.url, self.http_epoch = requests.Session(), self.server.url, self.server.epoch
        kind = self._runnable(planned)
        if kind in ("first", "correction", "undo", "save_infer"):
            self._interactive(kind)
        elif kind == "save_put":
            self._put()
        else:
            self._language(kind)

    def _runnable(self, planned: str) -> str:
        """The kind that runs now: a click when there is no object yet, the opposite move at a
        limit (undo at 0 corrections -> correction; correction at the cap -> first click)."""
        if planned == "text" and not self.case.ct:
            planned = "correction"  # the text concepts are CT ones
        if self.first is None and planned in ("correction", "undo", "report", "vqa", "save"):
            return "first"
        if planned == "undo" and self.n == 0:
            planned = "correction"
        if planned == "correction" and self.n >= self.corrections:
            planned = "first"
        if planned == "save":
            self.saves += 1
            return "save_infer" if self.saves % 2 else "save_put"
        return planned

    def _prompts(self, first: str, n: int) -> dict:
        points = self.case.points
        if first == "box":
            return {"boxes": [self.case.box], "foreground": points[1: n + 1]}
        return {"foreground": points[: n + 1]}

    def _interactive(self, kind: str) -> None:
        params = {"label": LESION}
        if kind == "first":
            first = "point" if self.first == "box" else "box"  # alternate box and point objects
            state = (first, 0)
            params.update(self._prompts(*state), reset_state=True)
        elif kind == "correction":
            state = (self.first, self.n + 1)
            params.update(self._prompts(*state))
        elif kind == "undo":
            state = (self.first, self.n - 1)
            params["undo"] = 1
        else:  # save_infer: the same prompt set (nothing to compute), saved as this client's label
            state = (self.first, self.n)
            params.update(self._prompts(*state), save_label=True, label_tag=self.tag("infer"))
        record = self._send(kind, "medvl_interactive", params, expect=(self.case.image_id, *state))
        if record.outcome == "ok":
            self.first, self.n = state
            self.voxels = record.check.get("voxels")
            expected_set = self._prompts(*state)
            got = record.check.pop("prompt_set", {})
            record.check["prompt_set_ok"] = (got.get("boxes", []) == expected_set.get("boxes", []) and
                                             got.get("foreground", []) == expected_set.get("foreground", []))
            if kind == "save_infer":
                self.shared.saved(record.check.get("tag"), self.case.image_id, record.mask, record.ext)

    def _put(self) -> None:
        data, ext = self.last_mask
        tag = self.tag("put")
        self.shared.saving(+1)
        t0 = time.perf_counter()
        try:
            r = self.api.http.put(f"{self.api.url}/datastore/label", params={"image": self.case.image_id, "tag": tag},
                                  files={"label": (f"{self.case.image_id}{ext}", data)}, timeout=120)
        except OSError as error:
            self._outage(error, "save_put", time.perf_counter() - t0)
            return
        finally:
            self.shared.saving(-1)
        seconds = time.perf_counter() - t0
        ok = r.status_code == 200
        self.shared.saved(tag, self.case.image_id, data, ext, attempted_only=not ok)
        self.records.append(Record(self.index, "save_put", self.case.image_id, seconds, r.status_code,
                                   "ok" if ok else self._failure(r.status_code, r.text), detail=r.text[:300],
                                   epoch=self.server.epoch))

    def _language(self, kind: str) -> None:
        if kind == "text":
            params = {"text": TEXT, "refine": self.refine}
            self._send(kind, "medvl_text", params, expect=(self.case.image_id, "text"))
        elif kind == "report":
            record = self._send(kind, "medvl_report", {"label": LESION, "refine": self.refine})
            if record.outcome == "ok":
                objects = record.check.pop("json", {}).get("report_json", {}).get("objects", [])
                record.check.update(expected_voxels=self.voxels, voxels=[o.get("voxels") for o in objects
                                                                         if o.get("name") == LESION])
        else:
            record = self._send(kind, "medvl_vqa", {"question": QUESTION, "label": LESION, "refine": self.refine})
            if record.outcome == "ok":
                facts = record.check.pop("json", {}).get("facts", [])
                record.check.update(expected_voxels=self.voxels, voxels=[f.get("voxels") for f in facts])

    def tag(self, how: str) -> str:
        return f"bench-{how}-{self.index}"

    def _send(self, kind: str, model: str, params: dict, expect: tuple | None = None) -> Record:
        if self.generation:
            params["medvl_session"] = self.generation
        interactive = model == "medvl_interactive"
        saving = bool(params.get("save_label"))
        self.shared.begin(interactive, saving)
        epoch, t0 = self.server.epoch, time.perf_counter()
        try:
            reply = self.api.infer(self.case.image_id, params, model=model)
        except OSError as error:  # requests' ConnectionError and friends
            return self._outage(error, kind, time.perf_counter() - t0)
        finally:
            self.shared.end(interactive, saving)
        record = Record(self.index, kind, self.case.image_id, reply.seconds, reply.status, "ok", epoch=epoch)
        if reply.status != 200:
            record.outcome, record.detail = self._failure(reply.status, reply.detail), reply.detail[:300]
            self.records.append(record)
            if record.outcome in ("session_lost", "evicted"):
                self.generation, self.first, self.n, self.voxels = None, None, 0, None
                raise _Retry()
            return record
        j = reply.json
        self.generation = (j.get("session") or {}).get("medvl_session", self.generation)
        self.generation_epoch = epoch
        record.check = {"voxels": j.get("voxels"), "prompt_set": j.get("prompt_set") or {}, "json": j,
                        "tag": params.get("label_tag")}
        if reply.image is not None:
            ext = "".join(Path(reply.filename or "m.nrrd").suffixes[-2:]) or ".nrrd"
            record.mask, record.ext, record.expect = reply.image, ext, expect
            if kind != "text":
                self.last_mask = (reply.image, ext)
        elif expect is not None:
            record.outcome, record.detail = "error", "a mask answer without a mask file"
        if kind != "report" and kind != "vqa":
            record.check.pop("json", None)
        self.records.append(record)
        return record

    def _failure(self, status: int, detail: str) -> str:
        if status == 410 and self.generation and self.generation_epoch < self.server.epoch:
            return "session_lost"  # the session was on the killed server
        if status == 410 and "evicted" in detail:
            return "evicted"
        return "error"

    def _outage(self, error: Exception, kind: str, seconds: float) -> Record:
        """A request that got no HTTP answer: an outage (retried) while the server is down or
        restarting, else an error of this request."""
        if self.server.down.is_set() or not self.server.up.is_set():
            raise OutageError(str(error))
        record = Record(self.index, kind, self.case.image_id, seconds, 0, "error",
                        detail=f"{type(error).__name__}: {str(error)[:250]}", epoch=self.server.epoch)
        self.records.append(record)
        return record


class _Retry(OutageError):
    """The session is gone (restart or eviction): start a new one and run the request again."""


class Shared:
    """Counters the client threads, the /info poller and the killer share (one lock)."""

    def __init__(self, total: int):
        self.lock = threading.Lock()
        self.total, self.completed, self.outages = total, 0, 0
        self.clicks_running = self.saves_running = 0
        self.go = threading.Event()
        self.saves: dict[tuple[str, str], list[tuple[bytes, str, bool]]] = {}  # (tag, image) -> attempts

    def wait_started(self) -> None:
        self.go.wait()

    def begin(self, interactive: bool, saving: bool) -> None:
        with self.lock:
            self.clicks_running += interactive
            self.saves_running += saving

    def end(self, interactive: bool, saving: bool) -> None:
        with self.lock:
            self.clicks_running -= interactive
            self.saves_running -= saving

    def saving(self, delta: int) -> None:
        with self.lock:
            self.saves_running += delta

    def done(self) -> None:
        with self.lock:
            self.completed += 1

    def outage(self) -> None:
        with self.lock:
            self.outages += 1

    def saved(self, tag, image_id, data, ext, attempted_only=False) -> None:
        if tag is None or data is None:
            return
        with self.lock:
            self.saves.setdefault((tag, image_id), []).append((data, ext, not attempted_only))


def digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array, dtype=np.uint8).tobytes()).hexdigest()


def read_bytes_mask(data: bytes, ext: str, scratch: Path):
    """A mask file's bytes -> medvl Volume (uint8 (k, j, i) + geometry), via a scratch file."""
    from medvl.io import read_mask

    fd, path = tempfile.mkstemp(suffix=ext, dir=scratch)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        return read_mask(path)
    finally:
        os.unlink(path)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """0.0 for two empty masks: an empty answer never counts as right here."""
    return metrics.dice(a, b, empty=0.0)
