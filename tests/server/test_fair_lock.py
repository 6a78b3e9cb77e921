"""`medvl.server.fair_lock.FairLock`: the compute lock goes to the least-served waiting request."""

from __future__ import annotations

import threading
import time

from medvl.server.fair_lock import FairLock, attained_s, start_request


def _hold(lock: FairLock, seconds: float) -> None:
    with lock:
        time.sleep(seconds)


def test_attained_service_is_counted_per_thread_and_reset_per_request():
    lock = FairLock()
    start_request()
    _hold(lock, 0.05)
    _hold(lock, 0.05)
    assert 0.09 <= attained_s() < 1.0
    start_request()
    assert attained_s() == 0.0


def test_the_least_served_waiter_goes_first():
    """A long request (0.3 s served) and a new one wait while a third holds the lock: the new
    one gets it first, although the long one asked first."""
    lock, order = FairLock(), []
    served, ask, blocker_in = threading.Event(), threading.Event(), threading.Event()

    def long_request():
        start_request()
        _hold(lock, 0.3)  # its attained service: 0.3 s
        served.set()
        ask.wait(5)
        with lock:
            order.append("long")

    def new_request():
        start_request()
        with lock:
            order.append("new")

    def blocker():
        start_request()
        with lock:
            blocker_in.set()
            time.sleep(0.5)  # both others queue meanwhile

    long_thread = threading.Thread(target=long_request)
    long_thread.start()
    served.wait(5)
    blocking = threading.Thread(target=blocker)
    blocking.start()
    blocker_in.wait(5)
    ask.set()  # the long request asks first ...
    time.sleep(0.1)
    new_thread = threading.Thread(target=new_request)
    new_thread.start()  # ... the new one after it
    for t in (blocking, long_thread, new_thread):
        t.join(10)
    assert order == ["new", "long"]
    assert not lock.locked() and lock.waiting() == 0


def test_equal_service_is_first_come_first_served():
    lock, order = FairLock(), []
    lock.__enter__()
    workers = []
    for n in range(4):
        def work(n=n):
            start_request()
            with lock:
                order.append(n)
        workers.append(threading.Thread(target=work))
        workers[-1].start()
        time.sleep(0.05)
    lock.__exit__(None, None, None)
    for t in workers:
        t.join(10)
    assert order == [0, 1, 2, 3]
