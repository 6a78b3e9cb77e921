"""The app's task registry: name -> factory(app) -> MONAI Label InferTask. One line per task."""

from __future__ import annotations

from typing import Callable

from lib.infers.interactive import InteractiveInferTask
from monailabel.interfaces.tasks.infer_v2 import InferTask

TASKS: dict[str, Callable[..., InferTask]] = {
    "medvl_interactive": lambda app: InteractiveInferTask(app.service, app.settings.labels),
}
