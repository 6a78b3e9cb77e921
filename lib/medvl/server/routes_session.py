"""MONAI Label's `/session/` routes with checked ids and uploads (replace the stock ones).

The stock routes join the `session_id` path parameter onto the session store's folder
(`/session/%2e%2e` reads `<store>/../meta.info`, and DELETE would remove the store's parent
folder), unpack uploaded archives without checking their members, and copy uploads
unbounded into the system temp folder. Ours keep the contract (`PUT /session/` with
`files` and `expiry` -> `{"session_id", "session_info"}`; `GET` / `DELETE /session/<id>`)
and:

- check `session_id` with the safe-name rule (MONAI Label's ids are UUIDs): else 400;
- take one single-file image per session (streamed into the studies' tmp folder under
  `max_upload_mb`, checked like every upload: `medvl.server.uploads`); `uncompress` and
  multi-file (DICOM series) sessions are refused with 400 naming the alternative.
"""

from __future__ import annotations

from typing import List

from fastapi import Depends, File, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from monailabel.config import settings as monailabel_settings
from monailabel.endpoints import session as stock
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from medvl.io import read_volume
from medvl.server.containment import check_name
from medvl.server.routing import replace_route
from medvl.server.uploads import check_image_file, receive_upload, temporary_upload

_USER = RBAC(monailabel_settings.MONAI_LABEL_AUTH_ROLE_USER)


def install(app) -> None:
    replace_route(app, "/session/{session_id}", "GET", get_session, tags=["Session"], summary="Get a session")
    replace_route(app, "/session/{session_id}", "DELETE", remove_session, tags=["Session"],
                  summary="Delete a session")
    replace_route(app, "/session/", "PUT", create_session, tags=["Session"],
                  summary="Create a session with one image file (checked like every upload)")


async def get_session(session_id: str, update_ts: bool = False, image: bool = False, user: User = Depends(_USER)):
    return stock.get_session(check_name(session_id, "session_id"), update_ts, image)


async def remove_session(session_id: str, user: User = Depends(_USER)):
    return stock.remove_session(check_name(session_id, "session_id"))


async def create_session(uncompress: bool = False, expiry: int = 0, files: List[UploadFile] = File(...),
                         user: User = Depends(_USER)):
    if uncompress:
        raise HTTPException(400, "uncompress is not supported here: upload one image file (.nii.gz, .nrrd, .mha)")
    if len(files) != 1:
        raise HTTPException(400, f"a session takes one image file, got {len(files)}: convert a DICOM series to "
                                 "NIfTI or NRRD, or PUT it to /datastore/image")
    instance = app_instance()
    sessions = instance.sessions()
    if sessions is None:
        raise HTTPException(406, "sessions are not enabled on this server")
    path = await receive_upload(files[0], instance.studies, instance.settings.max_upload_mb)
    with temporary_upload(path):
        await run_in_threadpool(check_image_file, path, instance.settings.max_voxels)
        await run_in_threadpool(read_volume, path)
        session_id, info = await run_in_threadpool(sessions.add_session, str(path), max(0, int(expiry)))
    return {"session_id": session_id, "session_info": info.to_json()}
