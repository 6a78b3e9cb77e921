"""MedVLSlicer's MONAI Label app: the `medvl` session engine behind the stock MONAI Label server.

Start it with `medvl serve` (or `python -m monailabel.main start_server --app monailabel_app
--studies DIR`). Tasks come from `lib.tasks.TASKS`; settings from `--conf KEY VALUE`
(`medvl.server.settings.ServerSettings`). Requests and responses: `medvl.server.protocol`.

What this class adds to `MONAILabelApp`:
- `infer` answers an unknown model or image with 404 and medvl errors with their 4xx
  (`medvl.server.http`), before and around the stock code; its image is only ever a
  datastore id, a checked upload or a MONAI Label session image, never a path a client
  named; `save_label` / `label_tag` are checked and saved here (contained, atomic);
- a local datastore contained in the studies folder, with checked uploads and atomic
  writes (`lib.datastore`, `medvl.server.containment`, `medvl.server.uploads`);
- or, when `studies` is a DICOMweb URL, the PACS as datastore (`medvl.server.datastore_dicomweb`):
  checked and probed before anything starts; then `self.studies` is the PACS's local cache
  folder (uploads, reports and batch outputs stay there) and `self.pacs_url` the PACS;
- MONAI Label's periodic session cleanup also expires idle medvl sessions;
- batch inference keeps one image's error to that image (`lib.batch_infer`).
"""

from __future__ import annotations

import dataclasses
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
from medvl.server.containment import check_name, inside, shown
from medvl.server.datastore_dicomweb import PacsDatastore
from medvl.server.http import as_http
from medvl.server.pacs import check_url, credentials, is_pacs, probe
from medvl.server.protocol import BadRequestError
from medvl.server.uploads import UPLOAD_KEY, tmp_dir
from medvl.server.interactive import InteractiveService
from medvl.server.language import LanguageService
from medvl.server.settings import ServerSettings

logger = logging.getLogger(__name__)

REPORTS_DIR = ".medvl-reports"  # medvl_report's files when --conf report_dir is not given


class MedVLApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict):
        self.settings = ServerSettings.from_conf(conf)  # typed, parsed once here
        self.pacs_url, self._pacs = "", None
        if is_pacs(studies) and monailabel_settings.MONAI_LABEL_DATASTORE.lower() in ("", "dicomweb"):
            # the PACS answers before the app starts (one-line error otherwise); XNAT / DSA stay MONAI Label's
            self.pacs_url = check_url(studies)
            probe(self.pacs_url, auth=credentials())
            self._pacs = PacsDatastore(self.pacs_url, self.settings.pacs_cache, self.settings.labels,
                                       self.settings.max_voxels)
        local = self._pacs.cache_root if self._pacs else studies
        if not self.settings.report_dir:
            # beside the datastore (hidden, not scanned), the newest `reports_kept` kept across restarts
            self.settings = dataclasses.replace(self.settings, report_dir=os.path.join(local, REPORTS_DIR))
        self.service = InteractiveService(self.settings)  # sessions + shared engine for every task
        if self.settings.engine == "sam3":
            self.service.engine()  # a bad checkpoint folder stops the start, named (models load on first use)
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
        if self._pacs:
            self.studies = self._pacs.cache_root  # the local folder every route writes to (never the URL)
        logger.info("MedVL settings: %s", self.settings)

    def info(self):
        """MONAI Label's /info, plus what answers: {"medvl": {"engine", "language"}} (language: the
        offline layer, or the `--conf vlm` checkpoint's family, model and device)."""
        meta = super().info()
        meta["medvl"] = {"engine": self.settings.engine, "language": self.settings.language.describe()}
        return meta

    @property
    def studies_tmp(self) -> str:
        """Where uploads wait while they are checked and used (`medvl.server.uploads`)."""
        return str(tmp_dir(self.studies))

    def init_datastore(self) -> Datastore:
        if self._pacs:
            return self._pacs
        if is_pacs(self.studies):
            return super().init_datastore()
        return CheckedLocalDatastore(
            self.studies,
            max_voxels=self.settings.max_voxels,
            extensions=monailabel_settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=monailabel_settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=monailabel_settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_batch_infer(self):
        return PerImageBatchInferTask(self)

    def init_infers(self):
        return {name: factory(self) for name, factory in TASKS.items()}

    def infer(self, request, datastore=None):
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(404, f"unknown model {model!r}; this server has: {', '.join(sorted(self._infers))}")
        datastore = datastore or self.datastore()
        save, tag = _save_flag(request.pop("save_label", False)), request.pop("label_tag", None) or "original"
        image_id, path, upload = self._image(request, datastore)
        request.update(image=path, image_id=image_id)  # a server path: the stock infer never saves by itself
        with as_http(upload=upload):
            if save:
                check_name(tag, "label_tag")
                if image_id not in datastore.list_images():
                    raise BadRequestError("save_label needs ?image=<datastore id>: an upload or a MONAI Label "
                                          "session image has no datastore entry to label (PUT /datastore/image first)")
            result = super().infer(request, datastore)
            if save and result.get("file"):
                result["label"] = datastore.save_label(image_id, result["file"], tag,
                                                       {"model": model, "params": result.get("params")})
                result["tag"] = tag
        return result

    def _image(self, request: dict, datastore: Datastore) -> tuple[str, str, str | None]:
        """(session key id, file to read, upload path or None) - never a path the client named.

        The image is a datastore id, an upload the /infer route stored in the studies' tmp
        folder (`_medvl_upload`), or a MONAI Label session's image (`session`, set by the route)."""
        upload = request.pop(UPLOAD_KEY, None)
        if upload:
            path = str(inside(self.studies_tmp, upload))
            return "upload-" + _digest(path), path, path
        image = request.get("image")
        session = request.get("session")
        if session and isinstance(image, str):
            return os.path.basename(image), str(inside(self.sessions().store_path, image)), None
        if not image:
            raise HTTPException(400, "no image: pass ?image=<datastore id>, upload a file, or a live session_id "
                                     "(an expired session_id leaves no image; create a new session)")
        path = datastore.get_image_uri(image) if isinstance(image, str) else ""
        if not path:
            raise HTTPException(404, f"unknown image {shown(image)}; GET /datastore/?output=all lists the image ids")
        return image, path, None

    def cleanup_sessions(self):
        super().cleanup_sessions()
        dropped = self.service.store.sweep()
        if dropped:
            logger.info("expired %d idle medvl sessions", dropped)


def _save_flag(value) -> bool:
    if value in (True, False, 0, 1, "true", "false", "True", "False", "1", "0", None):
        return str(value).lower() in ("true", "1")
    raise BadRequestError(f"save_label must be true or false, got {shown(value)}")


def _digest(path: str) -> str:
    sha = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()[:16]
