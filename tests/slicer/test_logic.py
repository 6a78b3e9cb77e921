"""InteractiveLogic on real MRML nodes (slicer-core, the real lung2 CT) with a stand-in client.

The stand-in answers like the server does (whole prompt sets in, full masks or changed-box
crops out, generations, expired sessions) but instantly, from the expert label, so these
tests pin down the Logic's bookkeeping: history, undo, crops, recovery, reset, accept. The
same flows against the real server are in test_server.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from MedVLSlicerLib import masks
from MedVLSlicerLib.client import InferResult
from MedVLSlicerLib.errors import MedVLSlicerError, PromptError, SessionExpiredError
from MedVLSlicerLib.logic import InteractiveLogic
from MedVLSlicerLib.prompts import PromptSet
from MedVLSlicerLib.selftest import label_click


def grid_file(array_kji, volume, offset_ijk, path) -> bytes:
    """NRRD bytes of `array_kji` placed at voxel `offset_ijk` of `volume`'s grid."""
    import slicer
    import vtk

    node = slicer.vtkMRMLLabelMapVolumeNode()
    slicer.util.updateVolumeFromArray(node, array_kji.astype(np.uint8))
    node.CopyOrientation(volume)
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    node.SetOrigin(*m.MultiplyPoint([float(v) for v in offset_ijk] + [1.0])[:3])
    return open(masks.write_volume_file(node, str(path)), "rb").read()


class StandInClient:
    """MedVLClient's API, answered from `truth`: any positive prompt -> the label, minus the
    k slice of each background click; an empty prompt set -> nothing. Like the server, it
    keeps each object's prompt sets, echoes the one it holds (`prompt_set`) and undoes
    (`undo: 1`: back to the set before)."""

    server_url = "http://stand-in"
    client_id = "stand-in"

    def __init__(self, volume, truth, tmp_path):
        self.volume, self.truth, self.tmp = volume, truth.astype(np.uint8), tmp_path
        self.session, self.generation = "", "g1"  # live upload session and engine generation
        self.uploads, self.requests, self.saved, self.touched = [], [], [], 0
        self.masks = {}  # obj_id -> last mask sent, what a crop is relative to
        self.sets = {}  # obj_id -> prompt sets held, oldest first (the server's history)

    def info(self):
        return {"name": "stand-in", "labels": ["lesion"], "models": {"medvl_interactive": {}, "medvl_report": {}}}

    def create_session(self, path, expiry_s=3600):
        self.uploads.append(path)
        self.session = f"s{len(self.uploads)}"
        return self.session

    def touch_session(self, session_id):
        self.touched += 1
        if session_id != self.session:
            raise SessionExpiredError(404, f"Session ({session_id}) Not Found", "/session/")
        return {}

    def remove_session(self, session_id):
        self.session = ""

    def infer(self, model, params, image_id="", session_id="", should_cancel=None):
        self.requests.append(dict(params))
        if session_id != self.session:
            raise SessionExpiredError(400, "no image (an expired session_id leaves no image; create a new session)")
        if params.get("medvl_session") not in (None, self.generation):
            raise SessionExpiredError(410, "session is gone: expired after 1800 s idle")
        if model == "medvl_report":
            return InferResult({"report": "1 lesion, right upper lobe", "session": {"medvl_session": self.generation}})
        obj = params["obj_id"]
        held = self.sets.setdefault(obj, [])
        if params.get("undo"):
            held.pop()
            action = "undo"
        else:
            wanted = {key: params.get(key) or [] for key in ("foreground", "background", "boxes")}
            if not held or held[-1] != wanted:
                held.append(wanted)
            action = "add"
        now = held[-1] if held else {"foreground": [], "background": [], "boxes": []}
        mask = self.truth.copy() if now["foreground"] or now["boxes"] else np.zeros_like(self.truth)
        for i, j, k in now["background"]:
            mask[k] = 0
        before, self.masks[obj] = self.masks.get(obj, np.zeros_like(mask)), mask
        steps = sum(len(v) for v in now.values())
        info = {"session": {"medvl_session": self.generation}, "latencies": {"total": 0.02, "infer": 0.01},
                "voxels": int(mask.sum()), "action": action,
                "prompt_set": dict(now, axis=params.get("axis", "k"), undo_steps=steps, whole_mask=False)}
        n = len(self.requests)
        if params.get("crop"):
            changed = np.argwhere(before != mask)
            if len(changed) == 0:
                return InferResult(dict(info, changed=False))
            (k0, j0, i0), (k1, j1, i1) = changed.min(axis=0), changed.max(axis=0)
            crop = mask[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1]
            info.update(changed=True, crop={"offset_ijk": [int(i0), int(j0), int(k0)]})
            return InferResult(info, grid_file(crop, self.volume, (i0, j0, k0), self.tmp / f"c{n}.nrrd"), "c.nrrd", 0.02)
        return InferResult(info, grid_file(mask, self.volume, (0, 0, 0), self.tmp / f"m{n}.nii.gz"), "m.nii.gz", 0.02)

    def has_image(self, image_id):
        return any(entry[:2] == ("image", image_id) for entry in self.saved)

    def upload_image(self, path, image_id):
        self.saved.append(("image", image_id, path))
        return image_id

    def save_label(self, image_id, path, tag="final", params=None):
        self.saved.append(("label", image_id, path, tag, params))
        return {"image": image_id, "label": image_id}


