"""MedVLSlicer's MONAI Label app: the `medvl` session engine behind the stock MONAI Label server.

Start it with `medvl serve` (or `python -m monailabel.main start_server --app monailabel_app
--studies DIR`). Tasks come from `lib.tasks.TASKS`; settings from `--conf KEY VALUE`
(`medvl.server.settings.ServerSettings`). Requests and responses: `medvl.server.protocol`.

What this class adds to `MONAILabelApp`:
- `infer` answers an unknown model or image with 404 and medvl errors with their 4xx
  (`medvl.server.http`), before and around the stock code;
- a local datastore that rejects non-image uploads and writes labels atomically;
- MONAI Label's periodic session cleanup also expires idle medvl sessions;
- batch inference keeps one image's error to that image (`lib.batch_infer`).
"""

from __future__ import annotations

import hashlib
import logging
import os

from fastapi import HTTPException
from lib.batch_infer import PerImageBatchInferTask
from lib.datastore import CheckedLocalDatastore
from lib.tasks import TASKS
from monailabel.config import settings as monailabel_settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore

import medvl
from medvl.server.http import as_http
from medvl.server.interactive import InteractiveService
from medvl.server.language import LanguageService
from medvl.server.settings import ServerSettings

logger = logging.getLogger(__name__)


class MedVLApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict):
        self.settings = ServerSettings.from_conf(conf)  # typed, parsed once here
        self.service = InteractiveService(self.settings)  # sessions + shared engine for every task
        self.language = LanguageService(self.service)  # text, report and vqa tasks on the same sessions
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MedVLSlicer",
            description="Promptable 3D segmentation (points, boxes, ROI, text) by slice propagation; reports, VQA",
            version=medvl.__version__,
            labels=list(self.settings.labels),
        )
        logger.info("MedVL settings: %s", self.settings)

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return CheckedLocalDatastore(
            self.studies,
            extensions=monailabel_settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=monailabel_settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=monailabel_settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_batch_infer(self):
        return PerImageBatchInferTask()

    def init_infers(self):
        return {name: factory(self) for name, factory in TASKS.items()}

    def infer(self, request, datastore=None):
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(404, f"unknown model {model!r}; this server has: {', '.join(sorted(self._infers))}")
        request["image_id"] = image_id = self._image_id(request, datastore or self.datastore())
        with as_http(upload=request["image"] if image_id.startswith("upload-") else None):
            return super().infer(request, datastore)

    def _image_id(self, request: dict, datastore: Datastore) -> str:
        """The id a session is keyed by: datastore id, MONAI Label session image, or upload digest."""
        image = request.get("image")
        if not isinstance(image, str):
            return "array"
        if request.get("session"):
            return os.path.basename(image)
        if os.path.exists(image):  # an uploaded file (or a server-side path): key by content
            with open(image, "rb") as f:
                return "upload-" + hashlib.sha1(f.read()).hexdigest()[:16]
        if not image:
            raise HTTPException(400, "no image: pass ?image=<datastore id>, upload a file, or a live session_id "
                                     "(an expired session_id leaves no image; create a new session)")
        if not datastore.get_image_uri(image):
            raise HTTPException(404, f"unknown image {image!r}; GET /datastore/?output=all lists the image ids")
        return image

    def cleanup_sessions(self):
        super().cleanup_sessions()
        dropped = self.service.store.sweep()
        if dropped:
            logger.info("expired %d idle medvl sessions", dropped)
