"""medvl.server.sessions: keys, LRU eviction by bytes, expiry, in-use protection, clear 'gone' errors."""

import threading

import pytest

from medvl.errors import PromptError
from medvl.server.sessions import SessionEntry, SessionGoneError, SessionStore


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def touch(store, key, nbytes, expect=None):
    """One request on `key` that leaves the session holding `nbytes`; returns its generation."""
    with store.use(key, expect=expect) as entry:
        entry.session = entry.session or object()
        entry.nbytes = nbytes
        return entry.generation


def test_lru_eviction_by_bytes_keeps_recent_and_current():
    store = SessionStore(max_bytes=100, ttl_s=60)
    gen_a = touch(store, "a", 40)
    touch(store, "b", 40)
    touch(store, "a", 40)  # a is now more recent than b
    touch(store, "c", 40)
    assert store.keys() == ["a", "c"] and store.evictions == 1
    with pytest.raises(SessionGoneError, match="'b'.*evicted to keep sessions under"):
        with store.use("b", create=False):
            pass
    assert touch(store, "a", 40, expect=gen_a) == gen_a


def test_single_session_larger_than_bound_is_kept():
    store = SessionStore(max_bytes=10, ttl_s=60)
    touch(store, "big", 50)
    assert store.keys() == ["big"]


def test_session_in_use_is_not_evicted():
    store = SessionStore(max_bytes=100, ttl_s=60)
    touch(store, "a", 60)
    inside, release = threading.Event(), threading.Event()

    def hold():
        with store.use("a"):
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    inside.wait(10)
    touch(store, "b", 60)  # over the bound, but a is busy: nothing evicted
    assert sorted(store.keys()) == ["a", "b"]
    release.set()
    thread.join()
    assert store.keys() == ["a"]  # a's request ends: over the bound again, the other one goes


def test_idle_sessions_expire_and_say_so():
    clock = Clock()
    store = SessionStore(max_bytes=1000, ttl_s=30, clock=clock)
    gen = touch(store, "a", 10)
    clock.now = 31
    assert store.sweep() == 1 and store.keys() == []
    with pytest.raises(SessionGoneError, match="expired after 30 s idle"):
        touch(store, "a", 10, expect=gen)
    touch(store, "a", 10)  # without expect: a new session on the same key
    assert store.keys() == ["a"]


def test_unknown_generation_and_failed_load():
    store = SessionStore(max_bytes=1000, ttl_s=30)
    with pytest.raises(SessionGoneError, match="does not exist"):
        touch(store, "x", 1, expect="nope")
    with pytest.raises(RuntimeError):
        with store.use("y"):
            raise RuntimeError("volume unreadable")
    assert store.keys() == []  # an entry that never loaded is not kept


def test_label_to_object_mapping_is_per_session():
    entry = SessionEntry("k")
    labels = ("liver", "spleen")
    assert entry.obj_id_for(None, None, labels) == (1, "liver")
    assert entry.obj_id_for("spleen", None, labels) == (2, "spleen")
    assert entry.obj_id_for("tumour", None, labels) == (3, "tumour")
    assert entry.obj_id_for(None, 7, labels) == (7, "object 7")
    assert entry.obj_id_for("liver", 1, labels) == (1, "liver")
    with pytest.raises(PromptError, match="'liver' is object 1"):
        entry.obj_id_for("liver", 2, labels)
