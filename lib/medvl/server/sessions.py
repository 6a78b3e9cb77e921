"""Server-side sessions: one `VolumeSession` per (image, client), bounded in memory and time.

A session key is `mls:<MONAI Label session_id>` when the client uses MONAI Label's session
endpoint, else `<image id>@<client id>` (`medvl.server.protocol.session_key`); state is
never shared between keys. Each live key holds one `SessionEntry`: the decoded volume and
the `VolumeSession` - the one owner of every object's prompts, undo history and masks
(text results included) - plus the label name <-> object id mapping.

Memory: after every request the entry's bytes (volume + engine cache + masks) are
re-measured and least-recently-used entries are evicted until the total is within
`max_bytes`; the entry just used is never evicted by its own request. Time: entries idle
longer than `ttl_s` are dropped on the next request or `sweep()` (MONAI Label's cleanup
timer calls it). A dropped key is remembered with its reason, so a client that asks to
continue it (`medvl_session` = the generation it was given, or `undo`) gets
`SessionGoneError` (HTTP 410) naming why, instead of a silently fresh session.

Locks, always taken in this order (never the reverse, so no cycle can form):

1. `SessionStore._lock` - the registry. Guards the dict and byte totals only; held for
   lookups, inserts and evictions, and while holding it a thread only *tries* session
   locks (non-blocking), so it never waits on anything.
2. `SessionEntry.lock` - one per session. Held for a whole request on that session
   (volume load, prompts, propagation, mask extraction), so two requests of one client
   run one after the other and see each other's prompts.
3. The compute lock - one per process (`InteractiveService.compute_lock`). Held around
   each engine call - one prompt, or ONE propagation step (one slice) - and around
   language-layer calls (grounding, solvers, reports, answers: their process-wide caches -
   the sentence encoder, `anatomy_for` - are not thread-safe), always inside a session lock
   when there is one. So requests on different sessions decode and write files in
   parallel, share the CPU/GPU one step at a time, and a click on another session waits
   for at most one slice of a running propagation. The lock goes to the waiting request
   that has held it least so far (`medvl.server.fair_lock`): new and short requests
   (corrections) go ahead of long propagations.

Requests run in worker threads (`medvl.server.routes_infer`), never on the event loop, so
`/info/` and the other routes answer while inference runs.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator


from medvl.errors import PromptError, SessionError

logger = logging.getLogger(__name__)

_GONE_MEMORY = 1024  # how many dropped keys are remembered for a clear 410


class SessionGoneError(SessionError):
    """The session a request wants to continue was evicted or expired (HTTP 410)."""


@dataclass
class SessionEntry:
    """One client's session on one image. Fields other than `lock` are guarded by `lock`."""

    key: str  # see module docstring
    generation: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # new after every re-creation
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    image_path: str = ""  # file the volume was read from
    volume: object = None  # medvl.volume.Volume, None until loaded
    session: object = None  # medvl.session.VolumeSession, None until loaded
    label_ids: dict[str, int] = field(default_factory=dict)  # label name -> obj_id: the one mapping
    nbytes: int = 0  # measured after each request, drives LRU eviction
    last_used: float = 0.0  # store clock at the end of the last request
    requests: int = 0  # requests served, for logs and responses
    closed: bool = False  # set (under `lock`) when evicted/expired; holders must not use it after

    def obj_id_for(self, label: str | None, obj_id: int | None, default_labels: tuple[str, ...]) -> tuple[int, str]:
        """The (object id, label name) a request addresses: the one label <-> object mapping.

        Configured labels are objects 1..n in order; other label names get the next free
        id on first use. `obj_id` alone names an object directly; neither -> the first label.
        """
        if not self.label_ids:
            self.label_ids.update({name: n for n, name in enumerate(default_labels, start=1)})
        if obj_id is None:
            label = label or next(iter(self.label_ids))
            if label not in self.label_ids:
                self.label_ids[label] = max(self.label_ids.values()) + 1
            return self.label_ids[label], label
        if label and self.label_ids.get(label, obj_id) != obj_id:
            raise PromptError(f"label {label!r} is object {self.label_ids[label]} in this session, not obj_id "
                              f"{obj_id}; send one of them")
        name = label or next((n for n, i in self.label_ids.items() if i == obj_id), f"object {obj_id}")
        self.label_ids.setdefault(name, obj_id)
        return obj_id, name


