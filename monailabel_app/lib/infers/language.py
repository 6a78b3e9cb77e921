"""`medvl_text`, `medvl_report`, `medvl_vqa`: MONAI Label's view of `medvl.server.language.LanguageService`.

Parameters and answers: `medvl.server.protocol` (module docstring). `medvl_text` answers a
mask file like `medvl_interactive` (and is what `/batch/infer/medvl_text` runs per image,
params such as `{"text": "nodule"}`); report and vqa answer JSON only.
"""

from __future__ import annotations

from lib.infers.interactive import run_to_file
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType


class _LanguageInferTask(InferTask):
    def __init__(self, service, type, description, config, labels=None):
        super().__init__(type=type, labels=labels or {}, dimension=3, description=description, config=config)
        self.service = service  # medvl.server.language.LanguageService

    def is_valid(self) -> bool:
        return True

    @staticmethod
    def backend(service) -> str:
        """The language backend as the task descriptions name it (as the interactive task names its engine)."""
        lang = service.settings.language
        return f"VLM {lang.model} ({lang.family}, {lang.device})" if lang.enabled else "offline"

    @staticmethod
    def _session_name(request) -> str | None:
        return (request.get("session") or {}).get("name")


class TextInferTask(_LanguageInferTask):
    def __init__(self, service, labels):
        super().__init__(service, InferType.SEGMENTATION,
                         "Free text (e.g. 'the nodule in the right lung', 'lungs', 'bone') -> 3D mask "
                         f"(medvl, language {self.backend(service)})",
                         {"text": "", "refine": service.settings.text_refine, "result_extension": ".nrrd"},
                         labels={name: n for n, name in enumerate(labels, start=1)})

    def __call__(self, request):
        return run_to_file(request, "medvl-text-", lambda out: self.service.text(
            request, request["image"], request["image_id"], out, monai_session_id=self._session_name(request)))


class ReportInferTask(_LanguageInferTask):
    def __init__(self, service):
        super().__init__(service, InferType.OTHERS,
                         "Structured report (facts, impression, narrative, overview image) of the session's "
                         f"objects and text prompts (medvl, language {self.backend(service)})",
                         {"text": "", "narrator": "vlm" if service.settings.language.enabled else "deterministic"})

    def __call__(self, request):
        from monailabel.interfaces.utils.app import app_instance

        datastore = app_instance().datastore() if request.get("dicom_sr") else None  # dicom_sr may name an image
        return self.service.report(request, request["image"], request["image_id"], self._session_name(request),
                                   datastore=datastore)


class VqaInferTask(_LanguageInferTask):
    def __init__(self, service):
        super().__init__(service, InferType.OTHERS,
                         "Question about the image and its findings -> answer from measured facts "
                         f"(medvl, language {self.backend(service)})",
                         {"question": ""})

    def __call__(self, request):
        return self.service.vqa(request, request["image"], request["image_id"], self._session_name(request))
