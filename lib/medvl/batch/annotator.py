"""One volume of a batch: read it, make every object, write its outputs into a private folder, publish.

`Annotator` holds the warm engine (the model is loaded once per process and reused for every
volume; each volume gets fresh sessions, so nothing of a finished volume stays in memory).
`Annotator.run(job, out_dir)` never raises for a bad volume: a corrupt or 2D file, a prompt
outside the image, a text that is not understood all end in the volume's `status.json`
(ok / refused / failed, with the reason), and the batch goes on. Only Ctrl-C (abandon this
volume: its private folder is removed, nothing is published) propagates.

Per object: one label value, fixed by the object's position in the prompt list (so a refused
object leaves its label unused rather than shifting the others); where objects overlap the
earlier one keeps the voxel. A DICOM input also gets `labels.seg.dcm` (`medvl.dicom`), one segment
per object, referencing the input series. Object facts (volume, diameters, intensity) come from the
report layer, each on the object's own mask.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import platform
import shutil
import socket
import time
import uuid
from pathlib import Path

import numpy as np

import medvl
from medvl.batch.fingerprint import input_fingerprint, job_hash
from medvl.batch.jobs import BatchSettings, ObjectPrompt, VolumeJob
from medvl.batch.publish import partial_dir, publish, read_status
from medvl.errors import MedVLError, PromptError

log = logging.getLogger(__name__)

FACT_KEYS = ("kind", "location", "side", "voxels", "volume_ml", "long_axis_mm", "short_axis_mm", "axis_slice_k",
             "slice_range_k", "bbox_size_mm", "centroid_lps_mm", "mean", "sd", "unit")


def to_voxel(obj: ObjectPrompt, geometry) -> tuple[tuple | None, list]:
    """The object's box (two corners) and points as integer (i, j, k) of this image."""
    def index(xyz):
        if obj.space == "voxel":
            return tuple(int(round(v)) for v in xyz)
        from medvl.geometry import ras_to_lps

        lps = ras_to_lps(np.asarray([xyz], float))[0] if obj.space == "RAS" else np.asarray(xyz, float)
        return tuple(int(v) for v in geometry.round_index(lps))

    box = None
    if obj.box:
        c0, c1 = list(index(obj.box[:3])), list(index(obj.box[3:]))
        if obj.space != "voxel":  # a physical box is flat on the image axis where its corners are closest
            axis = int(np.argmin([abs(a - b) for a, b in zip(c0, c1)]))
            if abs(c0[axis] - c1[axis]) > 1:
                raise PromptError(f"box {list(obj.box)} ({obj.space}) is not flat on any axis of this image "
                                  f"(voxel corners {c0} and {c1}); give two corners on one slice")
            c0[axis] = c1[axis] = min(c0[axis], c1[axis])
        box = (tuple(c0), tuple(c1))
    points = [(index(p[:3]), bool(p[3])) for p in obj.points]
    return box, points


def _versions(engine) -> dict:
    import torch

    return {"medvl": medvl.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "engine": getattr(engine, "name", type(engine).__name__)}


def _language(settings: BatchSettings) -> dict:
    return settings.vlm.describe()


