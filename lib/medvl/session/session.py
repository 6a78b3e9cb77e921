"""`VolumeSession`: point/box prompts on any slice -> 3D masks by propagation.

Lifecycle (as nnInteractive's session): `set_volume`, then prompts (`add_point`,
`add_box`) that each return the prompted slice's mask at once, `propagate()` to fill
the other slices (a generator: show progress, cancel by `should_stop`), corrections by
more prompts and `propagate()` again, `undo`, `reset`. Several objects by `obj_id`; `set_mask` makes (or
replaces) an object from a whole 3D mask (a text-grounded result), undoable like a prompt.

The session is the one owner of each object's state: its prompts as given (`prompt_log`,
what a server diffs a request against), its undo history, its clip region and masks.

Prompts are ITK voxel indices (i, j, k) of the session's volume; results are numpy
(k, j, i) arrays in the volume's own grid (same geometry, nothing resampled).
"""

from __future__ import annotations

import logging
import time
from typing import Iterator

import numpy as np

from medvl.engines import get_engine
from medvl.engines.base import Engine, SlicePrompt
from medvl.errors import PromptError, SessionError
from medvl.session.state import (MASK, PROMPT, PROPAGATION, BoxPrompt, ObjectState, PointPrompt, Prompt,
                                 PromptResult)
from medvl.session.quality import QualitySettings, assess
from medvl.slicing import check_axis, index_to_slice_xy, num_slices, put_slice, take_slice
from medvl.volume import Volume

log = logging.getLogger(__name__)