class SessionStore:
    """Live sessions by key, LRU-evicted by bytes and expired by idle time (see module docstring)."""

    def __init__(
        self,
        max_bytes: int,
        ttl_s: float,
        sizeof: Callable[[SessionEntry], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_bytes = int(max_bytes)
        self.ttl_s = float(ttl_s)
        self._sizeof = sizeof or (lambda entry: entry.nbytes)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, SessionEntry] = OrderedDict()  # LRU first
        self._gone: OrderedDict[str, tuple[str, str]] = OrderedDict()  # key -> (generation, reason)
        self.evictions = 0
        self.expirations = 0

    # ---- public -------------------------------------------------------------------
    @contextmanager
    def use(self, key: str, expect: str | None = None, create: bool = True) -> Iterator[SessionEntry]:
        """Hold the session `key` (creating an empty one if allowed) for one request.

        `expect`: the generation the client was given; if the live entry has another one
        (or none is live) the session it meant is gone -> SessionGoneError. With
        `create=False` a missing key raises SessionGoneError as well. An entry whose
        volume was never loaded (the request failed before) is dropped on exit.
        """
        while True:
            with self._lock:
                self._expire_locked()
                entry = self._entries.get(key)
                if entry is None or (expect is not None and entry.generation != expect):
                    if expect is not None or not create:
                        raise SessionGoneError(self._gone_message(key, expect))
                    entry = SessionEntry(key=key, last_used=self._clock())
                    self._entries[key] = entry
                    self._gone.pop(key, None)
                self._entries.move_to_end(key)
            entry.lock.acquire()
            if not entry.closed:
                break
            entry.lock.release()  # evicted between lookup and lock: look again
        try:
            yield entry
        finally:
            entry.requests += 1
            entry.last_used = self._clock()
            unloaded = entry.session is None
            if unloaded:
                entry.closed = True
            else:
                entry.nbytes = int(self._sizeof(entry))
            entry.lock.release()
            with self._lock:
                if unloaded and self._entries.get(key) is entry:
                    del self._entries[key]
                self._evict_locked(keep=key)

    def sweep(self) -> int:
        """Drop idle sessions now; returns how many. Safe to call from any thread."""
        with self._lock:
            return self._expire_locked()

    def drop(self, key: str, reason: str = "closed by the client") -> bool:
        """Remove one session if it is not in use; False when absent or busy."""
        with self._lock:
            entry = self._entries.get(key)
            return bool(entry) and self._close_locked(entry, reason)

    def stats(self) -> dict:
        with self._lock:
            return {
                "sessions": len(self._entries),
                "bytes": sum(e.nbytes for e in self._entries.values()),
                "max_bytes": self.max_bytes,
                "evictions": self.evictions,
                "expirations": self.expirations,
            }

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    # ---- internals (registry lock held) ------------------------------------------
    def _close_locked(self, entry: SessionEntry, reason: str) -> bool:
        if not entry.lock.acquire(blocking=False):
            return False  # in use: a request holds it; it is retried on the next pass
        try:
            entry.closed = True
            entry.session = entry.volume = None
        finally:
            entry.lock.release()
        del self._entries[entry.key]
        self._gone[entry.key] = (entry.generation, reason)
        while len(self._gone) > _GONE_MEMORY:
            self._gone.popitem(last=False)
        logger.info("session %s dropped: %s", entry.key, reason)
        return True

    def _expire_locked(self) -> int:
        now = self._clock()
        idle = [e for e in self._entries.values() if now - e.last_used > self.ttl_s]
        dropped = sum(self._close_locked(e, f"expired after {self.ttl_s:g} s idle") for e in idle)
        self.expirations += dropped
        return dropped

    def _evict_locked(self, keep: str) -> None:
        total = sum(e.nbytes for e in self._entries.values())
        for entry in list(self._entries.values()):  # least recently used first
            if total <= self.max_bytes:
                return
            if entry.key == keep:
                continue
            size = entry.nbytes
            reason = f"evicted to keep sessions under {self.max_bytes / 2**20:.0f} MiB (least recently used)"
            if self._close_locked(entry, reason):
                total -= size
                self.evictions += 1
        if total > self.max_bytes:
            logger.warning("sessions hold %.0f MiB > cache bound %.0f MiB (in use or a single large session)",
                           total / 2**20, self.max_bytes / 2**20)

    def _gone_message(self, key: str, expect: str | None) -> str:
        gone = self._gone.get(key)
        if gone and (expect is None or gone[0] == expect):
            why = gone[1]
        elif key in self._entries:
            why = "it was replaced by a newer session on the same key"
        else:
            why = "it does not exist (never created, or forgotten after the server restarted)"
        return (f"session {key!r}{f' ({expect})' if expect else ''} is gone: {why}; "
                "send the full prompt set without medvl_session to start a new one")
