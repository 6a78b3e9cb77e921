"""The module's behaviour without its GUI: one interactive session against the server.

Lifecycle (what the Widget's buttons call, and what the tests call directly):

    logic = InteractiveLogic()
    logic.connect("http://127.0.0.1:8000")              # -> ServerInfo (the tasks offered)
    logic.start(volume_node)                            # upload once; new segmentation node
    prompts = prompt_set(volume_node, 1, fg, bg, roi)   # markups -> voxel prompts
    logic.segment(prompts)                              # = send (network) + apply (MRML)
    logic.undo(1); logic.reset(); logic.accept()        # accept saves to /datastore/label

Every request carries the object's whole prompt set (`prompts.PromptSet`); the server diffs
it against what it applied, and its answer says which set it now holds (`prompt_set`): the
server's session is the one history. Undo asks the server to undo (`undo: 1`); recovery
resends the sets the server last said it held.

Threading: the `send*` methods and `keepalive`/`upload` only do network and may run in a
worker thread; every other method creates or modifies MRML nodes and must run on the main
thread. The Widget runs one request at a time, so a `send*` is the only writer of the
session fields while it runs. Nothing here imports qt, ctk or ScriptedLoadableModule.

Session expiry. Two things can be forgotten by the server: the uploaded volume (MONAI Label
session, `expiry` seconds after the last touch) and the engine state (medvl session, idle
TTL or memory eviction; we send its generation as `medvl_session` so the server says 410
instead of silently starting over). On either, `send` touches/re-creates the upload,
resends every other object's last prompt set without propagation, then the request itself
in full, so the user sees one slower answer instead of an error.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from typing import Callable, Optional

import numpy as np

from . import masks, protocol
from .client import InferResult, MedVLClient
from .errors import MedVLSlicerError, PromptError, SessionExpiredError
from .prompts import PromptSet
from .state import ObjectState, ServerInfo, SessionState

logger = logging.getLogger(__name__)


class InteractiveLogic:
    """Interactive segmentation of one volume at a time through a MedVL server."""

    keepalive_interval_s = 120.0  # touch the upload when idle for longer than this
    session_expiry_s = 3600  # asked of the server at upload
    use_crop = True  # ask for changed-box crops when the segment is in sync

    def __init__(self, client_factory: Callable[[str], MedVLClient] = MedVLClient):
        self._client_factory = client_factory  # url -> client (tests may wrap it)
        self.client: Optional[MedVLClient] = None  # set by connect()
        self.server: Optional[ServerInfo] = None  # set by connect()
        self.state: Optional[SessionState] = None  # set by prepare() / start()
        self.refine: str = ""  # text prompts: "hu" (HU candidate only, fast) / "engine" / "auto"; "": the server's default
        self.modality: str = ""  # "CT" / "MR": sent with text and report requests; "": the server reads it

    def set_modality(self, value: str) -> None:
        """The modality override of text and report requests: "auto" (or "") / "CT" / "MR"."""
        text = (value or "auto").strip()
        if text.upper() not in ("AUTO", "CT", "MR"):
            raise PromptError(f"modality {value!r} is not one of {', '.join(protocol.MODALITY_CHOICES)}")
        self.modality = "" if text.upper() == "AUTO" else text.upper()

    # --- server ------------------------------------------------------------------------------
    def connect(self, url: str, token: str = "") -> ServerInfo:
        """Network only: ask the server what it offers; keeps the client for later calls.

        `token`: the server's bearer token (printed by `medvl serve` off loopback); "" -> $MEDVL_TOKEN."""
        client = self._client_factory(url, token=token) if token else self._client_factory(url)
        info = client.info()
        models = dict(info.get("models", {}))
        if protocol.INTERACTIVE_TASK not in models:
            raise MedVLSlicerError(
                f"{client.server_url} offers {sorted(models) or 'no tasks'}, not '{protocol.INTERACTIVE_TASK}': "
                "start the MedVL app (`medvl serve`)"
            )
        labels = info.get("labels", [])
        self.client = client
        self.server = ServerInfo(
            url=client.server_url,
            name=str(info.get("name", "")),
            models=models,
            labels=list(labels if isinstance(labels, list) else labels.keys()),
            interactive_task=protocol.INTERACTIVE_TASK,
            text_task=protocol.TEXT_TASK if protocol.TEXT_TASK in models else "",
            report_task=protocol.REPORT_TASK if protocol.REPORT_TASK in models else "",
        )
        return self.server

    def _client(self) -> MedVLClient:
        if self.client is None:
            raise MedVLSlicerError("not connected: press Connect (or call connect(url)) first")
        return self.client

    def _state(self) -> SessionState:
        if self.state is None:
            raise MedVLSlicerError("no session: choose a volume and press Segment (or call start(volume)) first")
        return self.state

    # --- session -----------------------------------------------------------------------------
    def prepare(self, volume_node, segmentation_node=None) -> SessionState:
        """Main thread: write the volume for upload, get or make the segmentation node.

        Forgets any earlier session (call `end()` first to also free it on the server).
        """
        if volume_node is None or volume_node.GetImageData() is None:
            raise PromptError("choose a loaded volume first")
        self._discard()
        if segmentation_node is None:
            segmentation_node = volume_node.GetScene().AddNewNodeByClass(
                "vtkMRMLSegmentationNode", f"{volume_node.GetName()} MedVL"
            )
            segmentation_node.CreateDefaultDisplayNodes()
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        segmentation_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        folder = tempfile.mkdtemp(prefix="medvl_slicer_")
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in volume_node.GetName()) or "volume"
        path = masks.write_volume_file(volume_node, os.path.join(folder, name + ".nrrd"))
        stored = volume_node.GetAttribute("MedVL.datastoreImage") or ""  # opened from the datastore: label that image
        image_id = stored or f"{name}-{masks.content_digest(volume_node)}"  # never overwrites another image
        self.state = SessionState(volume_node.GetID(), segmentation_node.GetID(), path, image_id=image_id,
                                  image_in_datastore=bool(stored))
        return self.state

    def upload(self) -> str:
        """Network only: upload the prepared volume once; returns the MONAI Label session id."""
        state = self._state()
        state.session_id = self._client().create_session(state.upload_path, expiry_s=self.session_expiry_s)
        state.generation = ""
        state.uploads += 1
        state.last_contact = time.monotonic()
        return state.session_id

    def start(self, volume_node, segmentation_node=None) -> SessionState:
        """prepare() + upload(), for callers that may block (tests, the module Test)."""
        self.prepare(volume_node, segmentation_node)
        self.upload()
        return self.state

    def end(self) -> None:
        """Network: drop the server session (best effort); then forget it here. Segments stay."""
        state = self.state
        if state is not None and state.session_id and self.client is not None:
            try:
                self.client.remove_session(state.session_id)
            except MedVLSlicerError as error:  # already gone or server down: nothing to free
                logger.info("could not drop session %s: %s", state.session_id, error)
        self._discard()

    def _discard(self) -> None:
        state, self.state = self.state, None
        if state is not None:
            shutil.rmtree(os.path.dirname(state.upload_path), ignore_errors=True)

    def keepalive(self, force: bool = False) -> bool:
        """Network only: touch the upload when idle for `keepalive_interval_s` (or `force`).

        Returns False when the server has forgotten it (the next `send` re-uploads).
        """
        state = self._state()
        if not state.session_id:
            return False
        if not force and time.monotonic() - state.last_contact < self.keepalive_interval_s:
            return True
        try:
            self._client().touch_session(state.session_id)
        except SessionExpiredError:
            logger.info("upload session %s expired on the server; the next request re-creates it", state.session_id)
            state.session_id = ""
            return False
        state.last_contact = time.monotonic()
        return True

    # --- network part (worker thread) ----------------------------------------------------------
    def next_obj_id(self) -> int:
        """The id a new object gets (1 + the largest in use)."""
        return max(self._state().objects, default=0) + 1

    def name_for(self, prompts: PromptSet) -> str:
        """The object's name: kept once given, else from its prompts, unique in the session."""
        state = self._state()
        if prompts.obj_id in state.objects:
            return state.objects[prompts.obj_id].name
        name, taken = prompts.describe(), {o.name for o in state.objects.values()}
        return name if name not in taken else f"{name} #{prompts.obj_id}"

    def _params(self, prompts: PromptSet, propagate: bool, crop: bool) -> dict:
        params = prompts.params()
        params[protocol.P_LABEL] = self.name_for(prompts)
        params[protocol.P_PROPAGATE] = bool(propagate)
        params[protocol.P_CROP] = bool(crop)
        params[protocol.P_OUTPUT_LABELS] = "object"
        if prompts.text and self.modality:
            params[protocol.P_MODALITY] = self.modality
        if prompts.text and self.refine:
            params[protocol.P_REFINE] = self.refine
        if self.state.generation:
            params[protocol.P_MEDVL_SESSION] = self.state.generation
        return params

    def _task(self, prompts: PromptSet) -> str:
        if not prompts.text:
            return protocol.INTERACTIVE_TASK
        if not self.server or not self.server.text_task:
            raise PromptError("this server has no text task: use points or a box")
        return self.server.text_task

    def send(self, prompts: PromptSet, propagate: bool = True, should_cancel=None) -> InferResult:
        """Network only: an object's whole prompt set to the server; its answer.

        Asks for a changed-box crop when the object's segment is known to equal the
        server's mask. Recovers once from an expired session (see module docstring).
        """
        state, client = self._state(), self._client()
        if not state.session_id:
            self._recover(skip=prompts.obj_id)
        obj = state.objects.get(prompts.obj_id)
        crop = self.use_crop and obj is not None and obj.in_sync
        try:
            params = self._params(prompts, propagate, crop)
            return client.infer(self._task(prompts), params, session_id=state.session_id, should_cancel=should_cancel)
        except SessionExpiredError as error:
            logger.info("server lost our session (%s); re-creating it", error.reason)
            self._recover(skip=prompts.obj_id)
            params = self._params(prompts, propagate, crop=False)
            result = client.infer(self._task(prompts), params, session_id=state.session_id, should_cancel=should_cancel)
            result.params["recovered"] = True
            return result

    def _recover(self, skip: int) -> None:
        """Re-create the server's state: the upload if it is gone, then every other object's
        last prompt set (no propagation: the masks we show are already complete)."""
        state, client = self._state(), self._client()
        state.recoveries += 1
        state.generation = ""
        if not state.session_id or not self.keepalive(force=True):
            self.upload()
        for obj in state.objects.values():
            obj.in_sync = False
            if obj.obj_id == skip or obj.current is None:
                continue
            answer = client.infer(self._task(obj.current), self._params(obj.current, False, False),
                                  session_id=state.session_id)
            self._note_generation(answer)

    def send_undo(self, obj_id: int, propagate: bool = True, should_cancel=None) -> InferResult:
        """Network only: ask the server to undo the object's last prompt (`undo: 1`); its answer
        names the set it returns to. `propagate`: propagate the restored state if it had not
        been (as Segment would). After a session expiry, the server's state is re-created
        from the sets it last held, then undone."""
        obj = self._object(obj_id)
        if obj.current is None or obj.undo_steps < 1:
            raise PromptError(f"object {obj_id} ({obj.name}) has nothing to undo")
        state, client = self._state(), self._client()
        if not state.session_id:
            self._recover(skip=0)
        params = dict(self._params(obj.current, propagate, crop=False), **{protocol.P_UNDO: 1})
        try:
            return client.infer(protocol.INTERACTIVE_TASK, params, session_id=state.session_id,
                                should_cancel=should_cancel)
        except SessionExpiredError as error:
            logger.info("server lost our session (%s); re-creating it before the undo", error.reason)
            self._recover(skip=0)
            params = dict(self._params(obj.current, propagate, crop=False), **{protocol.P_UNDO: 1})
            result = client.infer(protocol.INTERACTIVE_TASK, params, session_id=state.session_id,
                                  should_cancel=should_cancel)
            result.params["recovered"] = True
            return result

    def send_reset(self, obj_ids=None) -> list:
        """Network only: clear the objects' prompts on the server (all by default); returns
        the ids for `apply_reset`."""
        state = self._state()
        ids = sorted(state.objects) if obj_ids is None else [self._object(o).obj_id for o in obj_ids]
        for oid in ids:
            empty = PromptSet(obj_id=oid, axis=state.objects[oid].current.axis if state.objects[oid].current else "k")
            params = dict(self._params(empty, False, False), **{protocol.P_RESET_STATE: True})
            params.pop(protocol.P_MEDVL_SESSION, None)  # nothing to continue: a fresh state is fine
            if state.session_id:
                try:
                    self._note_generation(self._client().infer(protocol.INTERACTIVE_TASK, params, session_id=state.session_id))
                except SessionExpiredError:
                    state.session_id = ""  # nothing left there to reset
        return ids

    def send_report(self, should_cancel=None, dicom_image: str = "") -> InferResult:
        """Network only: ask the server's report task about the session's objects; with `dicom_image`
        (the datastore id of the DICOM-backed image the volume came from) also its DICOM SR + SEG."""
        if not self.server or not self.server.report_task:
            raise MedVLSlicerError("this server has no report task")
        state = self._state()
        params = {protocol.P_OBJ_ID: sorted(state.objects), protocol.P_OUTPUT_LABELS: "all"}
        if dicom_image:
            params[protocol.P_DICOM_SR] = dicom_image
        if self.modality:
            params[protocol.P_MODALITY] = self.modality
        return self._client().infer(self.server.report_task, params, session_id=state.session_id,
                                    should_cancel=should_cancel)

    # --- MRML part (main thread) ---------------------------------------------------------------
    def nodes(self):
        """(volume node, segmentation node) of the session."""
        import slicer

        state = self._state()
        volume = slicer.mrmlScene.GetNodeByID(state.volume_node_id)
        segmentation = slicer.mrmlScene.GetNodeByID(state.segmentation_node_id)
        if volume is None or segmentation is None:
            raise MedVLSlicerError("the session's volume or segmentation was deleted: choose the volume again and press Segment")
        return volume, segmentation

    def _object(self, obj_id: int) -> ObjectState:
        state = self._state()
        if obj_id not in state.objects:
            raise PromptError(f"no object {obj_id}; objects: {sorted(state.objects) or 'none yet'}")
        return state.objects[obj_id]

    def _note_generation(self, result: InferResult) -> None:
        generation = (result.params.get(protocol.R_SESSION) or {}).get("medvl_session")
        if generation:
            self.state.generation = str(generation)

    def _record(self, result: InferResult) -> None:
        state = self._state()
        state.last_contact = time.monotonic()
        self._note_generation(result)
        latencies = dict(result.params.get(protocol.R_LATENCIES) or {})
        latencies["round_trip"] = round(result.seconds, 4)
        state.latencies = latencies
        state.last_answer = dict(result.params)

    def _write_answer(self, obj: ObjectState, result: InferResult) -> None:
        if result.mask is None:
            if result.params.get(protocol.R_CHANGED) is False:
                return  # a crop answer: nothing changed
            raise MedVLSlicerError(f"the server answered without a mask: {str(result.params)[:200]}")
        volume, segmentation = self.nodes()
        labels, ijk_to_ras = result.decoded or masks.read_mask_bytes(result.mask, result.mask_name)
        crop = result.params.get(protocol.R_CROP) or {}
        offset = masks.crop_offset(volume, labels.shape, ijk_to_ras, crop.get("offset_ijk"))
        full = labels.shape == tuple(reversed(volume.GetImageData().GetDimensions()))
        if not full and not obj.in_sync:
            raise MedVLSlicerError("the server sent a crop for an object that is not in sync; press Segment again")
        obj.voxels = masks.apply_mask(segmentation, obj.segment_id, volume, masks.object_mask(labels, 1), offset)
        obj.in_sync = True

    def apply(self, prompts: PromptSet, result: InferResult) -> ObjectState:
        """Main thread: put an answer into its object's segment; remember the prompt set."""
        state = self._state()
        _, segmentation = self.nodes()
        obj = state.objects.get(prompts.obj_id)
        if obj is None:
            name = self.name_for(prompts)
            obj = ObjectState(prompts.obj_id, name, masks.ensure_segment(segmentation, name, prompts.obj_id))
        self._write_answer(obj, result)
        state.objects[prompts.obj_id] = obj  # only once the answer is in the scene
        obj.take_reply(result, prompts)
        self._record(result)
        return obj

    def apply_undo(self, obj_id: int, result: InferResult) -> ObjectState:
        """Main thread: show the mask recomputed from the object's previous prompt set."""
        obj = self._object(obj_id)
        self._write_answer(obj, result)
        obj.take_reply(result, obj.current or PromptSet(obj_id=obj_id))
        self._record(result)
        return obj

    def progress(self) -> Optional[dict]:
        """Any thread: the server's progress of the newest request (`state`, `slices_done`,
        `elapsed_s`), or None when there is none or the server cannot say."""
        return self._about_newest_request("progress")

    def cancel_running(self) -> bool:
        """Any thread: ask the server to stop the newest request at its next slice (the session
        keeps the slices done); True when the server was still running it."""
        return bool((self._about_newest_request("cancel_request") or {}).get("cancelled"))

    def _about_newest_request(self, call: str) -> Optional[dict]:
        client = self.client
        if client is None or not client.last_request_id:
            return None
        try:
            return getattr(client, call)(client.last_request_id)
        except MedVLSlicerError as error:
            logger.debug("%s of %s: %s", call, client.last_request_id, error)
            return None

    def discard(self, obj_id: int) -> None:
        """Main thread: a request of this object was cancelled; its answer never arrived, so
        the next one asks for the full mask (the server may have moved on)."""
        obj = self._state().objects.get(obj_id)
        if obj is not None:
            obj.in_sync = False

    def apply_reset(self, obj_ids: list) -> None:
        """Main thread: remove the objects' segments and histories."""
        state = self._state()
        _, segmentation = self.nodes()
        for oid in obj_ids:
            obj = state.objects.pop(oid, None)
            if obj is not None:
                segmentation.GetSegmentation().RemoveSegment(obj.segment_id)

    def apply_report(self, result: InferResult) -> str:
        """Main thread: keep and return the report text of a report answer."""
        report = result.params.get(protocol.R_REPORT, "")
        self._state().report = report if isinstance(report, str) else str(report)
        self._record(result)
        return self.state.report

    # --- blocking conveniences (tests, module Test, scripts) -----------------------------------
    def segment(self, prompts: PromptSet, propagate: bool = True) -> ObjectState:
        """send() + apply()."""
        return self.apply(prompts, self.send(prompts, propagate))

    def undo(self, obj_id: int, propagate: bool = True) -> ObjectState:
        """send_undo() + apply_undo()."""
        return self.apply_undo(obj_id, self.send_undo(obj_id, propagate))

    def reset(self, obj_id: Optional[int] = None) -> None:
        """send_reset() + apply_reset() for one object, or all when `obj_id` is None."""
        self.apply_reset(self.send_reset(None if obj_id is None else [obj_id]))

    def labels(self) -> np.ndarray:
        """Main thread: uint8 (k, j, i) label array, each object's voxels = its obj_id."""
        volume, segmentation = self.nodes()
        out = np.zeros(tuple(reversed(volume.GetImageData().GetDimensions())), np.uint8)
        for obj in sorted(self._state().objects.values(), key=lambda o: o.obj_id):
            out[masks.segment_array(segmentation, obj.segment_id, volume) > 0] = obj.obj_id
        return out

    def write_labels(self) -> str:
        """Main thread: the objects as one label file (the volume's geometry) for `save_labels`."""
        state = self._state()
        if not state.objects:
            raise PromptError("nothing to accept: segment an object first")
        volume, _ = self.nodes()
        return masks.write_labels_file(self.labels(), volume, os.path.join(os.path.dirname(state.upload_path), "label.nrrd"))

    def save_labels(self, label_path: str, tag: str = "final") -> dict:
        """Network only: store the volume once, then the label file, in the server's datastore."""
        state, client = self._state(), self._client()
        if not state.image_in_datastore:
            if not client.has_image(state.image_id):  # the id names the voxels: stored once
                state.image_id = client.upload_image(state.upload_path, state.image_id)
            state.image_in_datastore = True
        names = {str(o.obj_id): o.name for o in state.objects.values()}
        return client.save_label(state.image_id, label_path, tag=tag, params={"label_names": names})

    def accept(self, tag: str = "final") -> dict:
        """write_labels() + save_labels()."""
        return self.save_labels(self.write_labels(), tag)

