"""`InteractiveService`: one `medvl_interactive` request -> prompts on a cached session -> mask file.

The MONAI Label task (`monailabel_app/lib/infers/interactive.py`) is a thin adapter over
this; the benchmark and tests can drive it without HTTP. One engine instance (the model
weights) is shared by every session; each session binds its own engine state (volume,
embedding cache). Lock order: see `medvl.server.sessions`.

A request carries an object's whole prompt set (`medvl.server.protocol`); `_plan`
compares it with what the session already applied:

- "add": only new prompts -> add them, propagate (one decoder run per new prompt).
- "undo": the last n applied prompts are missing -> `VolumeSession.undo` back to the
  state after the earlier request; propagate only if that state had not propagated yet.
- "replay": anything else (a prompt moved, reset_state, a new axis) -> reset the object,
  re-add every prompt, propagate. Embeddings stay cached (within the engine's cache
  budget), so no slice is encoded twice.
- "none": nothing changed -> the current mask again.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from medvl.errors import PromptError, SessionError
from medvl.io import read_volume
from medvl.server import results
from medvl.server.fair_lock import FairLock
from medvl.server.jobs import JOB_KEY, Job, JobRegistry
from medvl.server.protocol import (AXES, BoxPrompt, InteractiveRequest, PointPrompt, check_in_volume, parse_request,
                                   roi_boxes, session_key)
from medvl.server.sessions import SessionEntry, SessionStore
from medvl.server.settings import ServerSettings

logger = logging.getLogger(__name__)


@dataclass
class Timer:
    """Per-stage wall times of one request (seconds), in the order the stages ran."""

    stages: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0

    def get(self, *names: str) -> float:
        return sum(self.stages.get(n, 0.0) for n in names)


class InteractiveService:
    def __init__(self, settings: ServerSettings, engine=None):
        self.settings = settings
        self.compute_lock = FairLock()  # lock 3 of medvl.server.sessions: engine calls only, least-served first
        self.store = SessionStore(settings.cache_bytes, settings.session_ttl_s, sizeof=_entry_bytes)
        self._engine = engine  # shared by all sessions; built on first use
        self._engine_lock = threading.Lock()
        self.jobs = JobRegistry(settings.max_propagation_s)  # running requests: progress, cancel, work limit

    def engine(self):
        with self._engine_lock:
            if self._engine is None:
                from medvl.engines import get_engine

                options = {"checkpoint": self.settings.checkpoint or None, **self.settings.engine_options()}
                if self.settings.threads:
                    options["threads"] = self.settings.threads
                self._engine = get_engine(self.settings.engine, **options)
            return self._engine

    # ---- the request ---------------------------------------------------------------
    def run(self, params: dict, image_path: str, image_id: str, out_path: str | None,
            monai_session_id: str | None = None) -> tuple[str | None, dict]:
        """Serve one request; writes the mask to `out_path` (extension from the request).

        Returns (written path or None when a crop found nothing changed, JSON dict).
        Raises medvl errors (PromptError, ImageReadError, SessionGoneError, ...) for 4xx.
        """
        timer, t0 = Timer(), time.perf_counter()
        job = self.jobs.claim(params.get(JOB_KEY)) if isinstance(params, dict) else None
        own = job is None  # no /infer route job (batch infer, direct calls): one of our own, for the limit
        job = job or self.jobs.start("medvl_interactive")
        try:
            with timer.stage("parse"):
                request = parse_request(params)
            out = self.serve_mask(request, functools.partial(self._apply, job=job), image_path, image_id, out_path,
                                  monai_session_id, timer, t0)
            stopped = job.stopped_error()
            if stopped is not None:
                raise stopped
        except BaseException as error:
            if own:
                self.jobs.finish(job, error)
            raise
        if own:
            self.jobs.finish(job)
        return out

    def serve_mask(self, request, apply, image_path: str, image_id: str, out_path: str | None,
                   monai_session_id: str | None, timer: "Timer", t0: float) -> tuple[str | None, dict]:
        """The part every mask-producing task shares: session, object, output, crop, file, latencies.

        `request` has `InteractiveRequest`'s session and output fields (client_id,
        expect_session, undo, label, obj_id, crop, output_labels); `apply(entry, request,
        obj_id, label, timer)` changes the object on the held session and returns the JSON
        dict so far (with "axis"); it takes the compute lock for engine work itself.
        """
        with self.held(request, image_path, image_id, monai_session_id, timer) as (entry, key):
            obj_id, label = entry.obj_id_for(request.label, request.obj_id, self.settings.labels)
            with timer.stage("mask"):
                before = self._output(entry, obj_id, request) if request.crop else None
            info = apply(entry, request, obj_id, label, timer)
            with timer.stage("mask"):
                labels = self._output(entry, obj_id, request)
                nonzero = labels.view(bool) if request.output_labels == "object" else labels != 0
                info.update(results.mask_stats(nonzero, entry.volume.geometry.spacing, info["axis"]))
                geometry, crop = entry.volume.geometry, None
                if request.crop:
                    crop = results.changed_crop(before, labels)
                    info["changed"] = crop is not None
                    if crop is not None:
                        offset, labels = crop
                        geometry = results.crop_geometry(geometry, offset)
                        info["crop"] = {"offset_ijk": list(offset), "size_ijk": results.size_ijk(labels)}
            info["label_names"] = self._label_names(entry, info["obj_id"], label, request)
            info["prompt_set"] = prompt_set_json(entry.session, info["obj_id"])
            engine = self.engine()
            info["engine"] = {"name": engine.name, "model": getattr(engine, "label", engine.name)}
            info["session"] = {"key": key, "medvl_session": entry.generation, "requests": entry.requests + 1}
        path = None
        with timer.stage("write"):
            if out_path and (not request.crop or crop is not None):
                path = results.write_labels(out_path, labels, geometry)
        info["latencies"] = latencies(timer, time.perf_counter() - t0)
        if request.ignored:
            info["ignored_params"] = list(request.ignored)
        return path, info

    @contextmanager
    def held(self, request, image_path: str, image_id: str, monai_session_id: str | None, timer: Timer):
        """Hold the request's session (lock 2), its volume loaded; yields (entry, key).

        `request`: client_id, expect_session and undo as in `InteractiveRequest`.
        """
        key = session_key(image_id, request.client_id, monai_session_id)
        wait0 = time.perf_counter()
        with self.store.use(key, expect=request.expect_session, create=not request.undo) as entry:
            timer.stages["wait_session"] = time.perf_counter() - wait0
            if entry.session is None:
                self._load(entry, image_path, timer)
            yield entry, key

    # ---- stages ----------------------------------------------------------------------
    def _load(self, entry: SessionEntry, image_path: str, timer: Timer) -> None:
        from medvl.session import VolumeSession

        with timer.stage("load"):
            volume = read_volume(image_path)
        session = VolumeSession(self.engine())
        with timer.stage("bind"):
            session.set_volume(volume)
        entry.image_path, entry.volume, entry.session = image_path, volume, session
        logger.info("session %s: loaded %s %s", entry.key, image_path, volume.size_ijk)

    def _apply(self, entry: SessionEntry, request: InteractiveRequest, obj_id: int, label: str,
               timer: Timer, job: Job) -> dict:
        roi = check_in_volume(request, entry.volume.size_ijk)
        session = entry.session
        exists = obj_id in session.objects
        applied = session.prompt_log(obj_id)
        if request.undo and len(applied) < request.undo:
            raise SessionError(f"undo {request.undo} on object {obj_id} ({label!r}) but it has {len(applied)} "
                               "prompts; send the remaining prompt set instead")
        # the object's axis: named, else a box's (flat) axis, else the object's so far, else the default
        current = session.object_axis(obj_id) if exists else None
        axis = request.axis or (request.boxes[0].axis if request.boxes else None) or current or \
            self.settings.default_axis
        roi_prompts, clip = roi_boxes(roi, axis, request.roi_mode) if roi is not None else ([], None)
        if not request.axis and not request.boxes and roi_prompts and clip is None:
            axis = roi_prompts[0].axis  # a flat ROI names its slice's axis
        wanted = [*request.boxes, *roi_prompts, *request.points]
        stats0 = session.stats()
        if request.undo:
            action, arg = "undo", request.undo
        elif session.is_whole_mask(obj_id) and (wanted or request.reset):  # prompts replace a text result
            action, arg = "replay", None
        else:
            action, arg = _plan(applied, current, wanted, axis, request.reset)
        calls = _EngineCalls(self.compute_lock, timer)
        if action == "undo":
            calls.run("prompt", session.undo_prompts, obj_id, arg)
        elif action == "replay":
            if exists:
                calls.run("prompt", session.reset, obj_id)
            _add(session, obj_id, axis, wanted, calls, job)
        elif action == "add":
            _add(session, obj_id, axis, arg, calls, job)
        if action in ("add", "replay") and obj_id in session.objects:
            session.set_clip(obj_id, clip)  # an undo keeps the ROI of the state it returns to
        if request.propagate and session.needs_propagation(obj_id):
            _propagate(session, obj_id, calls, job, entry)
        stats1 = session.stats()
        return {
            "obj_id": obj_id, "label": label, "axis": session.object_axis(obj_id) if obj_id in session.objects else axis,
            "action": action, "prompts": len(session.prompt_log(obj_id)),
            "roi_clipped": roi is not None and roi != request.roi,
            "encoder_passes": stats1.get("encoder_passes", 0) - stats0.get("encoder_passes", 0),
            "encoder_passes_total": stats1.get("encoder_passes", 0),
            "decoder_calls": stats1.get("decoder_calls", 0) - stats0.get("decoder_calls", 0),
            "cache_bytes": stats1.get("cache_bytes", 0),
            "engine_seconds": round(timer.get("prompt", "propagate"), 4),
            # the object's quality estimate and named warnings (medvl.session.quality)
            "quality": session.quality(obj_id) if obj_id in session.objects else None,
        }

    def _output(self, entry: SessionEntry, obj_id: int, request) -> np.ndarray:
        """uint8 (k, j, i): the object as 0/1, or every object by id ("all"); ROI clips applied."""
        session = entry.session
        if request.output_labels == "object":
            if obj_id not in session.objects:
                return np.zeros(entry.volume.array.shape, dtype=np.uint8)
            return session.mask(obj_id).view(np.uint8)  # a fresh bool array: 0/1 without a copy
        return session.labels()

    def object_masks(self, entry: SessionEntry, wanted) -> dict[str, np.ndarray]:
        """label -> bool (k, j, i) mask of the session's objects named in `wanted` (obj_ids or
        labels; empty: every object with a mask). Unknown names -> PromptError listing the known."""
        session = entry.session
        names = {oid: next((n for n, i in entry.label_ids.items() if i == oid), f"object {oid}")
                 for oid in session.objects}
        if not wanted:
            return {names[oid]: session.mask(oid) for oid in session.objects}
        out = {}
        for item in wanted:
            oid = entry.label_ids.get(item) if isinstance(item, str) else item
            if oid not in names:
                known = ", ".join(f"{i} ({n})" for i, n in names.items()) or "none yet"
                raise PromptError(f"object {item!r} has no mask in this session (objects: {known}); segment it "
                                  "first with medvl_text or medvl_interactive on the same session")
            out[names[oid]] = session.mask(oid)
        return out

    @staticmethod
    def _label_names(entry: SessionEntry, obj_id: int, label: str, request) -> dict:
        if request.output_labels == "object":
            return {label: 1}
        have = set(entry.session.objects)
        return {name: oid for name, oid in entry.label_ids.items() if oid in have}


# ---- engine calls, all under the compute lock -------------------------------------------
class _EngineCalls:
    def __init__(self, lock: FairLock, timer: Timer):
        self.lock, self.timer = lock, timer

    def run(self, stage: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        with self.lock:
            self.timer.stages["wait_compute"] = self.timer.stages.get("wait_compute", 0.0) + time.perf_counter() - t0
            with self.timer.stage(stage):
                return fn(*args, **kwargs)


def _plan(applied: list, current_axis: str | None, wanted: list, axis: str, reset: bool) -> tuple[str, object]:
    """(action, argument): ("none", None), ("add", new prompts), ("undo", count) or ("replay", None).

    `applied`: the object's prompt log in the session; `current_axis`: its axis (None: no
    object yet). Compared as multisets, since the stock client sends all foreground points
    before all background points whatever order they were clicked in.
    """
    if reset or (current_axis is not None and axis != current_axis):
        return ("replay", None) if (applied or wanted) else ("none", None)
    have, want = Counter(applied), Counter(wanted)
    if have == want:
        return "none", None
    if not have - want:  # every applied prompt still wanted: add the rest, in request order
        extra = want - have
        new = []
        for prompt in wanted:
            if extra[prompt]:
                extra[prompt] -= 1
                new.append(prompt)
        return "add", new
    if Counter(applied[: len(wanted)]) == want:  # the last prompts were removed
        return "undo", len(applied) - len(wanted)
    return "replay", None


def _add(session, obj_id: int, axis: str, prompts: list, calls: _EngineCalls, job: Job) -> None:
    """Apply `prompts` in order; a cancelled (or over-limit) job stops between two prompts, keeping
    those applied (the next request's prompt set adds the rest)."""
    for prompt in prompts:
        if job.should_stop():
            return
        if isinstance(prompt, BoxPrompt):
            calls.run("prompt", session.add_box, prompt.lo, prompt.hi, obj_id=obj_id)
        else:
            calls.run("prompt", session.add_point, prompt.ijk, positive=prompt.positive, obj_id=obj_id, axis=axis)


def _propagate(session, obj_id: int, calls: _EngineCalls, job: Job, entry: SessionEntry) -> None:
    """Propagate the object one slice per compute-lock hold, so other sessions' requests wait at
    most one slice; `job` sees every slice (progress) and can stop the walk (cancel, work limit).
    With a 3D ROI (the object's clip), stop once both directions have left it."""
    axis = session.object_axis(obj_id)
    clip = session.clip(obj_id)
    along = AXES.index(axis)
    lo, hi = (clip[2 * along], clip[2 * along + 1]) if clip else (None, None)
    passed = {"below": False, "above": False}

    def stop() -> bool:
        return job.should_stop() or (clip is not None and passed["below"] and passed["above"])

    volume = entry.volume
    job.begin_propagation(axis, volume.size_ijk[along], obj_id, volume.array.shape, volume.geometry,
                          session.seed_masks(obj_id))
    steps = session.propagate(obj_id=obj_id, should_stop=stop)
    while True:
        t0 = time.perf_counter()
        step = calls.run("propagate", next, steps, None)
        if step is None:
            break
        index, mask = step
        job.add_slice(index, mask, time.perf_counter() - t0)
        if clip is not None:
            passed["below"] |= index < lo
            passed["above"] |= index > hi


def prompt_set_json(session, obj_id: int) -> dict:
    """The object's prompt set as the session holds it, in request form (`foreground`,
    `background`, `boxes`, `axis`), plus `undo_steps` (prompts `undo` can remove) and
    `whole_mask` (a text result): a client shows and resends this instead of keeping its own."""
    log = session.prompt_log(obj_id)
    exists = obj_id in session.objects
    return {
        "foreground": [list(p.ijk) for p in log if isinstance(p, PointPrompt) and p.positive],
        "background": [list(p.ijk) for p in log if isinstance(p, PointPrompt) and not p.positive],
        "boxes": [[list(p.lo), list(p.hi)] for p in log if isinstance(p, BoxPrompt)],
        "axis": session.object_axis(obj_id) if exists else None,
        "undo_steps": len(log),
        "whole_mask": session.is_whole_mask(obj_id),
    }


def latencies(timer: Timer, total: float, infer=("prompt", "propagate", "solve")) -> dict:
    """MONAI Label's latency keys (pre, infer, invert, post, write, total) plus every stage;
    `infer`: the stages that count as inference."""
    r = lambda v: round(v, 4)  # noqa: E731
    return {
        "pre": r(timer.get("parse", "ground", "wait_session", "load", "bind")),
        "infer": r(timer.get(*infer)),
        "invert": 0.0,
        "post": r(timer.get("mask")),
        "write": r(timer.get("write")),
        "total": r(total),
        "transform": None,
        "stages": {k: r(v) for k, v in timer.stages.items()},
    }


def _entry_bytes(entry: SessionEntry) -> int:
    """Bytes one session holds: volume, engine embedding cache, one mask per object."""
    if entry.volume is None or entry.session is None:
        return 0
    voxels = entry.volume.array.size
    cache = entry.session.stats().get("cache_bytes", 0)
    return int(entry.volume.array.nbytes + cache + voxels * (len(entry.session.objects) + 1) + voxels * 4)
