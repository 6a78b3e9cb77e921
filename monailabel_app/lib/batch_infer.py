"""MONAI Label's batch inference (`/batch/infer/<task>`), with one image's error kept to that image.

The stock `BatchInferTask` runs images one after another when it has one worker (the usual
case on a small machine) and lets the first error end the whole batch - e.g. `medvl_text`
"nodule" over a folder that also holds an MR. Here each image's infer is wrapped: an error
becomes that image's result, `{"label": null, "error": "<one-line reason>", "status": <code>}`,
and the batch goes on. On a machine without CUDA, `multi_gpu` is turned off: the stock code
would spread the images over zero GPUs (ZeroDivisionError, HTTP 500) with its default
params. Everything else (image selection, label saving, workers) is stock.
"""

from __future__ import annotations

import logging

from fastapi import HTTPException
from monailabel.interfaces.exception import MONAILabelException
from monailabel.interfaces.tasks.batch_infer import BatchInferTask

from medvl.errors import MedVLError
from medvl.server.http import one_line, status_for
from medvl.server.jobs import JOB_KEY
from medvl.server.uploads import UPLOAD_KEY

logger = logging.getLogger(__name__)

SERVER_ONLY_KEYS = ("session", "image_path", UPLOAD_KEY, JOB_KEY)


class PerImageBatchInferTask(BatchInferTask):
    def __call__(self, request, datastore, infer):
        def infer_one(req, store):
            try:
                return infer(req, store)
            except HTTPException as error:
                return _failed(req, error.status_code, error.detail)
            except MONAILabelException as error:
                return _failed(req, 400, error.msg)
            except MedVLError as error:
                return _failed(req, status_for(error), error)

        # keys only our /infer route may set (an upload, a MONAI Label session, a job): never a batch client's
        request = {k: v for k, v in request.items() if k not in SERVER_ONLY_KEYS}
        import torch

        if not torch.cuda.is_available():
            request = dict(request, multi_gpu=False)
        return super().__call__(request, datastore, infer_one)


def _failed(request: dict, status: int, detail) -> dict:
    detail = one_line(detail)
    logger.warning("batch infer %s on %s: %d %s", request.get("model"), request.get("image"), status, detail)
    return {"label": None, "error": detail, "status": status}
