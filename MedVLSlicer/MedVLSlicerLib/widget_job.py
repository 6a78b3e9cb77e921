"""The Widget's one running request (see MedVLSlicerWidget._run)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .prompts import PromptSet


@dataclass
class WidgetJob:
    """The one running request of the Widget."""

    future: concurrent.futures.Future  # the worker's work
    onDone: Callable  # called with the result on the main thread
    objId: Optional[int]  # the object it changes (None: no object)
    prompts: Optional[PromptSet] = None  # a segment request's prompts (live slices are drawn for it)
    started: float = field(default_factory=time.monotonic)
    clientCancel: threading.Event = field(default_factory=threading.Event)  # stop reading the answer
    serverCancel: threading.Event = field(default_factory=threading.Event)  # the server was asked to stop
    cancelAt: float = 0.0  # when Cancel was pressed
    slicesDone: int = 0  # slices the server reported done
    slicesDrawn: int = 0  # slices of the partial mask last drawn
    lastPoll: float = -1.0  # seconds after start of the last progress poll
    poll: Optional[concurrent.futures.Future] = None  # the progress poll in flight
    previousRequest: str = ""  # the client's newest request id when this job started (progress polls wait for a new one)
    drawn: Optional[object] = None  # the partial mask drawn last (uint8 (k, j, i))
