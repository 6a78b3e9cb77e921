"""Cancel, progress and the propagation work limit (`medvl.server.jobs`) on the service, without HTTP.

Uses the deterministic double engine of test_interactive (a slow variant: each propagated
slice takes a few milliseconds), so the stops land on exact slices.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from medvl.errors import CancelledError
from medvl.server.http import status_for
from medvl.server.interactive import InteractiveService
from medvl.server.jobs import JOB_KEY, JobConflictError, JobError, JobRegistry, RequestCancelledError, WorkLimitError
from medvl.server.settings import ServerSettings
from tests.server.test_interactive import CENTRE, BrightEngine, ball, run  # noqa: F401 (fixture)


class SlowBrightEngine(BrightEngine):
    """BrightEngine whose propagation sleeps `delay_s` per slice (to stop it mid-walk)."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s

    def propagate(self, state, seeds, prompts, should_stop=None, obj_id=None):
        for item in super().propagate(state, seeds, prompts, should_stop, obj_id):
            time.sleep(self.delay_s)
            yield item


def test_work_limit_stops_the_walk_keeps_what_was_done_and_answers_422(ball, tmp_path):
    volume, path = ball
    service = InteractiveService(ServerSettings(max_propagation_s=0.05), engine=SlowBrightEngine(0.03))
    with pytest.raises(WorkLimitError, match="max_propagation_s=0.05") as error:
        run(service, path, tmp_path, foreground=[CENTRE])
    assert status_for(error.value) == 422
    assert "kept slices" in str(error.value)
    mask, info = run(service, path, tmp_path, foreground=[CENTRE])  # same prompt set: the kept mask
    assert info["action"] == "none"
    truth = volume.meta["truth"]
    kept = np.flatnonzero(mask.array.any(axis=(1, 2)))
    assert 1 < kept.size < np.flatnonzero(truth.any(axis=(1, 2))).size  # the seed and some, not all


def test_cancel_from_another_thread_stops_at_the_next_slice(ball, tmp_path):
    _, path = ball
    service = InteractiveService(ServerSettings(), engine=SlowBrightEngine(0.2))
    job = service.jobs.start("medvl_interactive", "my-request")
    errors = []

    def click():
        try:
            run(service, path, tmp_path, foreground=[CENTRE], **{JOB_KEY: job.id})
        except CancelledError as exc:
            errors.append(exc)

    worker = threading.Thread(target=click)
    worker.start()
    while job.progress()["slices_done"] < 2:  # the seed slice and one propagated slice
        time.sleep(0.01)
    assert job.progress()["state"] == "running" and job.progress()["axis"] == "k"
    assert job.cancel("cancelled by the test")
    worker.join(10)
    assert len(errors) == 1 and isinstance(errors[0], RequestCancelledError) and status_for(errors[0]) == 409
    done = job.progress()
    assert done["state"] == "cancelled" and done["reason"] == "cancelled by the test"
    labels, geometry = job.partial_mask()
    assert sorted(np.flatnonzero(labels.any(axis=(1, 2)))) == done["slices"]
    assert not job.cancel("again")  # a finished job cannot be cancelled twice


def test_a_job_is_claimed_once_and_ids_are_checked():
    jobs = JobRegistry(max_compute_s=10)
    job = jobs.start("m", "abc")
    assert jobs.claim("abc") is job and jobs.claim("abc") is None  # a second request cannot take it
    assert jobs.claim({"not": "a string"}) is None
    with pytest.raises(JobConflictError):
        jobs.start("m", "abc")
    for bad in ("", "../x", "a" * 65, "white space"):
        with pytest.raises(JobError):
            jobs.start("m", bad)
    jobs.finish(job)
    assert jobs.start("m", "abc").state == "running"  # a finished id may be reused
