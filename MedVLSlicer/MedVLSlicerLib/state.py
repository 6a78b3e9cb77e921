"""Typed state of the module's interactive session (what `logic.InteractiveLogic` keeps), and the
one-line quality summary of an answer. Qt-free."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from . import protocol
from .client import InferResult
from .prompts import PromptSet


@dataclass
class ServerInfo:
    """What `/info/` says the server offers."""

    url: str  # base URL, no trailing slash
    name: str  # the app's name
    models: dict  # task name -> description dict, as /info/ lists them
    labels: list  # label names the server offers (object 1, 2, ... by default)
    interactive_task: str  # the points/boxes task we use
    text_task: str  # the text task ("" when the server has no language layer)
    report_task: str  # the report task ("" when none)


@dataclass
class ObjectState:
    """One object of the session: one segment, and what the server's last answer said of it."""

    obj_id: int  # server-side object id; also the segment's MedVLSlicer.obj_id tag
    name: str  # segment name and the server `label`, from the object's first prompt set
    segment_id: str  # id of its segment in the segmentation node
    current: Optional[PromptSet] = None  # the prompt set the server holds (from its last answer)
    undo_steps: int = 0  # prompts the server can undo on this object (from its last answer)
    voxels: int = 0  # segment size after the last answer
    in_sync: bool = False  # segment == server's mask, so a changed-box crop can be pasted

    def take_reply(self, result: InferResult, sent: PromptSet) -> None:
        """Adopt the server's view of the object from an answer to `sent`."""
        held = result.params.get(protocol.R_PROMPT_SET)
        if isinstance(held, dict):
            self.current = PromptSet.from_reply(self.obj_id, held, sent)
            self.undo_steps = int(held.get("undo_steps") or 0)
        else:  # a server without prompt_set: what we sent is what it holds
            self.current = sent
            self.undo_steps = len(sent.foreground) + len(sent.background) + len(sent.boxes) + bool(sent.text)
        if self.current is not None and self.current.is_empty():
            self.current = None


@dataclass
class SessionState:
    """Everything the Logic knows about one volume's interactive session."""

    volume_node_id: str  # the MRML volume every prompt's (i, j, k) refers to
    segmentation_node_id: str  # where the objects' segments live
    upload_path: str  # the volume as written for upload; kept to re-upload after expiry
    image_id: str  # datastore id for Accept: "<volume name>-<digest of voxels and grid>"
    session_id: str = ""  # MONAI Label session (the uploaded volume); "" before upload / when gone
    generation: str = ""  # medvl session generation from the last answer; "" = none known
    objects: dict = field(default_factory=dict)  # obj_id -> ObjectState
    last_contact: float = 0.0  # time.monotonic() of the last server answer (keepalive)
    latencies: dict = field(default_factory=dict)  # last answer: server stages + "round_trip", seconds
    last_answer: dict = field(default_factory=dict)  # last answer's JSON (voxels, slice range, action, ...)
    report: str = ""  # last report text from the report task
    uploads: int = 0  # volume uploads: 1 + expiries recovered
    recoveries: int = 0  # requests that had to re-create server state
    image_in_datastore: bool = False  # the volume has been stored for Accept


def quality_summary(answer: dict) -> str:
    """One line for the status bar from an answer's `quality` (estimate and named warnings):
    'quality 0.81' or 'quality 0.42 - check: leak suspected, touches edge'; '' when absent."""
    quality = answer.get("quality") or {}
    if not quality:
        return ""
    estimate = quality.get("estimate")
    text = "quality ?" if estimate is None else f"quality {estimate:.2f}"
    names = [w.get("name", "").replace("_", " ") for w in quality.get("warnings") or []]
    return f"{text} - check: {', '.join(names)}" if names else text
