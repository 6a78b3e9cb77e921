"""Running requests: ids, cancel, progress, and the per-request propagation limit.

Every `POST /infer/<model>` served by `medvl.server.routes_infer` is a `Job`, named by the
client's `request_id` query parameter or a fresh id (returned in the `X-MedVL-Request-Id`
header and as `request_id` in the JSON). While it runs:

- `GET /medvl/progress/<request_id>`: state, slices done so far (indices along the
  object's axis), the range they span and the axis size; `?mask=1` answers the object's
  mask so far (prompted + propagated slices) as NRRD in the image's geometry, so a client
  can draw slices as they arrive.
- `POST /medvl/cancel/<request_id>`: stop at the next slice; a client that disconnects is
  cancelled the same way. What was propagated before the stop is kept in the session.
- `max_propagation_s` (server setting): propagation compute time a request may use; past
  it the walk stops at the next slice and the request is answered 422 naming the limit,
  with what was done kept.

Jobs without an HTTP request (batch infer, direct calls) are made by the service itself,
so the limit holds everywhere. Knowing a request id is what allows cancelling it: the
server's ids are random; a client choosing its own should make them unguessable too.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from medvl.errors import CancelledError, MedVLError

JOB_KEY = "_medvl_job"  # request dict key the /infer route sets to the job id (a client's value is overwritten)
_KEPT = 256  # finished jobs remembered for progress queries
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

RUNNING, DONE, FAILED, CANCELLED, LIMITED = "running", "done", "failed", "cancelled", "limited"


class JobError(MedVLError):
    """A malformed request id (HTTP 400)."""


class JobConflictError(JobError):
    """A request id that is still running (HTTP 409)."""


class RequestCancelledError(CancelledError):
    """The request was cancelled (cancel call or client gone); what was done is kept (HTTP 409)."""


class WorkLimitError(CancelledError):
    """The request's propagation passed `max_propagation_s`; what was done is kept (HTTP 422)."""


@dataclass
class Job:
    """One running request. Fields after `lock` are guarded by it."""

    id: str  # request id (client's or generated)
    model: str  # task name
    max_compute_s: float  # propagation compute budget; <= 0: unlimited
    started: float = field(default_factory=time.monotonic)
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    claimed: bool = False  # taken by the service that runs it (a job is run by one request only)
    state: str = RUNNING
    reason: str = ""  # why it stopped or failed (one line)
    compute_s: float = 0.0  # propagation compute time used so far
    axis: str | None = None  # the propagated object's axis
    axis_size: int = 0  # slices along `axis`
    obj_id: int | None = None
    shape_kji: tuple[int, int, int] | None = None  # the image's array shape, for the partial mask
    geometry: object = None  # medvl.geometry.Geometry of the image
    slices: dict[int, np.ndarray] = field(default_factory=dict, repr=False)  # index -> 2D mask, seeds included
    finished: float | None = None

    # -- called by the running request --------------------------------------------------
    def begin_propagation(self, axis: str, axis_size: int, obj_id: int, shape_kji, geometry, seeds: dict) -> None:
        with self.lock:
            self.axis, self.axis_size, self.obj_id = axis, int(axis_size), obj_id
            self.shape_kji, self.geometry = tuple(shape_kji), geometry
            self.slices = dict(seeds)

    def add_slice(self, index: int, mask: np.ndarray, seconds: float) -> None:
        with self.lock:
            self.slices[int(index)] = mask
            self.compute_s += seconds

    def should_stop(self) -> bool:
        """True once cancelled or past the compute budget (then `reason` says which)."""
        if self.cancel_event.is_set():
            return True
        if 0 < self.max_compute_s <= self.compute_s:
            with self.lock:
                if self.state == RUNNING:
                    self.state = LIMITED
                    self.reason = (f"propagation stopped after {self.compute_s:.1f} s of compute, over the server's "
                                   f"limit max_propagation_s={self.max_compute_s:g}")
            return True
        return False

    def stopped_error(self) -> CancelledError | None:
        """The error to answer with when the propagation was stopped, else None."""
        with self.lock:
            if self.state not in (CANCELLED, LIMITED):
                return None
            done = sorted(self.slices)
            span = f"slices {done[0]}..{done[-1]} along {self.axis}" if done else "no slice"
            status = "cancelled" if self.state == CANCELLED else "stopped"
            kind = RequestCancelledError if self.state == CANCELLED else WorkLimitError
            return kind(f"request {self.id} {status}: {self.reason}; kept {span} in the session (send the same "
                        "request again to get that mask, or add a prompt to go on)")

    # -- called by anyone -----------------------------------------------------------------
    def cancel(self, reason: str) -> bool:
        """Ask the request to stop at the next slice; False if it had already finished."""
        with self.lock:
            if self.state != RUNNING:
                return False
            self.state, self.reason = CANCELLED, reason
        self.cancel_event.set()
        return True

    def progress(self) -> dict:
        with self.lock:
            done = sorted(self.slices)
            return {
                "request_id": self.id, "model": self.model, "state": self.state, "reason": self.reason,
                "elapsed_s": round((self.finished or time.monotonic()) - self.started, 3),
                "compute_s": round(self.compute_s, 3), "axis": self.axis, "axis_size": self.axis_size,
                "obj_id": self.obj_id, "slices_done": len(done), "slices": done,
                "slice_range": [done[0], done[-1]] if done else None,
            }

    def partial_mask(self) -> tuple[np.ndarray, object] | None:
        """(uint8 (k, j, i) 0/1 mask of the slices so far, geometry), or None before propagation."""
        from medvl.slicing import put_slice

        with self.lock:
            if self.shape_kji is None:
                return None
            out = np.zeros(self.shape_kji, dtype=np.uint8)
            for index, mask in self.slices.items():
                put_slice(out, self.axis, index, mask)
            return out, self.geometry