class Annotator:
    """A warm engine plus the batch settings; `run(job, out_dir)` annotates one volume."""

    def __init__(self, settings: BatchSettings, engine=None, wrap_session=None, language_lock=None):
        """`engine`, `wrap_session` and `language_lock` let a server share its warm engine: sessions are
        wrapped (e.g. engine steps under its compute lock) and text/report work runs under its language lock."""
        self.settings = settings
        self._engine = engine
        self._wrap = wrap_session or (lambda session: session)
        self._language_lock = language_lock or contextlib.nullcontext()

    @property
    def engine(self):
        if self._engine is None:
            from medvl.engines import get_engine

            t0 = time.perf_counter()
            self._engine = get_engine(self.settings.engine, **self.settings.engine_options)
            log.info("engine %s loaded in %.1f s", self.settings.engine, time.perf_counter() - t0)
        return self._engine

    def warm(self) -> "Annotator":
        self.engine  # noqa: B018 - load the model now (a Ray actor's constructor, before any volume)
        if self.settings.vlm.enabled:  # and the VLM: once per worker process (medvl.language.vlm.backend cache)
            from medvl.language.vlm.backend import load_adapter

            load_adapter(self.settings.vlm)
        return self

    # -- one volume -------------------------------------------------------------------
    def run(self, job: VolumeJob, out_dir, fingerprint: dict | None = None) -> dict:
        """Annotate `job` into `out_dir/<case_id>/` (atomically) and return its status dict."""
        out_dir = Path(out_dir)
        t0 = time.perf_counter()
        try:
            fingerprint = fingerprint or input_fingerprint(job.source)
        except OSError:  # missing or unreadable: read_volume below names the problem
            fingerprint = {"files": [], "sha256": None}
        h = job_hash(fingerprint["sha256"], job.to_dict(), self.settings.to_dict())
        final = out_dir / job.case_id
        done = read_status(final)
        if done and done.get("hash") == h and done.get("status") in ("ok", "refused"):
            return dict(done, reused=True)  # a retried task whose first attempt had published: nothing to do
        attempt = uuid.uuid4().hex[:12]
        tmp = partial_dir(out_dir) / f"{job.case_id}.{attempt}"
        tmp.mkdir(parents=True)
        status = {"case_id": job.case_id, "source": job.source, "hash": h, "input": fingerprint,
                  "status": "failed", "reason": "", "objects": [], "outputs": {}, "attempt": attempt,
                  "host": socket.gethostname(), "pid": os.getpid(), "settings": self.settings.to_dict(),
                  "job": job.to_dict()}
        try:
            timings = self._annotate(job, tmp, status)
        except KeyboardInterrupt:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except MedVLError as err:
            status["reason"] = str(err).splitlines()[0] if str(err) else type(err).__name__
            timings = {}
        except Exception as err:  # noqa: BLE001 - one bad volume must not end the batch; its reason is kept
            log.exception("volume %s failed", job.case_id)
            status["reason"] = f"internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            timings = {}
        status["timings_s"] = {k: round(v, 3) for k, v in {**timings, "total": time.perf_counter() - t0}.items()}
        status["versions"] = _versions(self.engine) if self._engine is not None else {"medvl": medvl.__version__}
        status["language"] = _language(self.settings)
        status["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (tmp / "status.json").write_text(json.dumps(status, indent=2, default=str) + "\n")
        result = publish(tmp, final, h)
        gc.collect()
        return dict(read_status(final) or status, published=result)

    def _annotate(self, job: VolumeJob, tmp: Path, status: dict) -> dict:
        from medvl.io import read_volume, write_mask
        from medvl.language.report import build_report, write_report

        s = self.settings
        t = {}
        t0 = time.perf_counter()
        volume = read_volume(job.source, job.modality, job.series)
        t["read"] = time.perf_counter() - t0
        status["image"] = {"modality": volume.modality, "modality_source": volume.meta.get("modality_source"),
                           "size_ijk": list(volume.size_ijk),
                           "spacing_mm": [round(float(v), 4) for v in volume.geometry.spacing]}
        objects = list(job.objects) + list(s.objects)
        if not objects and not s.report:
            raise PromptError("no prompts for this volume: give --text, --prompts, --report or objects in the "
                              "manifest row")
        rows, masks, kinds = [], {}, {}
        t1 = time.perf_counter()
        for label, obj in enumerate(objects, start=1):
            row = {"label": label, "name": obj.name, "prompt": obj.text or ("box" if obj.box else "points"),
                   "status": "ok", "reason": ""}
            t2 = time.perf_counter()
            try:
                mask, kind, info = self._object(volume, obj)
                if not mask.any():
                    raise PromptError("the prompt gave an empty mask")
                masks[obj.name], row["method"] = mask, info
                if kind:
                    kinds[obj.name] = kind
            except MedVLError as err:
                from medvl.language.errors import NotUnderstoodError, SolverError

                row["status"] = "refused" if isinstance(err, (NotUnderstoodError, SolverError)) else "failed"
                row["reason"] = str(err).splitlines()[0]
            row["seconds"] = round(time.perf_counter() - t2, 3)
            rows.append(row)
        t["objects"] = time.perf_counter() - t1
        t3 = time.perf_counter()
        report = None
        if masks or s.report:
            with self._language_lock:
                report = build_report(volume, masks, session=self._solver_session() if not masks else None,
                                      narrator=s.narrator, settings=self.solve_settings(), kinds=kinds)
            if not objects:  # the report's own objects (e.g. lungs and nodule on a CT) become the labels
                for label, o in enumerate(report.objects, start=1):
                    masks[o.name] = report.masks[o.name]
                    rows.append({"label": label, "name": o.name, "prompt": o.source, "status": "ok", "reason": ""})
            facts = {o.name: o for o in report.objects}
            for row in rows:
                o = facts.get(row["name"])
                if o is not None:
                    row["facts"] = {k: getattr(o, k) for k in FACT_KEYS}
        t["report"] = time.perf_counter() - t3
        t4 = time.perf_counter()
        labels = np.zeros(volume.array.shape, np.uint8)
        for row in rows:
            if row["name"] in masks:
                labels[masks[row["name"]] & (labels == 0)] = row["label"]
        label_file = f"labels{s.label_format}"
        write_mask(tmp / label_file, labels, like=volume)
        status["outputs"] = {"labels": label_file}
        if volume.meta.get("dicom_files") and labels.any():  # a DICOM input: the label map as DICOM SEG too
            status["outputs"]["dicom_seg"] = self._write_seg(tmp / "labels.seg.dcm", labels, volume, rows, kinds)
        if s.report and report is not None:
            paths = write_report(report, volume, tmp)
            status["outputs"].update({k: p.name for k, p in paths.items()})
            status["report_notes"] = report.notes
        t["write"] = time.perf_counter() - t4
        status["objects"] = rows
        ok = [r for r in rows if r["status"] == "ok"]
        if ok or (s.report and not objects):
            status["status"] = "ok"
        else:
            status["status"] = "refused" if all(r["status"] == "refused" for r in rows) else "failed"
            status["reason"] = "; ".join(f"{r['name']}: {r['reason']}" for r in rows)[:2000]
        return t

    def _write_seg(self, path: Path, labels: np.ndarray, volume, rows: list, kinds: dict) -> str:
        """labels.seg.dcm: one segment per object that has voxels, referencing the input series."""
        from medvl.dicom.export import write_labels_seg
        from medvl.dicom.seg import AlgorithmInfo

        engine = self.settings.engine
        model = getattr(self._engine, "label", engine) if self._engine is not None else engine
        names = {row["label"]: row["name"] for row in rows}
        write_labels_seg(path, labels, volume, names, AlgorithmInfo(engine, model, interactive=False), kinds)
        return path.name

    def solve_settings(self):
        """The text solvers' settings: `refine` when given, else SolveSettings' shared default."""
        from medvl.language.solvers import SolveSettings

        vlm = self.settings.vlm
        return SolveSettings(refine=self.settings.refine, vlm=vlm) if self.settings.refine else SolveSettings(vlm=vlm)

    def _solver_session(self):
        """A session of the warm engine for the text solvers' refinement (None when they refine by HU only)."""
        from medvl.session import VolumeSession

        return self._wrap(VolumeSession(self.engine)) if self.solve_settings().needs_session else None

    def _concept(self, volume, obj: ObjectPrompt):
        """A text on a concept engine (sam3): its own concept model finds every instance; in a batch label
        map they share the object's label, and `method` lists them. None found: refused, with the reason."""
        from medvl.engines.sam3.concept import add_concept
        from medvl.language.errors import NotFoundError
        from medvl.session import VolumeSession

        session = self._wrap(VolumeSession(self.engine))
        session.set_volume(volume)
        found = add_concept(session, obj.text)
        if not found:
            raise NotFoundError(f"{obj.text!r}: the {self.settings.engine} concept model found no instance in "
                                f"{volume.name or 'the image'}")
        mask = np.zeros(volume.array.shape, bool)
        for oid, _ in found:
            mask |= session.mask(oid) > 0
        return mask, None, {"method": f"{self.settings.engine} concept", "instances": [
            {"score": round(inst.score, 4), "slices": [inst.slices[0], inst.slices[-1]], "voxels": int(inst.mask.sum())}
            for _, inst in found]}

    def _object(self, volume, obj: ObjectPrompt):
        """-> (bool (k, j, i) mask, kind or None, method info)."""
        if obj.text and getattr(self.engine, "concepts", False):
            return self._concept(volume, obj)
        if obj.text:
            from medvl.language.grounding import ground_for_volume
            from medvl.language.solvers import solve
            with self._language_lock:
                g = ground_for_volume(obj.text, volume).require()
                res = solve(volume, g, self._solver_session(), self.solve_settings())
            kind = "lesion" if g.concept.kind == "lesion" else "anatomy"
            return res.mask, kind, {"concept": res.concept, "method": res.info.get("method")}
        from medvl.session import VolumeSession

        box, points = to_voxel(obj, volume.geometry)
        session = self._wrap(VolumeSession(self.engine))
        session.set_volume(volume)
        if box:
            session.add_box(*box)
        for ijk, positive in points:
            session.add_point(ijk, positive=positive)
        session.run_propagation()
        q = session.quality(1)
        return session.mask(1) > 0, None, {"quality": q.get("estimate"), "warnings": [w["name"] for w in q["warnings"]]}
