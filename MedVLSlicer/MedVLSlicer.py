"""MedVLSlicer: promptable 3D segmentation from 3D Slicer through a MedVL MONAI Label server.

Module, typed parameter node, Widget, Logic and Test as in Slicer's scripted-module
template. The behaviour lives in `MedVLSlicerLib` (importable without Slicer's GUI and
tested with PyPI `slicer-core`): the Widget here only wires the UI to the Logic, runs every
network call in a worker thread, and shows errors in the module's status line.
"""

import concurrent.futures
import logging
import os
import threading
import time
from typing import Annotated, Optional

import qt

import slicer
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MedVLSlicerLib import selftest
from MedVLSlicerLib.assist import AssistLogic
from MedVLSlicerLib.errors import MedVLSlicerError
from MedVLSlicerLib.logic import InteractiveLogic
from MedVLSlicerLib.prompts import PromptSet, prompt_set, show_points, text_prompt
from MedVLSlicerLib.widget_assist import AssistWidgetMixin
from MedVLSlicerLib.widget_job import WidgetJob

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the source checkout


class MedVLSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MedVLSlicer")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Markups", "Segmentations"]
        self.parent.contributors = ["MedVLSlicer contributors"]
        self.parent.helpText = _(
            "Click points, draw a box or type what to segment; a MedVL MONAI Label server "
            "answers with a 3D segment propagated through the volume. Start the server with "
            "<code>medvl serve</code>, press Connect, choose a volume, place points and press Segment."
        )
        self.parent.acknowledgementText = _(
            "Uses LiteMedSAM weights (Apache-2.0) through the MedVL engine, MONAI Label and 3D Slicer."
        )


@parameterNodeWrapper
class MedVLSlicerParameterNode:
    """What the module's GUI holds; saved with the scene."""

    serverUrl: str = "http://127.0.0.1:8000"  # the MedVL MONAI Label server
    inputVolume: vtkMRMLScalarVolumeNode  # the volume being segmented
    segmentation: vtkMRMLSegmentationNode  # where segments go (created at start when empty)
    foregroundPoints: vtkMRMLMarkupsFiducialNode  # current object's include clicks
    backgroundPoints: vtkMRMLMarkupsFiducialNode  # current object's exclude clicks
    boxRoi: vtkMRMLMarkupsROINode  # current object's box
    useBox: bool = True  # send the box with the points when it is placed
    objectId: Annotated[int, WithinRange(1, 255)] = 1  # current object
    axis: Annotated[str, Choice(["k", "j", "i"])] = "k"  # slicing / propagation axis
    autoPropagate: bool = True  # Segment answers in 3D (else the prompted slice only)
    textPrompt: str = ""  # free text for the server's text task
    modality: Annotated[str, Choice(["auto", "CT", "MR"])] = "auto"  # text/report: override the image's modality


class MedVLSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, AssistWidgetMixin):
    """Wires the UI to MedVLSlicerLogic; one request at a time, in a worker thread."""

    progressInterval_s = 0.25  # how often the running request's progress (and partial mask) is asked
    cancelGrace_s = 10.0  # after Cancel: wait this long for the server to stop, then stop reading

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # the network thread
        self._sideExecutor = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # progress polls, cancel calls
        self._job: Optional[WidgetJob] = None  # the running request

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedVLSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedVLSlicerLogic()

        for widget in (self.ui.foregroundPlaceWidget, self.ui.backgroundPlaceWidget):
            widget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        for widget in (self.ui.foregroundPlaceWidget, self.ui.backgroundPlaceWidget, self.ui.roiPlaceWidget):
            widget.buttonsVisible = True

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.newObjectButton.connect("clicked(bool)", self.onNewObject)
        self.ui.objectIdSpinBox.connect("valueChanged(int)", self.onObjectChanged)
        self.ui.segmentButton.connect("clicked(bool)", lambda checked=False: self.onSegment(propagate=None))
        self.ui.propagateButton.connect("clicked(bool)", lambda checked=False: self.onSegment(propagate=True))
        self.ui.textSegmentButton.connect("clicked(bool)", self.onText)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self.ui.resetButton.connect("clicked(bool)", self.onReset)
        self.ui.acceptButton.connect("clicked(bool)", self.onAccept)
        self.ui.reportButton.connect("clicked(bool)", self.onReport)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.setupAssist()

        self._pollTimer = qt.QTimer()  # collects worker results on the main thread
        self._pollTimer.setInterval(50)
        self._pollTimer.connect("timeout()", self._poll)
        self._keepaliveTimer = qt.QTimer()
        self._keepaliveTimer.setInterval(int(InteractiveLogic.keepalive_interval_s * 1000 / 2))
        self._keepaliveTimer.connect("timeout()", self._keepalive)
        self._keepaliveTimer.start()
        self.initializeParameterNode()
        self._updateButtons()

    def cleanup(self) -> None:
        self.removeObservers()
        self._pollTimer.stop()
        self._keepaliveTimer.stop()
        self._executor.shutdown(wait=False)
        self._sideExecutor.shutdown(wait=False)

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self.logic.forget()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.inputVolume:
            p.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        self.logic.createPromptNodes(p)
        self.ui.foregroundPlaceWidget.setCurrentNode(p.foregroundPoints)
        self.ui.backgroundPlaceWidget.setCurrentNode(p.backgroundPoints)
        self.ui.roiPlaceWidget.setCurrentNode(p.boxRoi)

    def setParameterNode(self, inputParameterNode: Optional[MedVLSlicerParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # --- running requests off the Qt thread -----------------------------------------------------
    def _run(self, title: str, work, onDone, objId: Optional[int] = None, prompts: Optional[PromptSet] = None,
             serverCancel: Optional[threading.Event] = None) -> None:
        """Run `work(should_cancel)` in the worker thread; `onDone(result)` later on this thread."""
        if self._job is not None:
            self._status(_("Busy: wait for the running request or press Cancel."), error=True)
            return
        job = WidgetJob(None, onDone, objId, prompts)
        job.previousRequest = self.logic.client.last_request_id if self.logic.client is not None else ""
        if serverCancel is not None:
            job.serverCancel = serverCancel
        job.future = self._executor.submit(work, job.clientCancel.is_set)
        self._job = job
        self._status(title)
        self.ui.progressBar.setRange(0, 0)  # busy until the server reports slices
        self._updateButtons()
        self._pollTimer.start()

    def _poll(self) -> None:
        job = self._job
        if job is None:
            self._pollTimer.stop()
            return
        if not job.future.done():
            self._showProgress(job, time.monotonic() - job.started)
            return
        self._idle()
        try:
            job.onDone(job.future.result())
        except MedVLSlicerError as error:
            self._status(str(error), error=True)
        except Exception as error:  # noqa: BLE001 - shown in the module, details in the log
            logging.exception("MedVLSlicer request failed")
            self._status(_("Unexpected error: {error} (details in the Python console)").format(error=error), error=True)
        self._updateButtons()

    def _showProgress(self, job: WidgetJob, seconds: float) -> None:
        """Slices done of the axis (GET /medvl/progress, polled off the Qt thread every
        `progressInterval_s`); a segment request's partial mask is drawn as it grows."""
        if job.poll is not None and job.poll.done():
            progress = job.poll.exception() is None and job.poll.result()
            job.poll = None
            if progress:
                job.slicesDone = progress.slices_done
                if progress.axis_size:
                    self.ui.progressBar.setRange(0, progress.axis_size)
                    self.ui.progressBar.setValue(min(progress.slices_done, progress.axis_size))
                if progress.mask is not None and job.prompts is not None and not job.clientCancel.is_set():
                    if self._guard(lambda: self.logic.apply_partial(job.prompts, progress)):
                        job.drawn, job.slicesDrawn = progress.mask, progress.slices_done
        client = self.logic.client
        ours = client is not None and client.last_request_id != job.previousRequest  # not the one before
        if ours and job.poll is None and seconds - job.lastPoll >= self.progressInterval_s:
            job.lastPoll = seconds
            job.poll = self._sideExecutor.submit(self.logic.poll_progress, job.slicesDrawn, job.prompts is not None,
                                                 job.drawn)
        if job.serverCancel.is_set() and time.monotonic() - job.cancelAt > self.cancelGrace_s:
            job.clientCancel.set()  # the server did not stop in time: stop reading
        text = _("{seconds:.0f} s").format(seconds=seconds)
        if job.slicesDone:
            text = _("{slices} of {total} slices, {seconds:.0f} s").format(
                slices=job.slicesDone, total=self.ui.progressBar.maximum, seconds=seconds)
        self.ui.progressBar.setFormat(text)

    def _idle(self) -> None:
        self._pollTimer.stop()
        self._job = None
        self.ui.progressBar.setRange(0, 1)
        self.ui.progressBar.setValue(1)
        self.ui.progressBar.setFormat("")

    def onCancel(self) -> None:
        """A segment request: ask the server to stop at its next slice and keep what was done
        (the answer then carries the kept mask). Any other request: stop reading its answer."""
        job = self._job
        if job is None:
            return
        if job.prompts is not None and not job.serverCancel.is_set():
            job.serverCancel.set()
            job.cancelAt = time.monotonic()
            self._sideExecutor.submit(self.logic.cancel_running)  # the server stops at its next slice
            self._status(_("Cancelling: the server stops at its next slice and keeps what was done ..."))
            return
        job.clientCancel.set()
        self._idle()
        if job.objId is not None:
            self.logic.discard(job.objId)
        self._status(_("Cancelled; the answer will be discarded."))
        self._updateButtons()

    def _keepalive(self) -> None:
        if self._job is None and self.logic.state is not None and self.logic.client is not None:
            self._executor.submit(self._quietly, self.logic.keepalive)

    @staticmethod
    def _quietly(fn):
        try:
            fn()
        except MedVLSlicerError as error:
            logging.info("MedVLSlicer keepalive: %s", error)

    def _status(self, text: str, error: bool = False) -> None:
        self.ui.statusLabel.setStyleSheet("color: #c0392b" if error else "")
        self.ui.statusLabel.setText(text)
        (logging.warning if error else logging.info)("MedVLSlicer: %s", text)

    def _guard(self, fn):
        """Run a main-thread step; a MedVLSlicerError shows in the status line."""
        try:
            return fn()
        except MedVLSlicerError as error:
            self._status(str(error), error=True)
            return None

    def _updateButtons(self) -> None:
        busy, state, server = self._job is not None, self.logic.state, self.logic.server
        obj = state.objects.get(self._parameterNode.objectId) if state and self._parameterNode else None
        self.ui.cancelButton.enabled = busy
        self.ui.connectButton.enabled = not busy
        self.ui.segmentButton.enabled = not busy and server is not None
        self.ui.propagateButton.enabled = not busy and obj is not None and obj.current is not None
        self.ui.undoButton.enabled = not busy and obj is not None and obj.undo_steps > 0
        self.ui.resetButton.enabled = not busy and obj is not None
        self.ui.acceptButton.enabled = not busy and state is not None and bool(state.objects)
        hasText = server is not None and bool(server.text_task)
        self.ui.textLineEdit.enabled = hasText
        self.ui.textSegmentButton.enabled = hasText and not busy
        self.ui.reportButton.enabled = not busy and server is not None and bool(server.report_task) and obj is not None
        self.updateAssistButtons(busy)

    # --- buttons ---------------------------------------------------------------------------------
    def onConnect(self) -> None:
        url = self._parameterNode.serverUrl

        def done(server):
            self.ui.modelsLabel.setText(", ".join(sorted(server.models)))
            self._status(_("Connected to {name} at {url}").format(name=server.name, url=server.url))

        token = self.ui.serverTokenLineEdit.text.strip()  # not in the parameter node: never saved with the scene
        self._run(_("Connecting to {url} ...").format(url=url), lambda cancelled: self.logic.connect(url, token), done)

    def _ensureSession(self, then) -> None:
        """Upload the chosen volume once (worker), then call `then()` on this thread."""
        p = self._parameterNode
        state = self.logic.state
        if state is not None and state.volume_node_id == (p.inputVolume.GetID() if p.inputVolume else None):
            then()
            return
        if state is not None:
            self.logic.forget()  # another volume: free the old session in the background
        if self._guard(lambda: self.logic.prepare(p.inputVolume, p.segmentation)) is None:
            return
        p.segmentation = slicer.mrmlScene.GetNodeByID(self.logic.state.segmentation_node_id)
        self._run(_("Uploading {name} ...").format(name=p.inputVolume.GetName()), lambda cancelled: self.logic.upload(),
                  lambda sessionId: then())

    def onSegment(self, propagate: Optional[bool]) -> None:
        p = self._parameterNode

        def send():
            prompts = self._guard(lambda: prompt_set(p.inputVolume, p.objectId, p.foregroundPoints, p.backgroundPoints,
                                                     p.boxRoi if p.useBox else None, p.axis))
            if prompts is not None:
                self._send(prompts, p.autoPropagate if propagate is None else propagate)

        self._ensureSession(send)

    def onText(self) -> None:
        p = self._parameterNode

        def send():
            self.logic.set_modality(p.modality)
            prompts = self._guard(lambda: text_prompt(p.textPrompt, self.logic.next_obj_id()))
            if prompts is not None:
                p.objectId = prompts.obj_id
                self._send(prompts, p.autoPropagate)

        self._ensureSession(send)

    def _send(self, prompts: PromptSet, propagate: bool) -> None:
        stop = threading.Event()

        def done(result):
            obj = self.logic.apply(prompts, result)
            self._showAnswer(obj)
            if result.params.get("cancelled"):
                self._status(_("Cancelled: kept {name} on slices {range} ({voxels} voxels).").format(
                    name=obj.name, range=result.params.get("slice_range"), voxels=obj.voxels))

        self._run(
            _("Segmenting {name} ...").format(name=self.logic.name_for(prompts)),
            lambda cancelled: self.logic.send_keeping(prompts, propagate, stop, should_cancel=cancelled),
            done, objId=prompts.obj_id, prompts=prompts, serverCancel=stop,
        )

    def onUndo(self) -> None:
        objId, propagate = self._parameterNode.objectId, self._parameterNode.autoPropagate

        def done(result):
            obj = self.logic.apply_undo(objId, result)
            self._showPrompts(obj.current)
            self._showAnswer(obj)

        self._run(_("Undoing ..."), lambda cancelled: self.logic.send_undo(objId, propagate, cancelled), done, objId)

    def onReset(self) -> None:
        objId = self._parameterNode.objectId

        def done(ids):
            self.logic.apply_reset(ids)
            self._showPrompts(None)
            self._status(_("Object {id} reset.").format(id=objId))

        self._run(_("Resetting ..."), lambda cancelled: self.logic.send_reset([objId]), done)

    def onAccept(self) -> None:
        path = self._guard(self.logic.write_labels)
        if path is not None:
            self._run(_("Saving the label ..."), lambda cancelled: self.logic.save_labels(path),
                      lambda answer: self._status(_("Saved as label '{label}' of image '{image}'.").format(
                          label=answer.get("label", "?"), image=answer.get("image", "?"))))

    def onNewObject(self) -> None:
        nextId = self.logic.next_obj_id() if self.logic.state else self._parameterNode.objectId + 1
        self._parameterNode.objectId = nextId  # onObjectChanged clears the markups

    def onObjectChanged(self, objId: int) -> None:
        state = self.logic.state
        obj = state.objects.get(objId) if state else None
        self._showPrompts(obj.current if obj else None)
        self._updateButtons()

    def _showPrompts(self, prompts: Optional[PromptSet]) -> None:
        """Show an object's prompt set in the markups (empty for a new object)."""
        p = self._parameterNode
        volume = p.inputVolume
        if volume is None:
            return
        show_points(volume, p.foregroundPoints, prompts.foreground if prompts else [])
        show_points(volume, p.backgroundPoints, prompts.background if prompts else [])
        if prompts is None or not prompts.boxes:
            p.boxRoi.RemoveAllControlPoints()


class MedVLSlicerLogic(ScriptedLoadableModuleLogic, InteractiveLogic, AssistLogic):
    """The module's Logic: InteractiveLogic (MedVLSlicerLib) plus the parameter node.

    Usable without the Widget, e.g. from the Python console:

        logic = slicer.util.getModuleLogic("MedVLSlicer")
        logic.connect("http://127.0.0.1:8000"); logic.start(volumeNode)
        logic.segment(prompt_set(volumeNode, 1, foregroundNode))
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        InteractiveLogic.__init__(self)

    def getParameterNode(self):
        return MedVLSlicerParameterNode(super().getParameterNode())

    def createPromptNodes(self, parameterNode) -> None:
        """Make the prompt markups the parameter node lacks: + points, - points, box."""
        scene = slicer.mrmlScene
        specs = (("foregroundPoints", "vtkMRMLMarkupsFiducialNode", "MedVL +", (0.2, 0.9, 0.2)),
                 ("backgroundPoints", "vtkMRMLMarkupsFiducialNode", "MedVL -", (0.9, 0.2, 0.2)),
                 ("boxRoi", "vtkMRMLMarkupsROINode", "MedVL box", (0.9, 0.8, 0.1)))
        for attribute, className, name, color in specs:
            if getattr(parameterNode, attribute) is None:
                node = scene.AddNewNodeByClass(className, name)
                node.CreateDefaultDisplayNodes()
                node.GetDisplayNode().SetSelectedColor(*color)
                setattr(parameterNode, attribute, node)

    def forget(self) -> None:
        """The scene is closing: forget the session here, free it on the server in the
        background (never blocks the GUI), keep the connection."""
        state, client = self.state, self.client
        self._discard()
        if state is not None and state.session_id and client is not None:
            threading.Thread(target=self._dropQuietly, args=(client, state.session_id), daemon=True).start()

    @staticmethod
    def _dropQuietly(client, sessionId) -> None:
        try:
            client.remove_session(sessionId)
        except MedVLSlicerError as error:
            logging.info("MedVLSlicer: could not drop session %s: %s", sessionId, error)


class MedVLSlicerTest(ScriptedLoadableModuleTest):
    """Runs the Logic end to end in a real Slicer.

    Needs a running server for the second test: `medvl serve` (or set MEDVL_SERVER_URL).
    Without one that test fails with the reason; the geometry test needs nothing.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_click_lands_on_voxel()
        self.setUp()
        self.test_segment_lung2_end_to_end()

    def test_click_lands_on_voxel(self):
        self.delayDisplay("Clicks on an oblique, transformed volume")
        checked = selftest.check_click_geometry(slicer.mrmlScene)
        self.delayDisplay(f"{checked} clicks landed on their voxels")

    def test_segment_lung2_end_to_end(self):
        url = os.environ.get("MEDVL_SERVER_URL", "http://127.0.0.1:8000")
        image = os.path.join(REPO_ROOT, "sample_data", "lung2_image.nii.gz")
        label = os.path.join(REPO_ROOT, "sample_data", "lung2_label.nii.gz")
        self.delayDisplay(f"Segmenting lung2 through {url}")
        volume = slicer.util.loadVolume(image)
        labelNode = slicer.util.loadLabelVolume(label)
        truth = (slicer.util.arrayFromVolume(labelNode) > 0).astype("uint8")
        measured = selftest.run_end_to_end(MedVLSlicerLogic(), volume, truth, url)
        self.delayDisplay(f"Measured: {measured}")
        self.assertTrue(measured["clicked_voxel_in_mask"], measured)
        self.assertGreaterEqual(measured["dice"], 0.85, measured)
