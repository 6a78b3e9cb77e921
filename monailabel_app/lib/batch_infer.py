"""MONAI Label's batch inference (`/batch/infer/<task>`): our text and report tasks run on the batch runner
of `medvl annotate`; other tasks on the stock code with one image's error kept to that image.

`medvl_text` and `medvl_report` go through `medvl.batch.runner.run_batch` with the server's warm
engine (engine steps under its compute lock, language work under its language lock), so a
batch from a client gets what `medvl annotate` gives: per-image outputs published atomically
under `<studies>/.medvl-batch/<task>-<label_tag>/<image id>/` (status.json, labels, reports),
`summary.csv`/`summary.parquet` there, resume (a repeated request skips images whose image,
prompts and settings are unchanged), and a refusal or failure kept to its image. Each ok
image's label map is saved into the datastore under `label_tag`. The reply maps each image
id to `{"label": id, "tag", "params": {status, objects, outputs}}`, or to
`{"label": null, "error": "<one-line reason>", "status": 422 (refused) | 400 | 500}`.

Params: `text` (a prompt, or a list / "a; b" for several objects), `refine`, `narrator`
(report), `images` ("all", "labeled", "unlabeled" or a list of ids), `max_batch_size`,
`label_tag`. Other tasks (`medvl_interactive`, whose prompts are per image) keep the stock
`BatchInferTask`, each image's error becoming its result; on a machine without CUDA
`multi_gpu` is turned off (the stock code would spread images over zero GPUs).
"""

from __future__ import annotations

import logging
import os

from fastapi import HTTPException
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.exception import MONAILabelException
from monailabel.interfaces.tasks.batch_infer import BatchInferTask

from medvl.errors import MedVLError
from medvl.server.containment import check_name
from medvl.server.http import one_line, status_for
from medvl.server.jobs import JOB_KEY
from medvl.server.protocol import BadRequestError
from medvl.server.uploads import UPLOAD_KEY

logger = logging.getLogger(__name__)

SERVER_ONLY_KEYS = ("session", "image_path", UPLOAD_KEY, JOB_KEY)
RUNNER_TASKS = ("medvl_text", "medvl_report")
BATCH_DIR = ".medvl-batch"  # beside the datastore, hidden (not scanned as images)


class PerImageBatchInferTask(BatchInferTask):
    def __init__(self, app=None):
        super().__init__()
        self.app = app  # MedVLApp: its studies folder, warm engine and locks (None: stock path only)

    def __call__(self, request, datastore, infer):
        # keys only our /infer route may set (an upload, a MONAI Label session, a job): never a batch client's
        request = {k: v for k, v in request.items() if k not in SERVER_ONLY_KEYS}
        if self.app is not None and request.get("model") in RUNNER_TASKS:
            try:
                return self._run_batch(request, datastore)
            except MedVLError as error:
                raise HTTPException(status_for(error), one_line(error)) from None

        def infer_one(req, store):
            try:
                return infer(req, store)
            except HTTPException as error:
                return _failed(req, error.status_code, error.detail)
            except MONAILabelException as error:
                return _failed(req, 400, error.msg)
            except MedVLError as error:
                return _failed(req, status_for(error), error)

        import torch

        if not torch.cuda.is_available():
            request = dict(request, multi_gpu=False)
        return super().__call__(request, datastore, infer_one)

    # ---- medvl_text / medvl_report on the batch runner ----------------------------------
    def _settings(self, request):
        from medvl.batch.jobs import BatchSettings, text_objects

        texts = request.get("text") or []
        if isinstance(texts, str):
            texts = [t for t in texts.split(";") if t.strip()]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise BadRequestError(f"text must be a prompt or a list of prompts, got {one_line(repr(texts))[:80]}")
        report = request["model"] == "medvl_report"
        if not texts and not report:
            raise BadRequestError("medvl_text batch needs text, e.g. {\"text\": \"nodule\"} or a list of prompts")
        refine = request.get("refine") or self.app.settings.text_refine
        if refine not in ("hu", "engine", "auto"):
            raise BadRequestError(f"refine {one_line(repr(refine))[:40]} must be hu, engine or auto")
        language = self.app.settings.language  # the server's --conf vlm (offline when not given)
        narrator = request.get("narrator") or ("vlm" if language.enabled else "deterministic")
        if narrator not in ("deterministic", "smollm2", "vlm"):
            raise BadRequestError(f"narrator {one_line(repr(narrator))[:40]} must be deterministic, smollm2 or vlm")
        service = self.app.service
        return BatchSettings(engine=service.settings.engine, objects=text_objects(texts), report=report,
                             narrator=narrator, refine=refine, label_format=".nrrd", vlm=language)

    def _run_batch(self, request, datastore) -> dict:
        from medvl.batch.annotator import Annotator
        from medvl.batch.jobs import VolumeJob
        from medvl.batch.local import LocalExecutor
        from medvl.batch.runner import run_batch
        from medvl.server.locked_session import StepLockedSession

        settings = self._settings(request)
        tag = request.get("label_tag") or DefaultLabelTag.ORIGINAL
        check_name(tag, "label_tag")
        ids = sorted(self.get_images(request, datastore))
        if request.get("max_batch_size"):
            ids = ids[: int(request["max_batch_size"])]
        jobs = [VolumeJob(case_id=i, source=datastore.get_image_uri(i)) for i in ids]
        service, language = self.app.service, self.app.language
        annotator = Annotator(settings, engine=service.engine(),
                              wrap_session=lambda s: StepLockedSession(s, service.compute_lock),
                              language_lock=language.language_lock)
        out = os.path.join(self.app.studies, BATCH_DIR, f"{request['model']}-{tag}")
        run_batch(jobs, out, settings, executor=LocalExecutor(settings, annotator), progress="quiet")
        return {job.case_id: self._result(job, out, tag, datastore, request["model"]) for job in jobs}

    @staticmethod
    def _result(job, out: str, tag: str, datastore, model: str) -> dict:
        from medvl.batch.publish import read_status

        folder = os.path.join(out, job.case_id)
        status = read_status(folder) or {"status": "failed", "reason": "not run"}
        state = status.get("status")
        params = {"status": state, "objects": status.get("objects", []), "outputs": status.get("outputs", {}),
                  "folder": os.path.relpath(folder, os.path.dirname(os.path.dirname(out)))}
        if state != "ok":
            reason = status.get("reason") or state
            code = 422 if state == "refused" else (500 if reason.startswith("internal error") else 400)
            return dict(_failed({"model": model, "image": job.case_id}, code, reason), params=params)
        labels = os.path.join(folder, status["outputs"]["labels"])
        params["voxels"] = sum(int((o.get("facts") or {}).get("voxels") or 0) for o in params["objects"])
        label = datastore.save_label(job.case_id, labels, tag, {"model": model, "params": params})
        return {"label": label, "tag": tag, "params": params}


def _failed(request: dict, status: int, detail) -> dict:
    detail = one_line(detail)
    logger.warning("batch infer %s on %s: %d %s", request.get("model"), request.get("image"), status, detail)
    return {"label": None, "error": detail, "status": status}
