"""What the module does besides prompting: reports, questions, live propagation with a
cancel that keeps what was done, and the datastore (annotating a set).

`AssistLogic` is mixed into the module's Logic next to `InteractiveLogic` and uses its
`client`, `server` and `state`. As there, `send*`/`fetch*`/`poll*`/`list*`/`download*` only
do network (any thread) and `apply*`/`load*` touch MRML (main thread only).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import masks, protocol
from .client import InferResult
from .errors import MedVLSlicerError, PromptError, ServerError
from .prompts import PromptSet

logger = logging.getLogger(__name__)

DATASTORE_IMAGE_ATTRIBUTE = "MedVL.datastoreImage"  # volume node attribute: the datastore id it came from


@dataclass
class DatastoreImage:
    """One image of the server's datastore."""

    image_id: str  # the datastore id
    ext: str  # file suffix as stored (".nii.gz", ".nrrd", ...)
    labelled: bool  # has a "final" label


@dataclass
class Progress:
    """A running request as the server reports it (GET /medvl/progress)."""

    state: str  # running / done / cancelled / failed / limited
    slices_done: int  # slices propagated so far (prompted ones included)
    axis_size: int  # slices along the propagation axis (0 before propagation starts)
    slice_range: Optional[list]  # [first, last] index done so far
    mask: Optional[object] = None  # the object's 0/1 mask so far, uint8 (k, j, i), when asked and it grew
    box: Optional[tuple] = None  # (slab (k, j, i), offset (i, j, k)) where `mask` differs from the one drawn
    add_only: bool = True  # the box only adds voxels to the one drawn


def _decoded(result: InferResult) -> InferResult:
    """Decode the answer's mask here (worker thread) so the GUI thread only pastes it."""
    if result.mask is not None:
        result.decoded = masks.read_mask_bytes(result.mask, result.mask_name)
    return result


