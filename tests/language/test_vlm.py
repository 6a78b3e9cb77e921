"""VLM adapters on tiny randomly initialised Qwen2.5-VL, Qwen3-VL and Gemma 3 checkpoints in the public
layout (`medvl.bench.vlm_tiny`, no downloads): folder checks, input packing against each family's
processor rules, box formats of each family mapped to exact voxels through a real (forced) model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from medvl.bench import vlm_tiny  # noqa: E402
from medvl.geometry import Geometry  # noqa: E402
from medvl.language.vlm import VLMAdapter, parse_boxes  # noqa: E402
from medvl.language.vlm.backend import VLMConfig  # noqa: E402
from medvl.language.vlm.checkpoint import CheckpointError, check_memory, inspect_checkpoint  # noqa: E402
from medvl.language.vlm.images import key_slices, slice_image  # noqa: E402
from medvl.volume import Volume  # noqa: E402

FAMILIES = list(vlm_tiny.FAMILIES)


@pytest.fixture(scope="module", params=FAMILIES)
def tiny_checkpoint(request, tmp_path_factory):
    family = request.param
    return family, vlm_tiny.write_checkpoint(family, tmp_path_factory.mktemp(family))


@pytest.fixture(scope="module")
def ct_volume():
    rng = np.random.default_rng(0)
    arr = np.full((6, 112, 128), -1000, np.int16)
    arr[:, 5:105, 6:122] = -850 + rng.integers(-30, 30, (6, 100, 116))
    arr[2:5, 30:80, 20:90] = 40
    return Volume(arr, Geometry(spacing=(0.7, 0.7, 5.0)), "CT", "synthetic")


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The Qwen2-VL image processor's resize rule, written out from its published code
    (transformers/models/qwen2_vl/image_processing_qwen2_vl.py, `smart_resize`; Qwen2.5-VL and
    Qwen3-VL use it with factor = patch_size x merge_size): sides rounded to multiples of
    `factor`, then scaled down (floor) or up (ceil) into [min_pixels, max_pixels]."""
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def _expected_seen(family: str, size_wh: tuple[int, int]) -> tuple[int, int]:
    if family == "gemma3":
        return vlm_tiny.GEMMA_SIZE, vlm_tiny.GEMMA_SIZE
    patch = 14 if family == "qwen2_5_vl" else 16
    lo, hi = vlm_tiny.QWEN25_PIXELS if family == "qwen2_5_vl" else vlm_tiny.QWEN3_PIXELS
    h, w = smart_resize(size_wh[1], size_wh[0], patch * 2, lo, hi)
    return w, h


