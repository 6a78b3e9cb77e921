"""The `sam2` engine's mechanics on a tiny random-weight SAM 2.1 (no checkpoint needed).

Random weights give arbitrary masks, so these tests check what the engine does with
them - which slices are reached, what is encoded or tracked again, what is kept - not
segmentation quality. `stop_at_empty=False` lets every walk reach its end.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sam2.sam2_video_predictor", reason="sam2 is not installed (make installs it; docs/sam2.md)")

from medvl.engines.base import SlicePrompt  # noqa: E402
from medvl.engines.sam2 import build_sam2_engine  # noqa: E402
from medvl.engines.sam2.state import FrameOut  # noqa: E402
from medvl.engines.sam2.tracking import fill_holes, prompt_inputs, square_frame  # noqa: E402
from medvl.errors import PromptError  # noqa: E402

SHAPE = (12, 64, 64)  # (k, j, i)
CLICK = SlicePrompt(points=[(32.0, 32.0)], labels=[1])


def make_engine(**options):
    return build_sam2_engine(random_tiny=True, image_size=64, threads=1, stop_at_empty=False, **options)


@pytest.fixture(scope="module")
def engine():
    return make_engine()


@pytest.fixture
def volume(synthetic_volume):
    return synthetic_volume(shape_kji=SHAPE, radius=5.0)


def prompt_and_propagate(engine, state, prompts: dict[int, SlicePrompt], obj_id=1, should_stop=None):
    seeds = {i: engine.segment_slice(state, i, p, obj_id=obj_id).mask for i, p in prompts.items()}
    return dict(engine.propagate(state, seeds, prompts, should_stop, obj_id=obj_id))


def test_one_prompt_reaches_both_directions(engine, volume):
    state = engine.bind(volume, "k")
    order = [i for i, _ in engine.propagate(state, {5: engine.segment_slice(state, 5, CLICK).mask}, {5: CLICK})]
    assert sorted(order) == [i for i in range(SHAPE[0]) if i != 5]
    assert order[:2] == [4, 6]  # the two directions interleave
    masks = prompt_and_propagate(engine, state, {5: CLICK})
    assert all(m.shape == SHAPE[1:] and m.dtype == bool for m in masks.values())


def test_prompts_on_several_slices_split_the_gap(engine, volume):
    state = engine.bind(volume, "k")
    masks = prompt_and_propagate(engine, state, {2: CLICK, 9: CLICK})
    assert sorted(masks) == [0, 1, 3, 4, 5, 6, 7, 8, 10, 11]
    origin = {i: base.run.origin for i, base in state.objects[1].layout.items()}
    assert [origin[i] for i in (0, 1, 3, 4, 5)] == [2] * 5  # slices nearer slice 2 walk from it
    assert [origin[i] for i in (6, 7, 8, 10, 11)] == [9] * 5


def test_encoder_runs_once_per_slice_per_session(engine, volume):
    state = engine.bind(volume, "k")
    prompt_and_propagate(engine, state, {5: CLICK})
    assert engine.stats(state)["encoder_passes"] == SHAPE[0]
    prompt_and_propagate(engine, state, {5: CLICK, 9: SlicePrompt([(20.0, 20.0)], [0])})  # correction
    prompt_and_propagate(engine, state, {3: SlicePrompt(boxes=[(10, 10, 40, 40)])}, obj_id=2)  # second object
    assert engine.stats(state)["encoder_passes"] == SHAPE[0]


def test_correction_retracks_only_the_walks_from_the_corrected_slice(engine, volume):
    state = engine.bind(volume, "k")
    first = prompt_and_propagate(engine, state, {5: CLICK})
    steps = engine.stats(state)["track_steps"]
    assert steps == SHAPE[0] - 1
    fix = SlicePrompt([(20.0, 20.0)], [0])
    second = prompt_and_propagate(engine, state, {5: CLICK, 8: fix})
    # new walks: 8 -> 7 (the gap 6..7 is split at 6) and 8 -> 9, 10, 11; the rest is kept
    assert engine.stats(state)["track_steps"] - steps == 4
    for i in (0, 1, 2, 3, 4, 6):
        assert np.array_equal(first[i], second[i])
    # the correction refined the propagated mask with its memory (obj_id given)
    assert state.objects[1].bases[8] is not None and state.objects[1].bases[8].run.origin == 5


def test_undo_of_a_correction_recomputes_nothing(engine, volume):
    state = engine.bind(volume, "k")
    first = prompt_and_propagate(engine, state, {5: CLICK})
    prompt_and_propagate(engine, state, {5: CLICK, 8: SlicePrompt([(20.0, 20.0)], [0])})
    before = engine.stats(state)
    seeds = {5: engine.segment_slice(state, 5, CLICK, obj_id=1).mask}
    again = dict(engine.propagate(state, seeds, {5: CLICK}, obj_id=1))
    after = engine.stats(state)
    assert (after["track_steps"], after["decoder_calls"]) == (before["track_steps"], before["decoder_calls"])
    assert all(np.array_equal(first[i], again[i]) for i in first)


def test_objects_are_independent(engine, volume):
    state = engine.bind(volume, "k")
    one = prompt_and_propagate(engine, state, {5: CLICK}, obj_id=1)
    prompt_and_propagate(engine, state, {7: SlicePrompt(boxes=[(8, 8, 30, 30)])}, obj_id=2)
    assert set(state.objects) == {1, 2}
    steps = engine.stats(state)["track_steps"]
    again = prompt_and_propagate(engine, state, {5: CLICK}, obj_id=1)
    assert engine.stats(state)["track_steps"] == steps  # object 1's walks were kept
    assert all(np.array_equal(one[i], again[i]) for i in one)
    assert state.objects[2].layout[0].run.origin == 7


def test_without_obj_id_a_prompt_starts_fresh(engine, volume):
    state = engine.bind(volume, "k")
    prompt_and_propagate(engine, state, {5: CLICK}, obj_id=None)
    engine.segment_slice(state, 8, SlicePrompt([(20.0, 20.0)], [0]))
    assert state.objects[None].bases[8] is None


def test_cancel_stops_between_slices_and_resumes_without_rework(engine, volume):
    state = engine.bind(volume, "k")
    seeds = {5: engine.segment_slice(state, 5, CLICK).mask}
    calls = []
    partial = list(engine.propagate(state, seeds, {5: CLICK}, should_stop=lambda: len(calls.append(1) or calls) > 3))
    assert len(partial) == 3
    done = engine.stats(state)["track_steps"]
    rest = list(engine.propagate(state, seeds, {5: CLICK}))
    assert len(rest) == SHAPE[0] - 1
    assert engine.stats(state)["track_steps"] == done + (SHAPE[0] - 1 - 3)


def test_features_stay_inside_the_byte_budget(engine, volume):
    probe = engine.bind(volume, "k")
    engine.segment_slice(probe, 0, CLICK)
    per_slice = probe.features.bytes  # the three FPN levels of one slice
    small = make_engine(cache_bytes=3 * per_slice)
    state = small.bind(volume, "k")
    prompt_and_propagate(small, state, {5: CLICK})
    stats = small.stats(state)
    assert stats["cache_bytes"] <= 3 * per_slice and stats["cache_entries"] == 3
    assert stats["cache_evictions"] == SHAPE[0] - 3
    assert stats["cache_bytes"] == state.features.bytes


def test_empty_mask_ends_a_walk(volume, monkeypatch):
    eng = build_sam2_engine(random_tiny=True, image_size=64, threads=1, stop_at_empty=True)
    step = eng._step

    def empty_from_slice_8(state, index, **kw):
        out = step(state, index, **kw)
        if index >= 8 and not kw.get("conditioning"):
            out = FrameOut(out.maskmem_features, out.pred_masks * 0 - 10, out.obj_ptr, out.object_score_logits, 0.0)
        return out

    monkeypatch.setattr(eng, "_step", empty_from_slice_8)
    state = eng.bind(volume, "k")
    prompt = SlicePrompt(boxes=[(16, 16, 48, 48)])
    masks = {}
    seeds = {5: eng.segment_slice(state, 5, prompt).mask}
    for i, m in eng.propagate(state, seeds, {5: prompt}):
        masks[i] = m
    assert all(i < 8 for i in masks)
    assert state.track_steps <= SHAPE[0] - 1 - 3  # slices 9..11 were never tracked


def test_mask_prompt_is_taken_as_the_slice_mask(engine, volume):
    state = engine.bind(volume, "k")
    mask = np.zeros(SHAPE[1:], dtype=bool)
    mask[20:44, 16:40] = True
    result = engine.segment_mask(state, 6, mask)
    iou = (result.mask & mask).sum() / (result.mask | mask).sum()
    assert iou > 0.9
    masks = dict(engine.propagate(state, {6: mask}, {}))  # a seed without prompt conditions on its mask
    assert sorted(masks) == [i for i in range(SHAPE[0]) if i != 6]


def test_slices_along_i_keep_their_grid(engine, volume):
    state = engine.bind(volume, "i")  # slices are (k rows, j cols) = (12, 64)
    result = engine.segment_slice(state, 30, SlicePrompt(points=[(32.0, 6.0)], labels=[1]))
    assert result.mask.shape == (SHAPE[0], SHAPE[1])
    assert 0.0 <= result.score <= 1.0


def test_bad_prompts_are_refused(engine, volume):
    state = engine.bind(volume, "k")
    with pytest.raises(PromptError, match="empty prompt"):
        engine.segment_slice(state, 3, SlicePrompt())
    with pytest.raises(PromptError, match="outside 0..11"):
        engine.segment_slice(state, 12, CLICK)
    with pytest.raises(PromptError, match="labels"):
        engine.segment_slice(state, 3, SlicePrompt(points=[(1.0, 1.0)], labels=[]))
    with pytest.raises(PromptError, match="does not fit"):
        engine.segment_mask(state, 3, np.zeros((5, 5), dtype=bool))


def test_box_then_points_become_sam2_point_inputs():
    frame = square_frame(rows=32, cols=64, size=64)
    inputs = prompt_inputs(frame, SlicePrompt(points=[(10.0, 4.0)], labels=[0], boxes=[(0, 0, 63, 31)]))
    assert inputs["point_labels"].tolist() == [[2, 3, 0]]
    coords = inputs["point_coords"][0].tolist()
    assert coords[0] == pytest.approx([0.0, 0.0]) and coords[1] == pytest.approx([63.0, 63.0])
    assert coords[2] == pytest.approx([10.0, 8.5])  # row 4 of 32 -> pixel centre 4.5 * 2 - 0.5


def test_fill_holes_fills_only_small_background_islands():
    import torch

    logits = torch.full((1, 1, 16, 16), -5.0)
    logits[0, 0, 2:14, 2:14] = 5.0
    logits[0, 0, 4:6, 4:6] = -5.0  # 4-pixel hole
    logits[0, 0, 7:12, 7:12] = -5.0  # 25-pixel hole
    out = fill_holes(logits, max_area=8)
    assert (out[0, 0, 4:6, 4:6] > 0).all()
    assert (out[0, 0, 7:12, 7:12] < 0).all()
    assert (out[0, 0, 0, 0] < 0)


def test_one_click_matches_the_stock_video_predictor(volume, monkeypatch):
    """From one click, our walks equal sam2's own init_state / add_new_points_or_box /
    propagate_in_video forward then reverse (MedSAM2's 3D inference), fed the same frames."""
    import sam2.sam2_video_predictor as stock_module
    import torch

    from medvl.engines.sam2.tracking import model_input
    from medvl.intensity import to_unit
    from medvl.slicing import take_slice

    eng = make_engine(fill_hole_area=0)  # the stock hole filling needs the absent CUDA extension
    state = eng.bind(volume, "k")
    seed = eng.segment_slice(state, 4, CLICK)
    ours = dict(eng.propagate(state, {4: seed.mask}, {4: CLICK}))

    frames = torch.cat([model_input(state.frame, to_unit(take_slice(volume.array, "k", i), state.bounds))
                        for i in range(SHAPE[0])])
    monkeypatch.setattr(stock_module, "load_video_frames", lambda **kw: (frames, SHAPE[1], SHAPE[2]))
    predictor, stock = eng.model, {}
    with torch.inference_mode():
        for reverse in (False, True):
            video = predictor.init_state(video_path="in-memory")
            _, _, logits = predictor.add_new_points_or_box(video, 4, 1, points=[list(CLICK.points[0])], labels=[1])
            assert np.array_equal((logits[0, 0] > 0).numpy(), seed.mask)
            for index, _, logits in predictor.propagate_in_video(video, start_frame_idx=4, reverse=reverse):
                stock[index] = (logits[0, 0] > 0).numpy()
    assert all(np.array_equal(ours[i], stock[i]) for i in ours) and sorted(ours) == sorted(set(stock) - {4})