class AssistLogic:
    # --- reports and questions -----------------------------------------------------------------
    def fetch_report_file(self, result: InferResult, kind: str = "overview") -> Optional[bytes]:
        """Network only: one file of a report answer ("overview" PNG, "md", "json"); None if absent."""
        path = (result.params.get(protocol.R_REPORT_FILES) or {}).get(kind)
        return self.client.get_file(path) if path and self.client is not None else None

    def fetch_dicom_sr(self, result: InferResult, folder: str) -> dict:
        """Network + files: the report answer's DICOM SR and SEG saved in `folder`; {"sr": path, "seg": path}."""
        files = result.params.get(protocol.R_REPORT_FILES) or {}
        if not files.get("sr"):
            raise MedVLSlicerError("the server's report has no DICOM SR: update the server (medvl_report dicom_sr)")
        os.makedirs(folder, exist_ok=True)
        saved = {}
        for kind in ("sr", "seg"):
            path = os.path.join(folder, os.path.basename(files[kind]))  # report.sr.dcm, report.seg.dcm
            with open(path, "wb") as f:
                f.write(self._client().get_file(files[kind]))
            saved[kind] = path
        return saved

    def dicom_image(self, volume_node) -> str:
        """The datastore id the volume was opened from ("" for a volume loaded in Slicer): the image whose
        DICOM series an SR can reference (the server says whether it has one)."""
        return (volume_node.GetAttribute(DATASTORE_IMAGE_ATTRIBUTE) or "") if volume_node is not None else ""

    def send_question(self, question: str, should_cancel=None) -> InferResult:
        """Network only: the VQA task with the session's objects as context."""
        question = (question or "").strip()
        if not question:
            raise PromptError("type a question first, e.g. 'how large is the tumour?'")
        if not self.server or protocol.VQA_TASK not in self.server.models:
            raise MedVLSlicerError(f"this server offers no {protocol.VQA_TASK} task: start it with the language layer")
        state = self._state()
        params = {protocol.P_QUESTION: question, protocol.P_OBJ_ID: sorted(state.objects)}
        if self.modality:
            params[protocol.P_MODALITY] = self.modality
        return self._client().infer(protocol.VQA_TASK, params, session_id=state.session_id,
                                    should_cancel=should_cancel)

    def apply_answer(self, result: InferResult) -> dict:
        """Main thread: the answer, whether it could be given, its intent and who answered."""
        self._record(result)
        p = result.params
        grounding = p.get("grounding") or {}
        backend = backend_text(p.get(protocol.R_LANGUAGE)) or p.get("backend") or grounding.get("backend") or \
            grounding.get("method") or "measured facts"
        return {"answer": str(p.get(protocol.R_ANSWER, "")), "answerable": bool(p.get("answerable", True)),
                "intent": str(p.get("intent") or ""), "backend": str(backend),
                "objects": list(p.get("objects") or []), "task": protocol.VQA_TASK}

    # --- live propagation and cancel -------------------------------------------------------------
    def poll_progress(self, seen_slices: int = 0, with_mask: bool = True, drawn=None) -> Optional[Progress]:
        """Any thread: the newest request's progress; with its partial mask when more than
        `seen_slices` slices are done, decoded and compared with `drawn` (the partial mask
        drawn last; None: none yet) here, so the GUI thread only pastes the changed box.
        None when the server cannot say."""
        report = self.progress()
        if not report:
            return None
        out = Progress(str(report.get("state", "")), int(report.get("slices_done") or 0),
                       int(report.get("axis_size") or 0), report.get("slice_range"))
        if with_mask and out.state == "running" and out.slices_done > seen_slices:
            try:
                data = self.client.partial_mask(self.client.last_request_id)
            except MedVLSlicerError as error:
                logger.debug("partial mask: %s", error)
                return out
            decoded = masks.read_mask_bytes(data, "partial.nrrd") if data else None  # a detached node, in no scene
            if decoded is not None:
                out.mask = masks.object_mask(decoded[0], 1)
                before = drawn if drawn is not None and drawn.shape == out.mask.shape else np.zeros_like(out.mask)
                out.box = masks.changed_box(before, out.mask)
                if out.box is not None:
                    (k, j, i), (dk, dj, di) = out.box[1][::-1], out.box[0].shape
                    out.add_only = not np.any(before[k:k + dk, j:j + dj, i:i + di] & ~out.box[0].astype(bool))
        return out

    def apply_partial(self, prompts: PromptSet, progress: Progress) -> bool:
        """Main thread: draw a partial mask from `poll_progress` into the object's segment
        (made if new): only its changed box is pasted (the first one is added to what the
        segment shows; the answer replaces the segment at the end). False when the mask is
        not on the volume's grid (then the answer is awaited)."""
        volume, segmentation = self.nodes()
        if progress.mask is None or progress.mask.shape != tuple(reversed(volume.GetImageData().GetDimensions())):
            return False
        segment_id = masks.ensure_segment(segmentation, self.name_for(prompts), prompts.obj_id)
        obj = self.state.objects.get(prompts.obj_id)
        if obj is not None:
            obj.in_sync = False  # the segment is ahead of the last answer
        if progress.box is not None:
            if progress.add_only:
                masks.paste_slab(segmentation, segment_id, volume, *progress.box, add_only=True)
            else:
                masks.paste_slab(segmentation, segment_id, volume, progress.mask)
        return True

    def send_keeping(self, prompts: PromptSet, propagate: bool, stop: threading.Event, should_cancel=None):
        """Network only: `send`, but when `stop` was set (the server was asked to cancel) and
        the server answers that it stopped, ask for the object's mask as kept (the prompted
        slice and every slice propagated before the stop). The result's params then carry
        `cancelled: True`."""
        try:
            return _decoded(self.send(prompts, propagate, should_cancel=should_cancel))
        except ServerError as error:
            if not stop.is_set() or error.status not in (409, 422):
                raise
            logger.info("request stopped on the server (%s); fetching what was kept", error.reason)
        kept = self.send(prompts, False, should_cancel=should_cancel)
        kept.params["cancelled"] = True
        return _decoded(kept)

    # --- datastore -------------------------------------------------------------------------------
    def list_datastore(self) -> list:
        """Network only: every datastore image, labelled or not, sorted by id."""
        objects = self._client().datastore().get("objects", {})
        out = []
        for image_id, entry in sorted(objects.items()):
            ext = ((entry.get("image") or {}).get("ext")) or ".nii.gz"
            labels = entry.get("labels") or {}
            out.append(DatastoreImage(image_id, ext, "final" in labels))
        return out

    @staticmethod
    def next_unlabelled(images: list, after: str = "") -> Optional[DatastoreImage]:
        """The first unlabelled image after `after` (wrapping round), or None when all are done."""
        todo = [im for im in images if not im.labelled]
        later = [im for im in todo if im.image_id > after]
        return (later or todo or [None])[0]

    def download_image(self, image: DatastoreImage) -> str:
        """Network only: a datastore image written to a temporary file; its path."""
        data = self._client().download_image(image.image_id)
        folder = tempfile.mkdtemp(prefix="medvl_datastore_")
        path = os.path.join(folder, "".join(c if c.isalnum() or c in "-_." else "_" for c in image.image_id) + image.ext)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def load_image(self, path: str, image_id: str):
        """Main thread: read a downloaded datastore image into a new volume node tagged with its
        id (so Accept saves the label to that image); ends the current session."""
        import slicer

        scene = slicer.mrmlScene
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", image_id)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(path)
        if not storage.ReadData(node):
            scene.RemoveNode(node)
            raise MedVLSlicerError(f"could not read the datastore image {image_id!r} ({path})")
        node.SetAttribute(DATASTORE_IMAGE_ATTRIBUTE, image_id)
        node.CreateDefaultDisplayNodes()
        return node


def backend_text(language, narrator: str = "") -> str:
    """One line naming the language backend of a reply's `language` ("" when the reply has none):
    "VLM qwen2_5_vl Qwen2.5-VL-3B (cuda)", "offline", "sam3 SAM 3"; with a report's `narrator`
    (deterministic, smollm2, vlm) appended as the narrative's writer."""
    if not isinstance(language, dict) or not language.get("backend"):
        return ""
    kind = str(language["backend"])
    if kind == "vlm":
        model = os.path.basename(str(language.get("model") or "").rstrip("/\\")) or "?"
        text = f"VLM {language.get('family') or '?'} {model}"
        text += f" ({language['device']})" if language.get("device") else ""
    elif kind == "offline":
        text = "offline"
    else:  # a concept engine answering text (sam3): its name and model
        model = str(language.get("model") or "")
        text = f"{kind} {model}" if model and model != kind else kind
    return f"{text}, {narrator} narrative" if narrator else text
