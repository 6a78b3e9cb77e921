"""`medvl_text` on a concept engine (`--conf engine sam3`): every instance of the text is an object.

With the sam3 engine the text is not grounded by the offline concept layer: it goes to
SAM 3's concept model (`medvl.engines.sam3.concept.add_concept`) on the client's own
session, under the compute lock, and each instance it finds becomes its own object: the
first is named after the request's label (default: the text itself), the next
"<label> 2", "<label> 3", ... (`SessionEntry.obj_id_for`, the one label <-> id mapping).
The reply carries every object (`output_labels` "all": the file holds each instance by
its id, `label_names` maps names to ids) and lists the instances with their scores.
"""

from __future__ import annotations

import time
from dataclasses import replace

from medvl.server.interactive import InteractiveService, Timer
from medvl.server.protocol import parse_language_request
from medvl.server.sessions import SessionEntry

CONCEPT_ENGINES = ("sam3",)  # engines whose text prompts go to their own concept model


def is_concept_engine(name: str) -> bool:
    return name in CONCEPT_ENGINES


def concept_text(service: InteractiveService, language: dict, params: dict, image_path: str, image_id: str,
                 out_path: str | None, monai_session_id: str | None = None) -> tuple[str | None, dict]:
    """Text prompt -> every instance as its own object, all written to `out_path`; (path, JSON dict)."""
    from medvl.engines.sam3.concept import add_concept

    timer, t0 = Timer(), time.perf_counter()
    with timer.stage("parse"):
        request = parse_language_request(params, "text")
    text = request.texts[0]
    request = replace(request, label=request.label or (None if request.obj_id is not None else text),
                      output_labels="all")

    def apply(entry: SessionEntry, request, obj_id: int, label: str, timer: Timer) -> dict:
        session = entry.session
        stats0 = session.stats()

        def id_for(n: int) -> int:
            return obj_id if n == 0 else entry.obj_id_for(f"{label} {n + 1}", None, service.settings.labels)[0]

        with timer.stage("solve"):
            with service.compute_lock:
                found = add_concept(session, text, id_for=id_for)
        stats1 = session.stats()
        return {
            "obj_id": obj_id, "label": label, "axis": "k", "action": "text", "text": text,
            "instances": [{"obj_id": oid, "score": round(inst.score, 4), "slices": [inst.slices[0], inst.slices[-1]],
                           "voxels": int(inst.mask.sum())} for oid, inst in found],
            "encoder_passes": stats1.get("encoder_passes", 0) - stats0.get("encoder_passes", 0),
            "engine_seconds": round(timer.get("solve"), 4), "language": language,
        }

    return service.serve_mask(request, apply, image_path, image_id, out_path, monai_session_id, timer, t0)
