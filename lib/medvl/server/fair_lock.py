"""`FairLock`: the compute lock, granted to the waiting request that has used the least compute.

Every engine step (one slice of a propagation, one prompt, one text-refinement step) holds
the compute lock once. A plain lock hands it to whichever thread the OS wakes, so a
correction click that needs a few steps queues behind long propagations of other sessions
slice after slice. `FairLock` keeps the waiters ordered by the compute time their request
has held the lock so far (least attained service; ties: first come), so a new or short
request goes next and a long one goes on whenever nobody with less is waiting - a click
still waits for at most the one step that is running.

A request's count lives in its worker thread: `start_request()` resets it (the /infer route
calls it before running a request in a worker thread). Threads that never call it (batch
inference) accumulate over their whole run and so yield to interactive requests.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time

_attained = threading.local()  # .seconds: compute lock held by this thread's current request


def start_request() -> None:
    """A new request starts in this thread: its attained compute is 0."""
    _attained.seconds = 0.0


def attained_s() -> float:
    return getattr(_attained, "seconds", 0.0)


class FairLock:
    """A non-reentrant lock; `with lock:` waits for the turn of this thread's request."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._held = False
        self._waiting: list[tuple[float, int]] = []  # heap of (attained seconds, arrival number)
        self._arrivals = itertools.count()
        self._since = 0.0  # when the holder took it

    def __enter__(self) -> "FairLock":
        ticket = (attained_s(), next(self._arrivals))
        with self._cond:
            heapq.heappush(self._waiting, ticket)
            while self._held or self._waiting[0] != ticket:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._held = True
        self._since = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        _attained.seconds = attained_s() + time.perf_counter() - self._since
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def locked(self) -> bool:
        return self._held

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)
