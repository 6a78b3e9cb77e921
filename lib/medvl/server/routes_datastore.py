"""`PUT /datastore/image` and `PUT /datastore/label` with bounded, contained uploads (replace MONAI Label's).

The stock routes copy the whole body into a system temp file named with the client's file
suffix and hand it to the datastore on the event loop. Ours keep their contract (query
`image` / `tag`, form fields `params` and `file` / `label`, the same JSON answers) and:

- stream the file into the studies' tmp folder with the `max_upload_mb` limit
  (`medvl.server.uploads.receive_upload`), under a random name with a checked extension;
- check ids and tags before anything is stored (`medvl.server.containment`);
- run the checks, decoding and the atomic copy in a worker thread (the event loop stays free);
- delete the temporary file in every case.
"""

from __future__ import annotations

import logging
from typing import Optional

from fastapi import Depends, File, Form, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from monailabel.config import settings as monailabel_settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from medvl.server.containment import check_name, upload_id
from medvl.server.http import json_object
from medvl.server.routing import replace_route
from medvl.server.uploads import receive_upload, temporary_upload

logger = logging.getLogger(__name__)


def install(app) -> None:
    for path in ("/datastore/image", "/datastore/"):
        replace_route(app, path, "PUT", add_image, tags=["Datastore"], include_in_schema=path.endswith("image"),
                      summary="Upload a new image (streamed, size-limited, checked before it is stored)")
    replace_route(app, "/datastore/label", "PUT", save_label, tags=["Datastore"],
                  summary="Save a label for a datastore image (checked against the image's grid, atomic)")


async def add_image(
    image: Optional[str] = None,
    params: str = Form("{}"),
    file: UploadFile = File(...),
    user: User = Depends(RBAC(monailabel_settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),
):
    info = json_object(params, "params")
    image_id = check_name(image, "image id") if image else upload_id(file.filename)
    instance = app_instance()
    path = await receive_upload(file, instance.studies, instance.settings.max_upload_mb)
    with temporary_upload(path):
        if user and getattr(user, "username", None):
            info["user"] = user.username
        image_id = await run_in_threadpool(instance.datastore().add_image, image_id, str(path), info)
    return {"image": image_id}


async def save_label(
    image: str,
    params: str = Form("{}"),
    tag: str = "final",
    label: UploadFile = File(...),
    user: User = Depends(RBAC(monailabel_settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),
):
    info = json_object(params, "params")
    tag = check_name(tag or "final", "label tag")
    instance = app_instance()
    datastore = instance.datastore()
    if image not in datastore.list_images():
        raise HTTPException(404, f"unknown image {image[:80]!r}: a label needs an image of the datastore "
                                 "(GET /datastore/?output=all lists them)")
    path = await receive_upload(label, instance.studies, instance.settings.max_upload_mb)
    with temporary_upload(path):
        label_id = await run_in_threadpool(datastore.save_label, image, str(path), tag, info)
    result = instance.on_save_label(image, label_id) or {}
    result.update({"image": image, "label": label_id})
    return result
