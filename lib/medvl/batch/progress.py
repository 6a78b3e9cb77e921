"""Batch progress for people (a tqdm bar on stderr: done, ok/refused/failed, rate, ETA) or for
machines (`--json-progress`: one JSON object per line on stdout, flushed per event).

Events: {"event": "start", "total", "todo", "skipped"}, one {"event": "volume", "case_id",
"status", "reason", "seconds", "done", "todo", "failed", "rate_per_hour", "eta_s"} per
finished volume, {"event": "note", "message"} (e.g. Ctrl-C), and the final {"event": "end", ...}
with the same fields as the command's result.
"""

from __future__ import annotations

import json
import sys
import time


class Progress:
    def __init__(self, total: int, todo: int, skipped: int, mode: str = "bar", stream=None):
        self.mode, self.todo, self.done = mode, todo, 0
        self.counts = {"ok": 0, "refused": 0, "failed": 0}
        self.t0 = time.perf_counter()
        self.stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self.bar = None
        if mode == "json":
            self._emit({"event": "start", "total": total, "todo": todo, "skipped": skipped})
        elif mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=todo, unit="vol", file=self.stream, dynamic_ncols=True,
                            desc=f"annotate ({skipped} done before)" if skipped else "annotate")

    def _emit(self, event: dict) -> None:
        self.stream.write(json.dumps(event, default=str) + "\n")
        self.stream.flush()

    def rate_per_hour(self) -> float:
        elapsed = time.perf_counter() - self.t0
        return round(3600.0 * self.done / elapsed, 1) if elapsed > 0 and self.done else 0.0

    def volume(self, status: dict) -> None:
        self.done += 1
        state = status.get("status", "failed")
        self.counts[state] = self.counts.get(state, 0) + 1
        if self.mode == "json":
            rate = self.rate_per_hour()
            eta = round((self.todo - self.done) * 3600.0 / rate, 1) if rate else None
            self._emit({"event": "volume", "case_id": status.get("case_id"), "status": state,
                        "reason": status.get("reason", ""), "seconds": (status.get("timings_s") or {}).get("total"),
                        "done": self.done, "todo": self.todo, "failed": self.counts["failed"],
                        "rate_per_hour": rate, "eta_s": eta})
        elif self.bar is not None:
            self.bar.set_postfix(ok=self.counts["ok"], refused=self.counts["refused"], failed=self.counts["failed"],
                                 refresh=False)
            self.bar.update(1)

    def note(self, message: str) -> None:
        if self.mode == "json":
            self._emit({"event": "note", "message": message})
        elif self.bar is not None:
            self.bar.write(message)
        elif self.mode != "quiet":
            print(message, file=self.stream)

    def end(self, result: dict) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.mode == "json":
            self._emit({"event": "end", **result})
