"""`--executor local`: one process, one warm engine, volumes one after another (streamed: only
paths wait in the queue and each volume's arrays are dropped once its outputs are published,
so memory does not grow with the number of volumes)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterable, Iterator

from medvl.batch.annotator import Annotator
from medvl.batch.jobs import BatchSettings, VolumeJob


class LocalExecutor:
    name = "local"

    def __init__(self, settings: BatchSettings, annotator: Annotator | None = None):
        self.annotator = annotator or Annotator(settings)
        self.workers = 1

    def run(self, items: Iterable[tuple[VolumeJob, dict | None]], out_dir: Path,
            stop: threading.Event) -> Iterator[dict]:
        for job, fingerprint in items:
            if stop.is_set():
                return
            yield self.annotator.run(job, out_dir, fingerprint)

    def close(self) -> None:
        pass
