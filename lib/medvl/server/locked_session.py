"""A `VolumeSession` seen through the compute lock, one engine step at a time.

The language layer (text solvers that refine with the engine, reports, answers) drives a
session itself: `add_box`, then `run_propagation`. Handed this wrapper instead, each of
those engine calls takes the server's compute lock for one prompt or one slice only, so
a long text solve shares the engine with clicks on other sessions step by step instead
of holding it for the whole solve (`medvl.server.sessions`, lock 3).
"""

from __future__ import annotations



class StepLockedSession:
    def __init__(self, session, lock):
        self._session = session  # medvl.session.VolumeSession, held under its session lock
        self._lock = lock  # the server's compute lock

    def __getattr__(self, name):  # volume, objects, mask, reset, prompt_log, ...: no engine work
        return getattr(self._session, name)

    def add_box(self, *args, **kwargs):
        with self._lock:
            return self._session.add_box(*args, **kwargs)

    def add_point(self, *args, **kwargs):
        with self._lock:
            return self._session.add_point(*args, **kwargs)

    def propagate(self, obj_id=None, should_stop=None):
        steps = self._session.propagate(obj_id, should_stop)
        while True:
            with self._lock:
                step = next(steps, None)
            if step is None:
                return
            yield step

    def run_propagation(self, obj_id=None, should_stop=None) -> int:
        return sum(1 for _ in self.propagate(obj_id, should_stop))
