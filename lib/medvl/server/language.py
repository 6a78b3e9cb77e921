"""`LanguageService`: the `medvl_text`, `medvl_report` and `medvl_vqa` requests on the sessions
of `InteractiveService`.

Thin by design: grounding, solvers, report facts, narrative and answers are
`medvl.language`'s (`ground`, `solve`, `build_report` / `write_report`, `answer`); this module
maps requests (`medvl.server.protocol.parse_language_request`) onto sessions and objects.

- text: the prompt is checked first, so text with a word no concept covers is answered 400
  with the nearest concepts before any session is created; then it is grounded among the
  concepts that apply to the session's volume (its modality, or the request's `modality`
  override, and the inferred body region: a concept of another modality/region is a 400
  "not applicable") and solved on that volume.
  The mask becomes the object (`VolumeSession.set_mask`, undoable) and goes out through
  `InteractiveService.serve_mask` like a click's answer (file in the image geometry, crop,
  voxels, volume_ml, latencies). Later clicks on that object replace it.
- report: the masks of the session's objects (text or interactive results) plus any text
  prompts -> `build_report` -> `write_report` into `<report_dir>/<report id>/`; the JSON
  part carries the markdown and the facts, and `files` holds the GET URLs
  (`REPORT_ROUTE`, served by `medvl.server.asgi`) of report.json, report.md, overview.png;
  with `dicom_sr` also report.sr.dcm and report.seg.dcm (`medvl.server.dicom_output`: the
  image must be backed by a DICOM series, checked before any work).
- vqa: `answer(volume, question, masks)` with the masks of the named session objects.

Every reply names the language backend under "language" (`VLMConfig.describe()`: offline, or
the VLM's family, model and device), as mask replies name the engine. With `--conf vlm DIR`
the settings carry the checked `VLMConfig` into `SolveSettings.vlm`: text is grounded by the
VLM's box and the engine, reports are phrased and answers given by the VLM, number-checked.
The model is loaded on the first language request and kept for the process.

Locks (`medvl.server.sessions`): a request holds its session's lock throughout; every
language-layer call runs under the language lock (`LanguageService.language_lock`, taken
after the session lock), because the layer's process-wide caches (sentence encoder,
`anatomy_for`, nodule candidates) are not thread-safe. With `refine` "engine" or "auto" the
nodule solver refines by the client's own engine session, so it shares the embedding cache
with the client's clicks; it gets that session as a `StepLockedSession`, so each engine
step takes the compute lock on its own and clicks on other sessions wait for one step at
most, not for the whole solve. A text request uses the object it addresses; report and vqa
use a free object id and forget it afterwards.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

from medvl.server.interactive import InteractiveService, Timer, latencies
from medvl.server.locked_session import StepLockedSession
from medvl.server.protocol import DICOM_SR, LanguageRequest, parse_language_request
from medvl.server.sessions import SessionEntry

logger = logging.getLogger(__name__)

REPORT_ROUTE = "/medvl/report/{report_id}/{name}"  # GET: one file of a medvl_report answer
REPORT_FILES = {"json": "report.json", "md": "report.md", "overview": "overview.png"}
DICOM_FILES = {"sr": "report.sr.dcm", "seg": "report.seg.dcm"}  # with `dicom_sr` (medvl.server.dicom_output)
_REPORT_ID = re.compile(r"^[0-9a-f]{12}$")


class LanguageService:
    def __init__(self, service: InteractiveService):
        self.service = service  # sessions, compute lock, engine, mask output: shared with medvl_interactive
        self.settings = service.settings
        self._report_root: Path | None = None  # created on the first report
        self._report_lock = threading.Lock()  # guards `_report_root` creation and pruning (no other lock inside)
        self.language_lock = threading.Lock()  # the language layer's caches: one language call at a time

    # ---- medvl_text ----------------------------------------------------------------------
    def text(self, params: dict, image_path: str, image_id: str, out_path: str | None,
             monai_session_id: str | None = None) -> tuple[str | None, dict]:
        """Text prompt -> the object's mask written to `out_path`; (path, JSON dict)."""
        from medvl.server.concept import concept_text, is_concept_engine

        if is_concept_engine(self.settings.engine):  # sam3: its concept model, every instance an object
            engine = self.service.engine()
            language = {"backend": engine.name, "model": getattr(engine, "label", engine.name)}
            return concept_text(self.service, language, params, image_path, image_id, out_path, monai_session_id)
        timer, t0 = Timer(), time.perf_counter()
        with timer.stage("parse"):
            request = parse_language_request(params, "text")
        with timer.stage("ground"):
            self._locked(_precheck, request.texts[0], request.modality, timer=timer)  # 400 before any session
        with self.service.held(request, image_path, image_id, monai_session_id, timer) as (entry, _key):
            with timer.stage("ground_in_context"):
                grounding = self._locked(_ground, request.texts[0], _volume(entry, request), timer=timer)
        if request.label is None and request.obj_id is None:  # the object is named after the concept
            request = replace(request, label=grounding.concept.name)

        def apply(entry: SessionEntry, request: LanguageRequest, obj_id: int, label: str, timer: Timer) -> dict:
            from medvl.language import SolveSettings, solve

            settings = SolveSettings(refine=self._refine(request), obj_id=obj_id, vlm=self.settings.language)
            session = self._engine_session(entry) if settings.needs_session else None
            stats0 = entry.session.stats()

            def run():
                result = solve(_volume(entry, request), grounding, session, settings)  # "engine"/"auto": obj_id
                entry.session.set_mask(obj_id, result.mask)  # the text result becomes the object (undoable)
                return result

            with timer.stage("solve"):
                result = self._locked(run, timer=timer)
            stats1 = entry.session.stats()
            return {
                "obj_id": obj_id, "label": label, "axis": "k", "action": "text", "text": request.texts[0],
                "understood_as": grounding.message(), "grounding": grounding.as_dict(),
                "solver": {k: v for k, v in result.info.items() if k != "grounding"},
                "encoder_passes": stats1.get("encoder_passes", 0) - stats0.get("encoder_passes", 0),
                "engine_seconds": round(timer.get("solve"), 4), "language": self.settings.language.describe(),
            }

        return self.service.serve_mask(request, apply, image_path, image_id, out_path, monai_session_id, timer, t0)

    # ---- medvl_report --------------------------------------------------------------------
    def report(self, params: dict, image_path: str, image_id: str,
               monai_session_id: str | None = None, datastore=None) -> tuple[None, dict]:
        """Report on the session's objects and text prompts; files under the report folder.
        `datastore` (MONAI Label's) resolves a `dicom_sr` that names a datastore image."""
        from medvl.language import SolveSettings, build_report, write_report

        timer, t0 = Timer(), time.perf_counter()
        with timer.stage("parse"):
            request = parse_language_request(params, "report")
            series_dir = None  # the DICOM series the SR references (400 before any work when there is none)
            if request.dicom_sr:
                series_dir = _series_dir(params.get(DICOM_SR), image_path, image_id, datastore)
        with self.service.held(request, image_path, image_id, monai_session_id, timer) as (entry, key):
            masks = self._masks(entry, request, timer)
            scratch = _free_obj_id(entry)
            settings = SolveSettings(refine=self._refine(request), obj_id=scratch, vlm=self.settings.language)
            session = self._engine_session(entry) if settings.needs_session else None
            with timer.stage("solve"):
                report = self._locked(_forgetting(entry, scratch, build_report), _volume(entry, request), masks,
                                      texts=request.texts, session=session, narrator=request.narrator or None,
                                      settings=settings, timer=timer)
            report_id = uuid.uuid4().hex[:12]
            with timer.stage("write"):
                write_report(report, _volume(entry, request), self._report_folder(report_id))  # files only: no lock
                self._prune()
            kinds = dict(REPORT_FILES)
            if series_dir is not None:
                with timer.stage("dicom_sr"):
                    self._write_sr(report, entry.volume, series_dir, report_id)
                kinds.update(DICOM_FILES)
            info = {
                "report": report.to_markdown(), "report_json": report.to_dict(), "report_id": report_id,
                "files": {kind: REPORT_ROUTE.format(report_id=report_id, name=name) for kind, name in kinds.items()},
                "objects": sorted(masks), "session": self._session_info(entry, key), "language": report.language,
            }
        info["latencies"] = latencies(timer, time.perf_counter() - t0)
        return None, _ignored(info, request)

    def report_file(self, report_id: str, name: str) -> Path | None:
        """The path of one file of a kept report, or None (unknown id or name, or pruned)."""
        known = (*REPORT_FILES.values(), *DICOM_FILES.values())
        if self._report_root is None or not _REPORT_ID.match(report_id) or name not in known:
            return None
        path = self._report_root / report_id / name
        return path if path.is_file() else None

    def _write_sr(self, report, volume, series_dir: str, report_id: str) -> None:
        """report.sr.dcm + report.seg.dcm in the report's folder, referencing the image's DICOM series."""
        from medvl.dicom.seg import AlgorithmInfo
        from medvl.server.dicom_output import write_report_sr

        refine = self.settings.text_refine
        engine = self.service.engine() if refine != "hu" else None
        algorithm = AlgorithmInfo(engine.name if engine else "hu", getattr(engine, "label", "") if engine else "",
                                  interactive=False)
        write_report_sr(report, volume, series_dir, self._report_folder(report_id), algorithm)

    # ---- medvl_vqa -----------------------------------------------------------------------
    def vqa(self, params: dict, image_path: str, image_id: str,
            monai_session_id: str | None = None) -> tuple[None, dict]:
        """Answer a question about the image (and the named session objects) from facts."""
        from medvl.language import SolveSettings, answer

        timer, t0 = Timer(), time.perf_counter()
        with timer.stage("parse"):
            request = parse_language_request(params, "vqa")
        with self.service.held(request, image_path, image_id, monai_session_id, timer) as (entry, key):
            masks = self._masks(entry, request, timer) if request.objects else {}
            scratch = _free_obj_id(entry)
            settings = SolveSettings(refine=self._refine(request), obj_id=scratch, vlm=self.settings.language)
            session = self._engine_session(entry) if settings.needs_session else None
            with timer.stage("solve"):
                ans = self._locked(_forgetting(entry, scratch, answer), _volume(entry, request), request.question,
                                   masks,
                                   session=session, settings=settings, timer=timer)
            info = dict(ans.as_dict(), objects_given=sorted(masks), session=self._session_info(entry, key))
        info["latencies"] = latencies(timer, time.perf_counter() - t0)
        return None, _ignored(info, request)

    # ---- shared ----------------------------------------------------------------------------
    def _locked(self, fn, *args, timer: Timer | None = None, **kwargs):
        """`fn(*args, **kwargs)` under the language lock; the wait is timed as "wait_language"."""
        t0 = time.perf_counter()
        with self.language_lock:
            if timer is not None:
                timer.stages["wait_language"] = timer.stages.get("wait_language", 0.0) + time.perf_counter() - t0
            return fn(*args, **kwargs)

    def _engine_session(self, entry: SessionEntry) -> StepLockedSession:
        """The entry's session for the language layer: engine steps under the compute lock."""
        return StepLockedSession(entry.session, self.service.compute_lock)

    def _refine(self, request: LanguageRequest) -> str:
        return request.refine or self.settings.text_refine

    def _masks(self, entry: SessionEntry, request: LanguageRequest, timer: Timer) -> dict:
        with timer.stage("mask"):
            return self.service.object_masks(entry, request.objects)

    @staticmethod
    def _session_info(entry: SessionEntry, key: str) -> dict:
        return {"key": key, "medvl_session": entry.generation, "requests": entry.requests + 1}

    def _report_folder(self, report_id: str) -> Path:
        with self._report_lock:
            if self._report_root is None:
                root = Path(self.settings.report_dir or tempfile.mkdtemp(prefix="medvl-reports-"))
                root.mkdir(parents=True, exist_ok=True)
                self._report_root = root
            return self._report_root / report_id

    def _prune(self) -> None:
        """Keep the newest `reports_kept` report folders."""
        with self._report_lock:
            folders = sorted((p for p in self._report_root.iterdir() if p.is_dir() and _REPORT_ID.match(p.name)),
                             key=lambda p: p.stat().st_mtime, reverse=True)
            for old in folders[self.settings.reports_kept:]:
                shutil.rmtree(old, ignore_errors=True)


