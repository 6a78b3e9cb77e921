"""`POST /infer/<model>` off the event loop, with cancel and progress (replaces MONAI Label's route).

MONAI Label 0.8.5 runs inference inside its async handler, so one long request blocks every
other request, `GET /info/` included. This route keeps the stock contract (query `image`,
`session_id`, `output`; form fields `params` and `file`; the same multipart / JSON / file
answers) and adds:

- the work runs in a worker thread; the event loop stays free for other requests;
- `request_id` (query, optional): names the request for `GET /medvl/progress/<id>` and
  `POST /medvl/cancel/<id>` (`medvl.server.jobs`); the answer carries it in the JSON and the
  `X-MedVL-Request-Id` header; a client that disconnects cancels its request;
- bad input is a 4xx with one line (no image, `params` not a JSON object, unknown session);
- `output=dicom_seg` answers the mask as a DICOM SEG (`application/dicom`) referencing the image's
  DICOM series (`medvl.server.dicom_output`; 400 when the image has none);
- an uploaded `file` is streamed into the studies' tmp folder with the upload limits and
  checked before use (`medvl.server.uploads`), and deleted after; the image is only ever
  that upload, a datastore id or a MONAI Label session image: `params` keys that would name
  another (`image`, `session`, ...: `RESERVED_KEYS`) are dropped.

Engine work takes the compute lock per slice step (`medvl.server.interactive`), so a click on
another session waits for at most one slice of a running propagation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from typing import Optional

from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from monailabel.config import settings as monailabel_settings
from monailabel.endpoints.infer import ResultType, send_response
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import remove_file

from medvl.server.auth import check_save_label
from medvl.server.containment import check_name
from medvl.server.fair_lock import start_request
from medvl.server.http import json_object
from medvl.server.jobs import JOB_KEY
from medvl.server.routing import replace_route
from medvl.server.uploads import UPLOAD_KEY, check_image_file, receive_upload, tmp_dir

logger = logging.getLogger(__name__)

PROGRESS_ROUTE = "/medvl/progress/{request_id}"  # GET: a running (or recent) request's progress
CANCEL_ROUTE = "/medvl/cancel/{request_id}"  # POST: stop it at the next slice, keeping what was done
REQUEST_ID_HEADER = "X-MedVL-Request-Id"
_POLL_S = 0.2  # how often a waiting request checks whether its client is still there
RESERVED_KEYS = frozenset({"model", "image", "session", "image_id", "image_path", UPLOAD_KEY, JOB_KEY, "_id",
                           "_image_id", "description"})


def install(app) -> None:
    """Put our `/infer/{model}`, progress and cancel routes on MONAI Label's app."""
    replace_route(app, "/infer/{model}", "POST", run_inference, tags=["Infer"],
                  summary="Run inference (off the event loop; cancel and progress by request_id)")
    app.add_api_route(PROGRESS_ROUTE, progress, methods=["GET"], tags=["Infer"],
                      summary="Progress of a running request (?mask=1: its mask so far, NRRD)")
    app.add_api_route(CANCEL_ROUTE, cancel, methods=["POST"], tags=["Infer"],
                      summary="Cancel a running request at the next slice (what was done is kept)")


def _service():
    service = getattr(app_instance(), "service", None)
    if service is None:
        raise HTTPException(503, "the MedVLSlicer app is not loaded: start the server with medvl serve")
    return service