class VolumeSession:
    def __init__(self, engine: Engine | str = "litemedsam", **engine_options):
        self.engine: Engine = get_engine(engine, **engine_options) if isinstance(engine, str) else engine
        self.volume: Volume | None = None  # the image every prompt refers to
        self._objects: dict[int, ObjectState] = {}  # obj_id -> its prompts, masks, history
        self._bound: dict[str, object] = {}  # axis -> engine state, shared by all objects on that axis
        self._order: list[int] = []  # obj ids in the order of their prompts, for undo without obj_id
        self.quality_settings = QualitySettings()  # how `quality()` calibrates and warns

    # -- volume ---------------------------------------------------------------------
    def set_volume(self, volume: Volume) -> None:
        """Start over on `volume`: drops every object and cached embedding."""
        if volume.array.ndim != 3:
            raise SessionError(f"volume must be 3D (k, j, i), got shape {volume.array.shape}")
        self.volume = volume
        self._objects.clear()
        self._bound.clear()
        self._order.clear()

    def _require_volume(self) -> Volume:
        if self.volume is None:
            raise SessionError("no volume: call set_volume(volume) before prompting")
        return self.volume

    def engine_state(self, axis: str):
        """The engine's bound state for the volume along `axis` (benchmarks drive the engine with it)."""
        return self._engine_state(axis)

    def _engine_state(self, axis: str):
        if axis not in self._bound:
            self._bound[axis] = self.engine.bind(self._require_volume(), axis)
        return self._bound[axis]

    def _object(self, obj_id: int, axis: str) -> ObjectState:
        if not 1 <= int(obj_id) <= 255:
            raise PromptError(f"obj_id {obj_id} must be between 1 and 255 (it becomes a uint8 label value)")
        obj = self._objects.get(obj_id)
        if obj is None:
            obj = self._objects[obj_id] = ObjectState(obj_id, axis, self._engine_state(axis))
        elif obj.axis != axis:
            raise PromptError(f"object {obj_id} is prompted along axis {obj.axis}, not {axis}: "
                              f"use another obj_id or reset({obj_id}) first")
        return obj

    # -- prompts --------------------------------------------------------------------
    def _check_index(self, ijk, what: str) -> tuple[int, int, int]:
        vol = self._require_volume()
        try:
            ijk = tuple(int(round(float(v))) for v in ijk)
        except (TypeError, ValueError):
            raise PromptError(f"{what} {ijk!r} is not three numbers i,j,k") from None
        if len(ijk) != 3:
            raise PromptError(f"{what} {ijk!r} must have three coordinates i,j,k")
        if not vol.contains_index(ijk):
            raise PromptError(f"{what} {ijk} is outside the volume of size {vol.size_ijk} (i,j,k)")
        return ijk

    def add_point(self, ijk, positive: bool = True, obj_id: int = 1, axis: str = "k") -> PromptResult:
        """Foreground (or background) click at voxel (i, j, k) on the slice through it along `axis`."""
        ijk = self._check_index(ijk, "point")
        index, xy = index_to_slice_xy(ijk, check_axis(axis))
        return self._prompt(obj_id, axis, index, lambda p: (p.points.append(xy), p.labels.append(int(positive))),
                            PointPrompt(ijk, bool(positive)), defines=bool(positive))

    def add_box(self, corner0, corner1, obj_id: int = 1) -> PromptResult:
        """Box from two opposite inclusive corners (i, j, k) that agree on exactly one axis."""
        c0, c1 = self._check_index(corner0, "box corner"), self._check_index(corner1, "box corner")
        flat = [n for n in range(3) if c0[n] == c1[n]]
        if len(flat) != 1:
            raise PromptError(f"box {c0}-{c1} must be flat on exactly one axis (one of i, j, k equal), "
                              f"it is flat on {len(flat)}")
        axis = "ijk"[flat[0]]
        index, a = index_to_slice_xy(c0, axis)
        _, b = index_to_slice_xy(c1, axis)
        box = (min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1]))
        given = BoxPrompt(tuple(map(min, c0, c1)), tuple(map(max, c0, c1)))
        return self._prompt(obj_id, axis, index, lambda p: p.boxes.append(box), given, defines=True)

    @property
    def _local(self) -> bool:
        """True when the engine edits a propagated result locally (`Engine.local_corrections`)."""
        return bool(getattr(self.engine, "local_corrections", False))

    def _prompt(self, obj_id: int, axis: str, index: int, edit, given: Prompt, defines: bool) -> PromptResult:
        """Apply one prompt; `defines`: it can make an object by itself (a box or a foreground click)."""
        t0 = time.perf_counter()
        obj = self._object(obj_id, axis)
        if (self._local and not defines and obj.fixed is None and index not in obj.prompts
                and index not in obj.propagated and self.needs_propagation(obj_id)):
            self.run_propagation(obj_id)  # a background click corrects the result the user saw: make it
        snap = obj.snapshot(PROMPT)
        if obj.fixed is not None:  # prompts replace a whole-mask (text) result
            obj.prompts, obj.seeds, obj.propagated, obj.log, obj.fixed = {}, {}, {}, [], None
            obj.scores, obj.last_seeds = {}, {}
        prompt = obj.prompts.get(index)
        if prompt is None:
            prompt = obj.prompts[index] = SlicePrompt()
        if self._local:  # a click corrects the slice's current mask; a box starts the slice afresh
            if isinstance(given, BoxPrompt):
                prompt.prior = None
            elif index in obj.seeds:
                prompt.prior = obj.seeds[index]
            elif obj.seeds or obj.propagated:
                rows_cols = take_slice(self._require_volume().array, axis, index).shape
                prompt.prior = obj.propagated.get(index, np.zeros(rows_cols, dtype=bool))
        edit(prompt)
        obj.log.append(given)
        try:
            result = self.engine.segment_slice(obj.engine_state, index, prompt, obj_id=obj_id)
        except Exception:
            obj.restore(snap)  # a refused prompt leaves the object as it was
            if not obj.prompts and not obj.history:
                del self._objects[obj_id]  # ... or not there at all, if it was its first prompt
            raise
        obj.history.append(snap)
        obj.seeds[index] = result.mask
        obj.scores[index] = float(result.score)
        obj.propagated.pop(index, None)
        self._order.append(obj_id)
        return PromptResult(obj_id, axis, index, result.mask, result.score, time.perf_counter() - t0)

    # -- propagation ------------------------------------------------------------------
    def propagate(self, obj_id: int | None = None, should_stop=None) -> Iterator[tuple[int, np.ndarray]]:
        """Fill the unprompted slices of one object (or all objects) from its prompted slices.

        A generator of `(slice_index, mask2d)` along the object's axis, in both directions,
        ending where the object ends. Earlier propagated masks of the object are replaced;
        cancelling (`should_stop()` True) keeps what was yielded so far.
        """
        ids = [obj_id] if obj_id is not None else sorted(self._objects)
        for oid in ids:
            obj = self._get(oid)
            if obj.fixed is not None:
                continue  # a whole-mask result has nothing to propagate
            obj.history.append(obj.snapshot(PROPAGATION))
            self._order.append(oid)
            extra = {}
            if self._local:
                extra = {"previous": obj.previous_result(), "scores": obj.scores}
            obj.propagated, obj.last_seeds = {}, dict(obj.seeds)
            for index, mask in self.engine.propagate(obj.engine_state, dict(obj.seeds), dict(obj.prompts),
                                                     should_stop, obj_id=oid, **extra):
                if index in obj.seeds:
                    continue
                obj.propagated[index] = mask
                yield index, mask

    def set_mask(self, obj_id: int, mask: np.ndarray, axis: str = "k") -> None:
        """Make object `obj_id` the bool (k, j, i) `mask` as a whole (e.g. a text-grounded result).

        Replaces the object's prompts and masks; `undo` brings them back. A later prompt on
        the object replaces this mask. `axis`: the object's axis if it is new.
        """
        vol = self._require_volume()
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != vol.array.shape:
            raise PromptError(f"mask of shape {mask.shape} does not match the volume's (k, j, i) {vol.array.shape}")
        obj = self._objects.get(obj_id) or self._object(obj_id, axis)
        obj.history.append(obj.snapshot(MASK))
        obj.prompts, obj.seeds, obj.propagated, obj.log, obj.clip = {}, {}, {}, [], None
        obj.scores, obj.last_seeds = {}, {}
        obj.fixed = mask.copy()
        self.engine.forget(obj.engine_state, obj_id)
        self._order.append(obj_id)

    def set_clip(self, obj_id: int, clip: tuple[int, int, int, int, int, int] | None) -> None:
        """Limit the object's mask to the ITK inclusive region (i0, i1, j0, j1, k0, k1) (a 3D ROI);
        None: no limit. Not a step of its own: undoing the step before brings the earlier clip back."""
        self._get(obj_id).clip = None if clip is None else tuple(int(v) for v in clip)

    def run_propagation(self, obj_id: int | None = None, should_stop=None) -> int:
        """Propagate to the end; returns the number of slices filled."""
        return sum(1 for _ in self.propagate(obj_id, should_stop))

    # -- undo / reset -----------------------------------------------------------------
    def _get(self, obj_id: int) -> ObjectState:
        if obj_id not in self._objects:
            known = ", ".join(map(str, sorted(self._objects))) or "none"
            raise SessionError(f"unknown obj_id {obj_id} (objects: {known})")
        return self._objects[obj_id]

    def undo(self, obj_id: int | None = None) -> None:
        """Revert the last prompt or propagation (of `obj_id`, or of any object)."""
        if obj_id is None:
            if not self._order:
                raise SessionError("nothing to undo")
            obj_id = self._order[-1]
        obj = self._get(obj_id)
        if not obj.history:
            raise SessionError(f"nothing to undo for object {obj_id}")
        obj.restore(obj.history.pop())
        self.engine.forget(obj.engine_state, obj_id)  # engine memory no longer matches the object
        for n in range(len(self._order) - 1, -1, -1):
            if self._order[n] == obj_id:
                del self._order[n]
                break
        if not obj.prompts and not obj.history:
            del self._objects[obj_id]

    def undo_prompts(self, obj_id: int, count: int) -> None:
        """Revert the object's last `count` prompts and every step after them."""
        obj = self._get(obj_id)
        if count > len(obj.log):
            raise SessionError(f"undo {count} prompts on object {obj_id} but it has {len(obj.log)}; "
                               "send the remaining prompt set instead")
        popped = 0
        while popped < count:
            popped += obj.history[-1].kind == PROMPT
            self.undo(obj_id)

    def reset(self, obj_id: int | None = None) -> None:
        """Forget one object (or all); cached embeddings stay, so new prompts are cheap."""
        for oid in ([obj_id] if obj_id is not None else list(self._objects)):
            obj = self._get(oid)
            self.engine.forget(obj.engine_state, oid)
            del self._objects[oid]
        if obj_id is None:
            self._order.clear()
        else:
            self._order = [o for o in self._order if o != obj_id]

    # -- results ----------------------------------------------------------------------
    @property
    def objects(self) -> list[int]:
        return sorted(self._objects)

    def object_axis(self, obj_id: int) -> str:
        return self._get(obj_id).axis

    def prompt_log(self, obj_id: int) -> list[Prompt]:
        """The object's prompts as given (ITK indices), in the order applied; [] for an unknown object."""
        obj = self._objects.get(obj_id)
        return list(obj.log) if obj else []

    def is_whole_mask(self, obj_id: int) -> bool:
        """True when the object is a mask set whole (`set_mask`), not made from prompts."""
        obj = self._objects.get(obj_id)
        return obj is not None and obj.fixed is not None

    def needs_propagation(self, obj_id: int) -> bool:
        """True when the object's last step was a prompt (its other slices are stale)."""
        obj = self._objects.get(obj_id)
        return bool(obj and obj.fixed is None and obj.history and obj.history[-1].kind == PROMPT)

    def clip(self, obj_id: int) -> tuple[int, int, int, int, int, int] | None:
        """The object's clip region (ITK inclusive i0, i1, j0, j1, k0, k1), or None."""
        return self._get(obj_id).clip

    def seed_masks(self, obj_id: int) -> dict[int, np.ndarray]:
        """Prompted slice index -> its 2D mask (the masks propagation starts from)."""
        return dict(self._get(obj_id).seeds)

    def mask(self, obj_id: int) -> np.ndarray:
        """bool (k, j, i) 3D mask of one object."""
        obj = self._get(obj_id)
        if obj.fixed is not None:
            out = obj.fixed.copy()
        else:
            out = np.zeros(self._require_volume().array.shape, dtype=bool)
            for index, m in obj.slice_masks().items():
                put_slice(out, obj.axis, index, m)
        if obj.clip is not None:
            i0, i1, j0, j1, k0, k1 = obj.clip
            inside = np.zeros_like(out)
            inside[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1] = True
            out &= inside
        return out

    def quality(self, obj_id: int, settings: QualitySettings | None = None) -> dict:
        """The object's quality estimate and warnings (`medvl.session.quality.assess`)."""
        obj = self._get(obj_id)
        shape = self._require_volume().array.shape
        if obj.fixed is not None:
            masks = {i: take_slice(obj.fixed, obj.axis, i) for i in range(num_slices(shape, obj.axis))}
        else:
            masks = obj.slice_masks()
        return assess(masks, obj.scores, shape, obj.axis, settings or self.quality_settings)

    def labels(self) -> np.ndarray:
        """uint8 (k, j, i): 0 background, else the obj_id (a higher id wins where objects overlap)."""
        out = np.zeros(self._require_volume().array.shape, dtype=np.uint8)
        for oid in self.objects:
            out[self.mask(oid)] = oid
        return out

    def stats(self) -> dict:
        """Engine counters summed over the bound axes (encoder passes, cache bytes, seconds)."""
        total: dict = {}
        for state in self._bound.values():
            for key, value in self.engine.stats(state).items():
                total[key] = total.get(key, 0) + value
        return total
