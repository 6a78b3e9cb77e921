"""The app's task registry: name -> factory(app) -> MONAI Label InferTask. One line per task."""

from __future__ import annotations

from typing import Callable

from lib.infers.interactive import InteractiveInferTask
from lib.infers.language import ReportInferTask, TextInferTask, VqaInferTask
from monailabel.interfaces.tasks.infer_v2 import InferTask

TASKS: dict[str, Callable[..., InferTask]] = {
    "medvl_interactive": lambda app: InteractiveInferTask(app.service, app.settings.labels),
    "medvl_text": lambda app: TextInferTask(app.language, app.settings.labels),
    "medvl_report": lambda app: ReportInferTask(app.language),
    "medvl_vqa": lambda app: VqaInferTask(app.language),
}
