"""The Slicer side against the real MONAI Label server (the server tests' `server` fixture):
markups on real MRML nodes -> geometry -> client -> server -> masks back into segments.

One full propagation (the Dice check, the same code the module's Test runs in Slicer);
the other flows use the prompted slice only (`propagate=False`) to stay quick on CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from MedVLSlicerLib import masks, protocol, selftest
from MedVLSlicerLib.errors import ServerError
from MedVLSlicerLib.geometry import ijk_to_world, volume_ijk_to_world
from MedVLSlicerLib.logic import InteractiveLogic
from MedVLSlicerLib.prompts import PromptSet, point_prompt


pytestmark = [pytest.mark.server, pytest.mark.slow]


def fiducials(scene, volume, voxels, name):
    """A fiducial node with points at the world centres of `voxels` (ITK (i, j, k))."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    for p in ijk_to_world(voxels, volume_ijk_to_world(volume)):
        node.AddControlPoint(*p)
    return node


def server_mask(logic, prompts: PromptSet) -> np.ndarray:
    """The server's full current mask of an object (same prompt set again: it changes nothing)."""
    params = dict(prompts.params(), label=logic.state.objects[prompts.obj_id].name, propagate=False, crop=False,
                  medvl_session=logic.state.generation)
    result = logic.client.infer(protocol.INTERACTIVE_TASK, params, session_id=logic.state.session_id)
    assert result.params["action"] == "none", result.params
    array, _ = masks.read_mask_bytes(result.mask, result.mask_name)
    return array


def segment_of(logic, obj_id):
    volume, segmentation = logic.nodes()
    return masks.segment_array(segmentation, logic.state.objects[obj_id].segment_id, volume)


def test_lung2_click_to_3d_segment_dice(server, lung2):
    """One foreground click through the full client path (the module Test's own check)."""
    volume, truth = lung2
    measured = selftest.run_end_to_end(InteractiveLogic(), volume, truth, server.url)
    print("end-to-end:", measured)
    assert measured["clicked_voxel_in_mask"], measured
    assert measured["dice"] >= 0.85, measured
    assert {"pre", "infer", "total", "round_trip"} <= set(measured["latencies"])


def test_correction_undo_expiry_and_accept_stay_in_step_with_the_server(server, lung2, mrml_scene):
    volume, truth = lung2
    logic = InteractiveLogic()
    logic.connect(server.url)
    logic.start(volume)
    click = selftest.label_click(truth)
    fg = fiducials(mrml_scene, volume, [click], "fg")
    first = point_prompt(volume, fg, None, obj_id=1)
    assert first.foreground == [click]  # the click lands exactly

    obj = logic.segment(first, propagate=False)
    seg = segment_of(logic, 1)
    assert seg[click[2], click[1], click[0]] == 1
    assert set(np.nonzero(seg.any(axis=(1, 2)))[0]) == {click[2]}  # the prompted slice only
    np.testing.assert_array_equal(seg, server_mask(logic, first))

    # a correction: a background click on the far edge of the tumour on that slice
    j, i = np.nonzero(truth[click[2]])
    far = int(np.argmax((i - click[0]) ** 2 + (j - click[1]) ** 2))
    bg = fiducials(mrml_scene, volume, [[int(i[far]), int(j[far]), click[2]]], "bg")
    second = point_prompt(volume, fg, bg, obj_id=1)
    logic.segment(second, propagate=False)
    assert logic.state.last_answer["action"] == "add"
    np.testing.assert_array_equal(segment_of(logic, 1), server_mask(logic, second))  # crop (or no change) pasted right

    logic.undo(1, propagate=False)
    assert logic.state.last_answer["action"] == "undo" and obj.current == first  # the server's set
    np.testing.assert_array_equal(segment_of(logic, 1), server_mask(logic, first))

    # the server forgets the upload: the next prompt re-uploads and still answers
    logic.client.remove_session(logic.state.session_id)
    logic.segment(second, propagate=False)
    assert logic.state.uploads == 2 and logic.state.recoveries == 1
    np.testing.assert_array_equal(segment_of(logic, 1), server_mask(logic, second))

    # the engine session we name is gone (410): replayed on the live upload, no new upload
    logic.state.generation = "0badc0ffee00"
    logic.segment(first, propagate=False)
    assert logic.state.uploads == 2 and logic.state.recoveries == 2
    np.testing.assert_array_equal(segment_of(logic, 1), server_mask(logic, first))

    # accept: saved in the datastore, read back with the volume's grid and our labels
    answer = logic.accept()
    saved, matrix = masks.read_mask_bytes(logic.client.download_label(answer["label"]), "label.nrrd")
    assert masks.crop_offset(volume, saved.shape, matrix) == (0, 0, 0)
    np.testing.assert_array_equal(saved, logic.labels())
    logic.end()


def test_server_refusals_reach_the_user_with_their_reason(server, lung2):
    volume, _ = lung2
    logic = InteractiveLogic()
    logic.connect(server.url)
    logic.start(volume)
    with pytest.raises(ServerError, match=r"400 .*outside the volume"):
        logic.send(PromptSet(obj_id=1, foreground=[[600, 10, 10]]), propagate=False)
    with pytest.raises(ServerError, match=r"404 .*unknown model 'no_such_task'"):
        logic.client.infer("no_such_task", {}, session_id=logic.state.session_id)
    assert "medvl_interactive" in logic.client.models()  # still up
    logic.end()


def test_progress_and_cancel_of_a_running_propagation(server, lung2):
    """The module's progress line and Cancel: slices reported while a body-wide box propagates,
    then the server stops the request at its next slice (409, the slices done are kept)."""
    import threading
    import time

    from MedVLSlicerLib.client import MedVLClient

    client = MedVLClient(server.url, client_id="slicer-progress")
    logic = InteractiveLogic()
    logic.client = client
    answer = {}

    def run():
        try:
            answer["result"] = client.infer(protocol.INTERACTIVE_TASK, {"boxes": [[[40, 60, 30], [470, 440, 30]]],
                                                                        "label": "body"}, image_id="lung2_image")
        except ServerError as error:
            answer["error"] = error

    worker = threading.Thread(target=run)
    worker.start()
    report, deadline = None, time.monotonic() + 300
    while time.monotonic() < deadline and worker.is_alive():
        report = logic.progress()
        if report and report.get("slices_done", 0) >= 2:
            break
        time.sleep(0.3)
    assert report and report["state"] == "running" and report["slices_done"] >= 2, report
    assert logic.cancel_running() is True
    worker.join(120)
    assert not worker.is_alive()
    error = answer.get("error")
    assert error is not None and error.status == 409 and "kept" in error.reason, answer
    assert logic.progress()["state"] == "cancelled"