def _series_dir(value, image_path: str, image_id: str, datastore) -> str:
    """The DICOM series the report's SR references (`medvl.server.dicom_output`); BadRequestError (400) if none."""
    from medvl.server.dicom_output import report_series_dir
    from medvl.server.protocol import BadRequestError

    try:
        return report_series_dir(value, image_path, image_id, datastore)
    except ValueError as error:
        raise BadRequestError(str(error)) from None


def _precheck(text: str, modality: str | None):
    """NotUnderstoodError (HTTP 400, nearest concepts named) when `text` has no content word or
    a word no concept covers; other refusals need the volume's context (`_ground`)."""
    from medvl.language import ground

    g = ground(text, modality=modality)
    if g.refusal in ("no_content", "uncovered"):
        g.require()
    return g


def _ground(text: str, volume):
    """The grounding of `text` on `volume` (its modality and body region); NotUnderstoodError or
    NotApplicableError (HTTP 400) when refused."""
    from medvl.language.grounding import ground_for_volume

    return ground_for_volume(text, volume).require()


def _volume(entry: SessionEntry, request: LanguageRequest):
    """The session's volume, with the request's `modality` override when it differs (a shallow
    copy: same array and geometry, modality_source "user"; the region cache is shared)."""
    volume = entry.volume
    if request.modality is None or request.modality == volume.modality:
        return volume
    meta = dict(volume.meta, modality_source="user", modality_reason="request parameter 'modality'")
    return replace(volume, modality=request.modality, meta=meta)


def _free_obj_id(entry: SessionEntry) -> int:
    """An object id neither the engine session nor any label of the session uses."""
    used = set(entry.session.objects) | set(entry.label_ids.values())
    return next(oid for oid in range(255, 0, -1) if oid not in used)


def _forgetting(entry: SessionEntry, obj_id: int, fn):
    """`fn`, then forget the scratch object `obj_id` the solvers may have made in the session."""
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            if obj_id in entry.session.objects:
                entry.session.reset(obj_id)
    return run


def _ignored(info: dict, request: LanguageRequest) -> dict:
    if request.ignored:
        info["ignored_params"] = list(request.ignored)
    return info