async def run_inference(
    request: Request,
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    request_id: Optional[str] = None,
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),
    output: Optional[ResultType] = None,
    user: User = Depends(RBAC(monailabel_settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    instance = app_instance()
    service = _service()
    if not file and not image and not session_id:
        raise HTTPException(400, "no image: pass ?image=<datastore id> (GET /datastore/?output=all lists them), "
                                 "upload a file, or ?session_id=<MONAI Label session>")
    if label:
        raise HTTPException(400, "this server's tasks take no label file (scribbles); send prompts in params")
    series_dir = None
    if output == ResultType.dicom_seg:  # the SEG references the image's DICOM series: find it before any work
        from medvl.server.dicom_output import source_series_dir

        try:
            series_dir = source_series_dir(instance.datastore(), image, uploaded=bool(file) or bool(session_id))
        except ValueError as error:
            raise HTTPException(400, str(error)) from None
    extra = json_object(params, "params", '{"foreground": [[10, 20, 3]]}')
    check_save_label(request.scope, extra)  # save_label writes the datastore: admin token (medvl.server.auth)

    for key in RESERVED_KEYS & extra.keys():  # set by this route or MONAI Label, never by a client
        logger.info("params key %r is set by the server; the client's value is ignored", key)
        del extra[key]

    job = service.jobs.start(model, request_id)  # JobError -> 400/409 via the app's handlers
    upload = None
    try:
        if file:
            upload = await receive_upload(file, instance.studies, instance.settings.max_upload_mb)
            await run_in_threadpool(check_image_file, upload, instance.settings.max_voxels)
        body = {"model": model, "image": image}
        body.update(instance.info().get("config", {}).get("infer", {}))
        body.update(extra)
        if upload:
            body[UPLOAD_KEY] = str(upload)
        if session_id:
            session = instance.sessions().get_session(check_name(session_id, "session_id"))
            if not session:
                raise HTTPException(410, f"session_id {session_id[:80]!r} is unknown or expired: create a new "
                                         "session (PUT /session/) or send ?image=<id>")
            body["image"], body["session"] = session.image, session.to_json()
        body[JOB_KEY] = job.id  # set last: a client's value never names another request's job
        result = await _run_cancellable(request, job, instance.infer, body)
    except BaseException as error:
        service.jobs.finish(job, error)
        raise
    finally:
        if upload:
            upload.unlink(missing_ok=True)
    service.jobs.finish(job)
    if isinstance(result, dict) and isinstance(result.get("params"), dict):
        result["params"]["request_id"] = job.id
    if series_dir is not None:
        result = await _with_dicom_seg(result, series_dir, background_tasks)
    response = send_response(instance.datastore(), result, output, background_tasks)
    if hasattr(response, "headers"):
        response.headers[REQUEST_ID_HEADER] = job.id
    return response


async def _with_dicom_seg(result, series_dir: str, background_tasks: BackgroundTasks):
    """The result with "dicom_seg": its label file as a DICOM SEG (removed after it is sent)."""
    from medvl.errors import MedVLError
    from medvl.server.dicom_output import write_result_seg

    if not isinstance(result, dict):
        result = {"file": result[0], "params": result[1]} if isinstance(result, tuple) else {"params": result}
    try:
        path = await run_in_threadpool(write_result_seg, result, series_dir, str(tmp_dir(app_instance().studies)))
    except (ValueError, MedVLError) as error:
        raise HTTPException(400, str(error).splitlines()[0]) from None
    background_tasks.add_task(remove_file, path)
    return dict(result, dicom_seg=path)


async def _run_cancellable(request: Request, job, fn, *args):
    """`fn(*args)` in a worker thread; the job is cancelled if the client goes away meanwhile."""
    def in_worker():
        start_request()  # this request's share of the compute lock starts at 0 (medvl.server.fair_lock)
        return fn(*args)

    work = asyncio.ensure_future(run_in_threadpool(in_worker))
    while True:
        done, _ = await asyncio.wait({work}, timeout=_POLL_S)
        if done:
            return work.result()
        if not job.cancel_event.is_set() and await request.is_disconnected():
            logger.info("request %s: client disconnected, cancelling", job.id)
            job.cancel("the client disconnected")


async def progress(request_id: str, mask: bool = False,
                   user: User = Depends(RBAC(monailabel_settings.MONAI_LABEL_AUTH_ROLE_USER))):
    job = _service().jobs.get(request_id)
    if job is None:
        raise HTTPException(404, f"no request {request_id[:80]!r}: unknown, or finished long ago")
    if not mask:
        return job.progress()
    partial = job.partial_mask()
    if partial is None:
        raise HTTPException(409, f"request {job.id} has no partial mask (not propagating yet, or finished: its "
                                 "answer carries the mask); ask without mask=1")
    from medvl.server.results import write_labels

    labels, geometry = partial
    fd, path = tempfile.mkstemp(prefix="medvl-progress-", suffix=".nrrd", dir=tmp_dir(app_instance().studies))
    os.close(fd)
    await run_in_threadpool(write_labels, path, labels, geometry)
    return FileResponse(path, media_type="application/octet-stream", filename=f"{job.id}.nrrd",
                        background=_remove(path), headers={REQUEST_ID_HEADER: job.id})


def _remove(path: str):
    from starlette.background import BackgroundTask

    return BackgroundTask(remove_file, path)


async def cancel(request_id: str, user: User = Depends(RBAC(monailabel_settings.MONAI_LABEL_AUTH_ROLE_USER))):
    job = _service().jobs.get(request_id)
    if job is None:
        raise HTTPException(404, f"no request {request_id[:80]!r}: unknown, or finished long ago")
    cancelled = job.cancel("cancelled by the client (POST /medvl/cancel)")
    return {"request_id": job.id, "cancelled": cancelled, "state": job.progress()["state"]}