@pytest.fixture
def session(lung2, tmp_path):
    """(logic, stand-in client, volume node, truth) with the volume uploaded."""
    volume, truth = lung2
    stand_in = StandInClient(volume, truth, tmp_path)
    logic = InteractiveLogic(client_factory=lambda url: stand_in)
    logic.connect("http://stand-in")
    logic.start(volume)
    yield logic, stand_in, volume, truth
    logic.end()


def segment_of(logic, obj_id):
    volume, segmentation = logic.nodes()
    return masks.segment_array(segmentation, logic.state.objects[obj_id].segment_id, volume)


def test_points_then_correction_then_undo(session):
    logic, stand_in, volume, truth = session
    click = label_click(truth)
    first = PromptSet(obj_id=1, foreground=[click])
    obj = logic.segment(first)
    np.testing.assert_array_equal(segment_of(logic, 1), truth)
    assert obj.name == f"point ({click[0]}, {click[1]}, {click[2]})" and obj.voxels == truth.sum()
    assert stand_in.requests[-1]["crop"] is False  # a new object: full mask

    k_cut = int(np.nonzero(truth.any(axis=(1, 2)))[0][0])  # the label's first slice
    second = PromptSet(obj_id=1, foreground=[click], background=[[0, 0, k_cut]])
    logic.segment(second)
    sent = stand_in.requests[-1]
    assert sent["crop"] is True and sent["medvl_session"] == "g1"
    assert sent["foreground"] == [click] and sent["background"] == [[0, 0, k_cut]]  # the whole set, every time
    expected = truth.copy()
    expected[k_cut] = 0
    np.testing.assert_array_equal(segment_of(logic, 1), expected)  # the crop was pasted in place

    logic.undo(1)
    assert stand_in.requests[-1]["undo"] == 1  # the server undoes: it holds the history
    np.testing.assert_array_equal(segment_of(logic, 1), truth)
    assert logic.state.objects[1].current == first and logic.state.objects[1].undo_steps == 1
    assert logic.state.latencies["total"] == 0.02 and logic.state.latencies["round_trip"] == 0.02


def test_unchanged_crop_answer_keeps_the_segment(session):
    logic, stand_in, _, truth = session
    prompts = PromptSet(obj_id=1, foreground=[label_click(truth)])
    logic.segment(prompts, propagate=False)
    logic.segment(prompts, propagate=True)  # Propagate: same set again, nothing changes here
    assert stand_in.requests[-1]["propagate"] is True and stand_in.requests[-1]["crop"] is True
    np.testing.assert_array_equal(segment_of(logic, 1), truth)
    assert logic.state.objects[1].current == prompts and logic.state.objects[1].undo_steps == 1


def test_expired_upload_is_re_created_and_other_objects_replayed(session):
    logic, stand_in, _, truth = session
    click = label_click(truth)
    logic.segment(PromptSet(obj_id=1, foreground=[click]))
    logic.segment(PromptSet(obj_id=2, foreground=[click], axis="j"))
    stand_in.session = ""  # the server forgot the uploaded volume
    stand_in.generation = "g2"
    obj = logic.segment(PromptSet(obj_id=2, foreground=[click], background=[[1, 1, 1]], axis="j"))
    assert len(stand_in.uploads) == 2 and logic.state.recoveries == 1
    replay, retry = stand_in.requests[-2], stand_in.requests[-1]
    assert replay["obj_id"] == 1 and replay["propagate"] is False and "medvl_session" not in replay
    assert retry["obj_id"] == 2 and retry["crop"] is False and retry["medvl_session"] == "g2"
    assert obj.voxels == stand_in.masks[2].sum() and logic.state.generation == "g2"


def test_lost_engine_session_is_replayed_without_upload(session):
    logic, stand_in, _, truth = session
    logic.segment(PromptSet(obj_id=1, foreground=[label_click(truth)]))
    stand_in.generation = "g-new"  # evicted on the server: our generation is stale -> 410
    logic.segment(PromptSet(obj_id=1, foreground=[label_click(truth)], background=[[2, 2, 2]]))
    assert len(stand_in.uploads) == 1 and logic.state.recoveries == 1
    assert "medvl_session" not in stand_in.requests[-1]