class JobRegistry:
    """Jobs by id: running ones, plus the newest finished ones for late progress queries."""

    def __init__(self, max_compute_s: float):
        self.max_compute_s = float(max_compute_s)
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def start(self, model: str, request_id: str | None = None) -> Job:
        """A new running job; a bad id -> JobError (400), an id still running -> JobError (409)."""
        if request_id is not None and not _ID.match(request_id):
            raise JobError(f"request_id {request_id[:80]!r} must be 1-64 characters of A-Z a-z 0-9 _ -")
        job = Job(id=request_id or uuid.uuid4().hex, model=model, max_compute_s=self.max_compute_s)
        with self._lock:
            old = self._jobs.get(job.id)
            if old is not None and old.state == RUNNING:
                raise JobConflictError(f"request_id {job.id!r} is already running; use a new id per request")
            self._jobs[job.id] = job
            self._jobs.move_to_end(job.id)
            self._prune_locked()
        return job

    def claim(self, job_id: object) -> Job | None:
        """The running job `job_id`, once: the service that runs the request takes it."""
        with self._lock:
            job = self._jobs.get(job_id) if isinstance(job_id, str) else None
            if job is None or job.claimed or job.state != RUNNING:
                return None
            job.claimed = True
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def finish(self, job: Job, error: BaseException | None = None) -> None:
        with job.lock:
            if job.state == RUNNING:
                job.state = DONE if error is None else FAILED
                if error is not None:
                    job.reason = " ".join(str(error).split())[:300]
            job.finished = time.monotonic()
            # the answer carries the mask: keep only which slices were done (progress), not their masks
            job.slices, job.shape_kji, job.geometry = dict.fromkeys(job.slices), None, None

    def running(self) -> int:
        with self._lock:
            return sum(job.state == RUNNING for job in self._jobs.values())

    def _prune_locked(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.state != RUNNING]
        for key in finished[: max(0, len(finished) - _KEPT)]:
            del self._jobs[key]
