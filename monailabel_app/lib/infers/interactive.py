"""`medvl_interactive`: MONAI Label's view of `medvl.server.interactive.InteractiveService`.

Type deepgrow, 3D, so the stock Slicer client lists it under interactive models and sends
its SAM/deepgrow parameters; the protocol is `medvl.server.protocol`. Stages (parse,
load, prompt, propagate, mask, write) and their latencies come back in the JSON part.
"""

from __future__ import annotations

import os
import tempfile

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from medvl.server.protocol import EXTENSIONS, RESULT_EXTENSION


class InteractiveInferTask(InferTask):
    def __init__(self, service, labels):
        super().__init__(
            type=InferType.DEEPGROW,
            labels={name: n for n, name in enumerate(labels, start=1)},
            dimension=3,
            description=f"Points, boxes or an ROI on any slice -> 3D mask by slice propagation "
                        f"(medvl, engine {service.settings.engine})",
            config={"result_extension": ".nrrd", "crop": False, "roi_mode": "center", "output_labels": "object"},
        )
        self.service = service

    def is_valid(self) -> bool:
        return True

    def __call__(self, request):
        session = request.get("session") or {}
        return run_to_file(request, "medvl-", lambda out: self.service.run(
            request, request["image"], request["image_id"], out, monai_session_id=session.get("name")))


def run_to_file(request, prefix: str, run):
    """Call `run(out_path)` with a fresh temp file of the requested result extension, in the
    studies' tmp folder (so the next start removes what a killed server left there).

    `run` returns `(path or None, info)`; the temp file is removed when it fails or
    answers without a file, and otherwise handed to MONAI Label (which deletes it).
    """
    ext = str(request.get(RESULT_EXTENSION) or ".nrrd")
    ext = ext if ext in EXTENSIONS else ".nrrd"  # a bad value is reported by the protocol parser
    fd, out_path = tempfile.mkstemp(suffix=ext, prefix=prefix, dir=_results_dir())
    os.close(fd)
    try:
        path, info = run(out_path)
    except BaseException:
        os.unlink(out_path)
        raise
    if path is None:
        os.unlink(out_path)
    return path, info


def _results_dir() -> str | None:
    from monailabel.interfaces.utils.app import app_instance

    from medvl.server.uploads import tmp_dir

    studies = str(getattr(app_instance(), "studies", "") or "")
    return None if not studies or studies.startswith(("http://", "https://")) else str(tmp_dir(studies))