def test_cancelled_answer_makes_the_next_one_full(session):
    logic, stand_in, _, truth = session
    logic.segment(PromptSet(obj_id=1, foreground=[label_click(truth)]))
    logic.discard(1)  # the Widget discarded an answer: the server may be ahead of the segment
    logic.segment(PromptSet(obj_id=1, foreground=[label_click(truth)], background=[[3, 3, 3]]))
    assert stand_in.requests[-1]["crop"] is False


def test_reset_clears_server_and_segment(session):
    logic, stand_in, _, truth = session
    logic.segment(PromptSet(obj_id=1, foreground=[label_click(truth)]))
    segment_id = logic.state.objects[1].segment_id
    logic.reset(1)
    assert stand_in.requests[-1]["reset_state"] is True and stand_in.requests[-1]["foreground"] == []
    assert 1 not in logic.state.objects
    _, segmentation = logic.nodes()
    assert segmentation.GetSegmentation().GetSegment(segment_id) is None


def test_accept_stores_image_once_and_labels_by_object(session, slicer_mod):
    logic, stand_in, volume, truth = session
    click = label_click(truth)
    logic.segment(PromptSet(obj_id=1, foreground=[click]))
    logic.segment(PromptSet(obj_id=2, foreground=[click], background=[[0, 0, click[2]]]))  # obj 2 lacks slice k
    logic.accept()
    logic.accept()
    kinds = [entry[0] for entry in stand_in.saved]
    assert kinds == ["image", "label", "label"]
    _, image_id, path, tag, params = stand_in.saved[-1]
    assert image_id == f"lung2-{masks.content_digest(volume)}" and tag == "final"
    assert params["label_names"]["2"].startswith("point")
    node = slicer_mod.vtkMRMLLabelMapVolumeNode()
    storage = slicer_mod.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(path)
    assert storage.ReadData(node)
    saved = slicer_mod.util.arrayFromVolume(node)
    expected = truth.astype(np.uint8) * 2  # object 2 is written after object 1
    expected[click[2]][truth[click[2]] > 0] = 1
    np.testing.assert_array_equal(saved, expected)
    assert masks.crop_offset(volume, saved.shape, masks._matrix(node)) == (0, 0, 0)  # the volume's grid


def test_keepalive_touches_when_idle_and_notices_expiry(session):
    logic, stand_in, _, _ = session
    assert logic.keepalive() and stand_in.touched == 0  # just uploaded: nothing to do
    assert logic.keepalive(force=True) and stand_in.touched == 1
    stand_in.session = ""
    assert not logic.keepalive(force=True) and logic.state.session_id == ""


def test_report_and_names(session):
    logic, stand_in, _, truth = session
    click = label_click(truth)
    logic.segment(PromptSet(obj_id=1, foreground=[click]))
    assert logic.name_for(PromptSet(obj_id=2, foreground=[click])).endswith("#2")  # same name, made unique
    assert logic.apply_report(logic.send_report()) == "1 lesion, right upper lobe"
    assert logic.next_obj_id() == 2


def test_calls_in_the_wrong_state_say_what_to_do(lung2):
    volume, _ = lung2
    logic = InteractiveLogic()
    with pytest.raises(MedVLSlicerError, match="no session: choose a volume and press Segment"):
        logic.undo(1)
    with pytest.raises(PromptError, match="loaded volume"):
        logic.prepare(None)
    logic.prepare(volume)
    with pytest.raises(MedVLSlicerError, match="not connected: press Connect"):
        logic.upload()
    logic.end()
    stand_in = StandInClient(volume, np.zeros((1, 1, 1)), None)
    stand_in.info = lambda: {"models": {"other_model": {}}}
    with pytest.raises(MedVLSlicerError, match="not 'medvl_interactive'.*medvl serve"):
        InteractiveLogic(client_factory=lambda url: stand_in).connect("http://x")


def test_text_prompt_needs_a_text_task(session):
    logic, _, _, _ = session
    with pytest.raises(PromptError, match="no text task"):
        logic.send(PromptSet(obj_id=1, text="the tumour"))


def test_modality_selector_goes_with_text_and_report_requests(session):
    logic, stand_in, _, truth = session
    import dataclasses

    logic.server = dataclasses.replace(logic.server, text_task="medvl_text")  # the stand-in answers it too
    logic.set_modality("MR")
    logic.send(PromptSet(obj_id=1, text="the lesion"))
    assert stand_in.requests[-1]["modality"] == "MR"
    logic.send_report()
    assert stand_in.requests[-1]["modality"] == "MR"
    logic.set_modality("auto")  # the selector's default: the server reads the modality from the image
    logic.send(PromptSet(obj_id=1, text="the lesion"))
    assert "modality" not in stand_in.requests[-1]
    logic.send(PromptSet(obj_id=2, foreground=[label_click(truth)]))  # clicks carry no modality
    assert "modality" not in stand_in.requests[-1]
    with pytest.raises(PromptError, match="modality 'PET' is not one of auto, CT, MR"):
        logic.set_modality("PET")
