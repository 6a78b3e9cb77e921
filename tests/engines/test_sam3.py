"""`sam3` beyond the shared session contract (tests/session runs that on "sam3-random-tiny").

Everything here runs on the tiny RANDOM-weight checkpoint folder (medvl.bench.sam3_tiny_random):
it checks the checkpoint format, where masks and objects go and what is encoded, never
segmentation quality - random weights cannot segment.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medvl.engines.sam3 import build_sam3_engine
from medvl.engines.sam3.checkpoint import inspect_folder
from medvl.engines.sam3.concept import add_concept
from medvl.errors import EngineError
from medvl.session import VolumeSession
from tests.session.conftest import blobs_volume, box_on, tiny_random_sam3_checkpoint

SLICES = 10  # blobs_volume() is (10, 40, 40) (k, j, i)


@pytest.fixture(scope="module")
def folder() -> str:
    return tiny_random_sam3_checkpoint()


def _session(folder, volume, **options) -> VolumeSession:
    session = VolumeSession(build_sam3_engine(folder, threads=1, **options))
    session.set_volume(volume)
    return session


def test_checkpoint_folder_has_the_public_layout(folder):
    from safetensors import safe_open

    config = json.loads(open(f"{folder}/config.json").read())
    assert config["model_type"] == "sam3_video"
    assert config["detector_config"]["model_type"] == "sam3"
    assert config["tracker_config"]["model_type"] == "sam3_tracker_video"
    with safe_open(f"{folder}/model.safetensors", "pt") as f:
        roots = {key.split(".")[0] for key in f.keys()}
    assert roots == {"detector_model", "tracker_model", "tracker_neck"}
    info = inspect_folder(folder)
    assert info.has_text and info.model_type == "sam3_video" and info.weight_bytes > 0


@pytest.mark.parametrize("make, words", [
    (lambda d: None, "has no config.json"),
    (lambda d: (d / "config.json").write_text('{"model_type": "sam2_video"}'), "model_type 'sam2_video'"),
    (lambda d: (d / "config.json").write_text('{"model_type": "sam3_video"}'),
     "(model_type sam3_video) has no weights"),
])
def test_a_wrong_folder_is_one_line_naming_folder_expected_and_found(tmp_path, make, words):
    make(tmp_path)
    with pytest.raises(EngineError) as caught:
        build_sam3_engine(str(tmp_path))
    message = str(caught.value)
    assert words in message and str(tmp_path) in message and "\n" not in message
    assert "config.json with model_type sam3_video" in message, "the expected files are named"


def test_shared_backbone_tracker_matches_the_stock_tracker_load(folder):
    """Our tracker (the video model's own, on the detector's backbone + tracker_neck) answers as
    transformers' Sam3TrackerVideoModel.from_pretrained(folder) does (its key renaming)."""
    from transformers import Sam3TrackerVideoModel

    vol = blobs_volume()
    engine = build_sam3_engine(folder, threads=1)
    state = engine.bind(vol, "k")
    prompt_box = box_on(vol.meta["truth"][0], 4)
    from medvl.engines.base import SlicePrompt

    prompt = SlicePrompt(boxes=[(prompt_box[0][0], prompt_box[0][1], prompt_box[1][0], prompt_box[1][1])])
    ours = engine.segment_slice(state, 4, prompt)
    stock = Sam3TrackerVideoModel.from_pretrained(folder).eval()
    ours_tracker = engine.models.tracker
    try:
        engine.models.tracker = stock
        state2 = engine.bind(vol, "k")
        theirs = engine.segment_slice(state2, 4, prompt)
    finally:
        engine.models.tracker = ours_tracker
    assert np.array_equal(ours.mask, theirs.mask) and ours.score == pytest.approx(theirs.score, abs=1e-5)
    n_ours = sum(p.numel() for p in ours_tracker.parameters())
    assert n_ours == sum(p.numel() for p in stock.parameters()), "same modules, same weights"
    video = engine.models.video
    ours_backbone = {p.data_ptr() for p in ours_tracker.vision_encoder.backbone.parameters()}
    assert ours_backbone == {p.data_ptr() for p in video.detector_model.vision_encoder.backbone.parameters()}, \
        "the ViT backbone is held once, shared by detector and tracker"


def test_text_concept_instances_are_objects_tracked_both_ways(folder):
    vol = blobs_volume()
    s = _session(folder, vol)
    s.add_box(*box_on(vol.meta["truth"][0], 4), obj_id=1)  # a prompted object keeps its id
    found = add_concept(s, "nodule")
    assert 1 <= len(found) <= 3, "the tiny config keeps at most 3 objects"
    ids = [oid for oid, _ in found]
    assert 1 not in ids and len(set(ids)) == len(ids) and s.objects == sorted([1, *ids])
    scores = [inst.score for _, inst in found]
    assert scores == sorted(scores, reverse=True)
    for oid, inst in found:
        assert s.is_whole_mask(oid) and inst.mask.shape == vol.array.shape and inst.mask.dtype == bool
        assert np.array_equal(s.mask(oid), inst.mask)
        assert inst.slices == sorted(np.flatnonzero(inst.mask.any(axis=(1, 2))).tolist())
        assert inst.slices[0] < SLICES // 2 < inst.slices[-1], "tracked on both sides of the middle"
    assert s.stats()["encoder_passes"] == 1 + 2 * SLICES, "the box's slice, then a forward and a backward pass"
    s.undo()
    assert ids[-1] not in s.objects, "each instance is an undoable step"