def test_packed_inputs_follow_each_family_processor_rules(tiny_checkpoint, ct_volume):
    family, path = tiny_checkpoint
    adapter = VLMAdapter.from_dir(path)
    assert adapter.family == family
    img = slice_image(ct_volume, 3).image  # 128 x 112
    inputs, seen = adapter.pack([img], "Where is the nodule?")
    ids = inputs["input_ids"][0].tolist()
    tok = adapter.tokenizer
    w, h = _expected_seen(family, img.size)
    assert seen == [(w, h)]
    if family == "gemma3":
        # Gemma3Processor: each <start_of_image> becomes "\n\n" + boi + mm_tokens_per_image soft tokens + eoi + "\n\n"
        proc = transformers.Gemma3Processor(image_processor=adapter.image_processor, tokenizer=tok,
                                            chat_template=tok.chat_template,
                                            image_seq_length=adapter.config.mm_tokens_per_image)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the nodule?"}]}]
        ref = proc(text=[proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)],
                   images=[img], return_tensors="pt")
        assert ids == ref["input_ids"][0].tolist()  # the library's own processor packs the same ids
        assert torch.equal(inputs["pixel_values"], ref["pixel_values"])
        boi = ids.index(tok.convert_tokens_to_ids("<start_of_image>"))
        n = vlm_tiny.GEMMA_MM_TOKENS
        assert ids[boi + 1:boi + 1 + n] == [tok.image_token_id] * n
        assert ids[boi + 1 + n] == tok.convert_tokens_to_ids("<end_of_image>")
        assert tok.decode(ids[boi - 2:boi]) == "\n\n" and tok.decode(ids[boi + 2 + n:boi + 4 + n]) == "\n\n"
        assert ids.count(tok.image_token_id) == n
        assert tuple(inputs["pixel_values"].shape) == (1, 3, h, w)
    else:
        # Qwen: <|vision_start|> + (t*h*w)/merge^2 x <|image_pad|> + <|vision_end|>, grid from smart_resize
        patch = 14 if family == "qwen2_5_vl" else 16
        grid = [1, h // patch, w // patch]
        assert inputs["image_grid_thw"][0].tolist() == grid
        start = ids.index(tok.convert_tokens_to_ids("<|vision_start|>"))
        end = ids.index(tok.convert_tokens_to_ids("<|vision_end|>"))
        pad = tok.convert_tokens_to_ids("<|image_pad|>")
        assert ids[start + 1:end] == [pad] * (grid[0] * grid[1] * grid[2] // 4)
        assert ids.count(pad) == end - start - 1
        assert tuple(inputs["pixel_values"].shape) == (grid[0] * grid[1] * grid[2], 3 * 2 * patch * patch)
        outside = tok.decode(ids[:start + 1] + ids[end:], skip_special_tokens=False)
        assert outside.endswith("Where is the nodule?<|im_end|>\n<|im_start|>assistant\n")
    gen = adapter.generate([img], "Where is the nodule?", max_new_tokens=4)
    assert isinstance(gen.text, str) and gen.seconds > 0


# Box replies in each family's published format, all describing voxels i 16..96, j 28..84 of a 128 x 112 slice:
# - Qwen2.5-VL: absolute pixels of the resized model input, [{"bbox_2d": [x1, y1, x2, y2], "label": ...}] in a
#   ```json fence (Qwen2.5-VL technical report, arXiv 2502.13923: grounding in absolute coordinates of the input;
#   QwenLM/Qwen2.5-VL cookbooks/spatial_understanding.ipynb; roboflow/supervision `from_qwen_2_5_vl` takes the
#   input size to scale them, PR 2015);
# - Qwen3-VL: the same JSON with coordinates relative to the image on a 0..1000 grid (QwenLM/Qwen3-VL
#   cookbooks/2d_grounding.ipynb; supervision's `from_qwen_3_vl` scales by resolution 1000 x 1000, PR 2015);
# - Gemma 3 / MedGemma: "box_2d": [ymin, xmin, ymax, xmax] normalised to 0..1000, the Gemini detection format
#   (ai.google.dev Gemini API docs, "object detection"; supervision's GOOGLE_GEMINI_2_0 parser).
def box_reply(family: str, seen_wh: tuple[int, int]) -> str:
    if family == "qwen2_5_vl":
        sw, sh = seen_wh
        x0, y0, x1, y1 = (16 * sw // 128, 28 * sh // 112, 96 * sw // 128, 84 * sh // 112)
        assert (x0 * 128 / sw, y0 * 112 / sh, x1 * 128 / sw, y1 * 112 / sh) == (16, 28, 96, 84)  # exact on this grid
        return f'```json\n[\n\t{{"bbox_2d": [{x0}, {y0}, {x1}, {y1}], "label": "nodule"}}\n]\n```'
    if family == "qwen3_vl":
        return '```json\n[\n  {"bbox_2d": [125, 250, 750, 750], "label": "nodule"}\n]\n```'
    return '```json\n[\n  {"box_2d": [250, 125, 750, 750], "label": "nodule"}\n]\n```'


@pytest.mark.parametrize("family", FAMILIES)
def test_forced_box_reply_maps_to_the_exact_voxels(family, ct_volume, tmp_path):
    reply = box_reply(family, _expected_seen(family, (128, 112)))
    adapter = VLMAdapter.from_dir(vlm_tiny.write_checkpoint(family, tmp_path / family, reply=reply))
    res = adapter.ground(ct_volume, "nodule", session=None, slices=[3, 2])
    assert res.outputs == {3: reply, 2: reply}  # the real model's greedy answer, on every slice asked
    assert res.box_ijk == ((16, 28, 3), (96, 84, 3))  # the first of equal boxes wins: slice 3


def test_checkpoint_folder_checks_name_folder_files_and_family(tmp_path):
    good = vlm_tiny.write_checkpoint("qwen2_5_vl", tmp_path / "good")
    info = inspect_checkpoint(good)
    assert info.family == "qwen2_5_vl" and info.weight_bytes == sum(
        p.stat().st_size for p in info.weight_files) - sum(8 + _header_len(p) for p in info.weight_files)

    def fails(path, *words):
        with pytest.raises(CheckpointError) as err:
            VLMConfig.from_path(path)
        msg = str(err.value)
        assert "\n" not in msg and str(path) in msg and "preprocessor_config.json" in msg, msg
        for w in words:
            assert w in msg, msg
        return msg

    fails(tmp_path / "absent", "folder not found", "family detected: none")
    bad = tmp_path / "llava"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "llava"}')
    fails(bad, "model_type 'llava'", "family detected: none (model_type 'llava')")
    for missing, words in (("preprocessor_config.json", "preprocessor_config.json missing"),
                           ("tokenizer.json", "tokenizer files missing"), ("model.safetensors", "no weights")):
        folder = vlm_tiny.write_checkpoint("gemma3", tmp_path / f"no-{missing}")
        (folder / missing).unlink()
        fails(folder, words, "family detected: gemma3")
    # mismatched: a Qwen3-VL config over Gemma 3 weights and processor
    mixed = vlm_tiny.write_checkpoint("gemma3", tmp_path / "mixed")
    (mixed / "config.json").write_text((good.parent / "good" / "config.json").read_text()
                                       .replace('"qwen2_5_vl"', '"qwen3_vl"'))
    fails(mixed, "Gemma3ImageProcessor", "not Qwen2VLImageProcessor or Qwen3VLImageProcessor",
          "family detected: qwen3_vl")
    proc = json.loads((mixed / "preprocessor_config.json").read_text())
    proc["image_processor_type"] = "Qwen2VLImageProcessorFast"  # what released Qwen3-VL folders write: accepted
    (mixed / "preprocessor_config.json").write_text(json.dumps(proc))
    fails(mixed, "no visual. tensors", "not qwen3_vl weights")


def test_released_qwen25_processor_name_loads(tmp_path, ct_volume):
    """Qwen/Qwen2.5-VL-*-Instruct's preprocessor_config.json names "Qwen2_5_VLImageProcessor" (gone from
    transformers 5): the folder passes the check and loads, with the same packing."""
    folder = vlm_tiny.write_checkpoint("qwen2_5_vl", tmp_path / "released")
    proc = json.loads((folder / "preprocessor_config.json").read_text())
    proc.update(image_processor_type="Qwen2_5_VLImageProcessor", processor_class="Qwen2_5_VLProcessor")
    (folder / "preprocessor_config.json").write_text(json.dumps(proc))
    adapter = VLMAdapter.from_dir(VLMConfig.from_path(folder).path)
    _, seen = adapter.pack([slice_image(ct_volume, 3).image], "x")
    assert seen == [_expected_seen("qwen2_5_vl", (128, 112))]


def _header_len(path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def test_checkpoint_too_large_for_memory_names_its_size(tmp_path):
    folder = vlm_tiny.write_checkpoint("qwen3_vl", tmp_path / "big")
    info = inspect_checkpoint(folder)
    with pytest.raises(CheckpointError, match=r"needs 0\.\d\d GB for its weights \(F32.*but only 0\.00 GB"):
        check_memory(info, "cpu", available=1000)
    check_memory(info, "cpu", available=10 * info.weight_bytes)  # fits: no error
    # a declared 6 GB tensor (header only, sparse file): the estimate comes from the header, not the file
    header = json.dumps({"model.visual.patch_embed.proj.weight": {"dtype": "BF16", "shape": [50000, 60000],
                                                                  "data_offsets": [0, 6_000_000_000]}}).encode()
    with open(folder / "model.safetensors", "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        f.truncate(8 + len(header) + 6_000_000_000)
    with pytest.raises(CheckpointError, match=r"needs 6\.00 GB for its weights \(BF16"):
        VLMConfig.from_path(folder, available=2_000_000_000)


def test_device_is_checked_and_cuda_without_gpu_is_one_line(tiny_checkpoint):
    from medvl.errors import EngineError

    family, path = tiny_checkpoint
    with pytest.raises(EngineError, match="'tpu' is not one of cpu, cuda"):
        VLMConfig.from_path(path, "tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA device"):
            VLMConfig.from_path(path, "cuda")
    cfg = VLMConfig.from_path(path)
    assert cfg.describe() == {"backend": "vlm", "family": family, "model": path.name, "path": str(path.resolve()),
                              "device": "cpu"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_forced_box_on_cuda(ct_volume, tmp_path):
    reply = box_reply("qwen3_vl", (0, 0))
    cfg = VLMConfig.from_path(vlm_tiny.write_checkpoint("qwen3_vl", tmp_path / "cuda", reply=reply), "cuda")
    from medvl.language.vlm.backend import load_adapter

    adapter = load_adapter(cfg)
    assert adapter.model.device.type == "cuda"
    assert adapter.ground(ct_volume, "nodule", slices=[3]).box_ijk == ((16, 28, 3), (96, 84, 3))


# Outputs in each family's real format (see `box_reply` for the sources).
RECORDED = {
    "qwen2_5_vl": ('```json\n[\n\t{"bbox_2d": [140, 196, 252, 280], "label": "nodule"}\n]\n```', (392, 392)),
    "qwen3_vl": ('```json\n[\n  {"bbox_2d": [357, 500, 643, 714], "label": "nodule"}\n]\n```', (512, 512)),
    "gemma3": ('```json\n[\n  {"box_2d": [500, 357, 714, 643], "label": "nodule"}\n]\n```', (896, 896)),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_parsers_on_recorded_outputs(family):
    text, seen = RECORDED[family]
    (box,) = parse_boxes(text, family, seen, (512, 512))
    # all three describe the same box: x 182.9..329.1, y 256..365.6 in a 512 x 512 slice
    assert box.label == "nodule"
    assert box.x0 == pytest.approx(182.9, abs=0.6) and box.x1 == pytest.approx(329.1, abs=0.6)
    assert box.y0 == pytest.approx(256.0, abs=0.6) and box.y1 == pytest.approx(365.6, abs=0.6)


def test_parser_variants():
    qwen2 = "The nodule is at <|box_start|>(357,500),(643,714)<|box_end|>."
    (b,) = parse_boxes(qwen2, "qwen2_5_vl", (392, 392), (512, 512))
    assert (round(b.x0), round(b.y0)) == (183, 256)
    pali = "<loc0512><loc0365><loc0731><loc0658> nodule"
    (b,) = parse_boxes(pali, "gemma3", (896, 896), (512, 512))
    assert b.label == "nodule" and round(b.y0) == 256 and round(b.x0) == 183
    loose = 'Here: {"bbox_2d": [140, 196, 252, 280]} and some trailing words'
    assert len(parse_boxes(loose, "qwen2_5_vl", (392, 392), (512, 512))) == 1
    assert parse_boxes("none", "qwen3_vl", (512, 512), (512, 512)) == []
    assert parse_boxes('[{"bbox_2d": [10, 10, 10, 50]}]', "qwen3_vl", (512, 512), (512, 512)) == []  # zero width
    with pytest.raises(ValueError, match="unknown model family"):
        parse_boxes("", "llava", (1, 1), (1, 1))


def test_key_slices_spread_and_windowed(ct_volume):
    ks = key_slices(ct_volume, 3)
    assert len(ks) == 3 and all(0 <= k < 6 for k in ks)
    img = slice_image(ct_volume, 3).image
    assert img.size == (128, 112) and img.mode == "RGB"


def test_views_follow_the_question_finding_slices_and_ct_window(ct_volume):
    """Issue 12 item 4: a finding is shown on slices through its mask, a whole-volume question on spread
    body slices; the CT window follows the question's words; MR has no named window."""
    from medvl.language.vlm.images import views_for, window_for

    finding = np.zeros(ct_volume.array.shape, bool)
    finding[4, 40:60, 40:60] = True
    ks, window = views_for(ct_volume, "How large is the nodule?", [finding], count=3)
    assert ks == [4] and window == "lung"  # only the finding's slice
    ks, window = views_for(ct_volume, "Is there a rib fracture?", [], count=3)
    assert len(ks) == 3 and window == "bone"
    assert window_for("any enlarged mediastinal lymph nodes", "CT") == "mediastinum"
    assert window_for("fatty liver?", "CT") == "soft_tissue"
    assert window_for("what is this?", "CT", default="lung") == "lung"
    assert window_for("rib fracture", "MR", default="lung") == "lung"  # MR: percentiles whatever the name
    bone = np.asarray(slice_image(ct_volume, 3, "bone").image)[50, 50, 0]  # 40 HU is darker than mid-grey in a bone window
    lung = np.asarray(slice_image(ct_volume, 3, "lung").image)[50, 50, 0]  # and bright in a lung window
    assert bone < 128 < lung