def test_tracker_only_folder_answers_points_but_not_text(tmp_path):
    from medvl.bench.sam3_tiny_random import write_tiny_random_sam3

    folder = write_tiny_random_sam3(tmp_path / "tracker", tracker_only=True)
    assert json.loads((folder / "config.json").read_text())["model_type"] == "sam3_tracker_video"
    s = _session(str(folder), blobs_volume())
    assert s.add_point((20, 20, 4)).mask.shape == (40, 40)
    with pytest.raises(EngineError, match="has no text model: text concepts need a sam3_video folder"):
        add_concept(s, "nodule")


def test_cli_segments_text_into_one_label_per_instance(folder, tmp_path, capsys):
    from medvl.cli import main

    array = np.full((8, 64, 64), -800, dtype=np.int16)
    array[2:6, 20:40, 24:44] = 60
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, -5.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / "img.nii.gz"))
    out = tmp_path / "labels.nii.gz"
    code = main(["segment", str(tmp_path / "img.nii.gz"), "--out", str(out), "--engine", "sam3",
                 "--checkpoint", folder, "--text", "nodule"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    instances = summary["text"]["instances"]
    assert summary["text"]["language"]["backend"] == "sam3" and instances
    written = sitk.ReadImage(str(out))
    assert np.allclose(written.GetSpacing(), image.GetSpacing(), atol=1e-6)  # NIfTI stores float32
    assert np.allclose(written.GetOrigin(), image.GetOrigin(), atol=1e-6) and written.GetSize() == image.GetSize()
    labels = sitk.GetArrayFromImage(written)
    assert set(np.unique(labels)) - {0} <= {i["obj_id"] for i in instances}
    assert code == 0 and main(["segment", str(tmp_path / "img.nii.gz"), "--out", str(out), "--engine", "sam3",
                               "--checkpoint", str(tmp_path), "--text", "nodule"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no config.json" in err[0] and str(tmp_path) in err[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (the sam3 CUDA path needs one)")
def test_cuda_device_gives_the_same_objects(folder):
    vol = blobs_volume()
    cpu = _session(folder, vol)
    gpu = _session(folder, vol, device="cuda")
    a, b = cpu.add_box(*box_on(vol.meta["truth"][0], 4)), gpu.add_box(*box_on(vol.meta["truth"][0], 4))
    assert (a.mask != b.mask).mean() < 0.02
    assert len(add_concept(gpu, "nodule")) >= 1


def test_concept_and_tracker_features_are_the_same_so_the_cache_is_shared(folder):
    """The concept run caches the tracker features it makes from the detector's backbone; a click
    reuses them, so they must equal what the tracker computes itself."""
    from medvl.engines.sam3.frames import SliceFrames

    engine = build_sam3_engine(folder, threads=1)
    state = engine.bind(blobs_volume(), "k")
    x = SliceFrames(state, "cpu")[4][None]
    models = engine.models
    with torch.no_grad():
        own = models.tracker.get_image_features(x)
        video = models.video.get_vision_features_for_tracker(models.video.detector_model.get_vision_features(
            pixel_values=x))
    for mine, theirs in zip([*own.fpn_hidden_states, *own.fpn_position_encoding], [*video[0], *video[1]]):
        assert torch.allclose(mine, theirs, atol=1e-5)


def test_batch_text_on_sam3_goes_to_its_concept_model(folder, tmp_path):
    """`medvl annotate --engine sam3 --checkpoint DIR --text nodule`: the text goes to SAM 3's concept model
    (not the offline grounding), every instance under the object's label, listed in status.json."""
    from medvl.batch.annotator import Annotator
    from medvl.batch.jobs import BatchSettings, ObjectPrompt, VolumeJob
    from medvl.io import read_mask, write_volume

    vol = blobs_volume()
    write_volume(tmp_path / "blobs.nii.gz", vol)
    settings = BatchSettings(engine="sam3", engine_options={"checkpoint": folder, "threads": 1},
                             objects=(ObjectPrompt("nodule", text="nodule"),))
    status = Annotator(settings).run(VolumeJob("blobs", str(tmp_path / "blobs.nii.gz")), tmp_path / "out")
    assert status["status"] == "ok", status
    (row,) = status["objects"]
    instances = row["method"]["instances"]
    assert row["method"]["method"] == "sam3 concept" and 1 <= len(instances) <= 3
    labels = read_mask(tmp_path / "out" / "blobs" / "labels.nii.gz").array
    assert set(np.unique(labels)) == {0, 1} and int((labels == 1).sum()) <= sum(i["voxels"] for i in instances)
