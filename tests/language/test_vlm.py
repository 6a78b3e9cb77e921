"""VLM adapters on tiny randomly initialised Qwen2.5-VL, Qwen3-VL and Gemma 3 checkpoints built
here (no downloads): save -> VLMAdapter.from_dir -> input packing -> generation; the box
parsers on outputs in each family's real format; box -> voxel -> session propagation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from medvl.geometry import Geometry  # noqa: E402
from medvl.language.vlm import VLMAdapter, parse_boxes  # noqa: E402
from medvl.language.vlm.adapter import _image_processor_class  # noqa: E402
from medvl.language.vlm.images import key_slices, slice_image  # noqa: E402
from medvl.volume import Volume  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>", "<|box_start|>", "<|box_end|>", "<start_of_image>", "<end_of_image>",
            "<image_soft_token>", "<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"]
CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;[]{}()\"'_-\n<>|/?!")
VOCAB = {t: i for i, t in enumerate(SPECIALS + CHARS)}

QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
                 "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")
GEMMA_TEMPLATE = ("<bos>{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{% for c in m['content'] %}"
                  "{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
                  "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def _tokenizer(family: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens(SPECIALS)
    if family == "gemma3":
        extra = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<end_of_turn>",
                                      pad_token="<pad>", extra_special_tokens=extra)
        tok.chat_template = GEMMA_TEMPLATE
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                      extra_special_tokens={"image_token": "<|image_pad|>"})
        tok.chat_template = QWEN_TEMPLATE
    return tok


def _tiny_model(family: str):
    ids = dict(bos_token_id=VOCAB["<|im_start|>"], eos_token_id=VOCAB["<|im_end|>"], pad_token_id=VOCAB["<|endoftext|>"])
    text = dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    if family == "qwen2_5_vl":
        cfg = transformers.Qwen2_5_VLConfig(
            text_config=dict(text, rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2],
                                                    "rope_theta": 10000.0}, **ids),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                               fullatt_block_indexes=[1]),
            image_token_id=VOCAB["<|image_pad|>"], video_token_id=VOCAB["<|video_pad|>"],
            vision_start_token_id=VOCAB["<|vision_start|>"], vision_end_token_id=VOCAB["<|vision_end|>"], **ids)
        model = transformers.Qwen2_5_VLForConditionalGeneration(cfg)
        proc = _image_processor_class(family)(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14,
                                              merge_size=2, temporal_patch_size=2)
    elif family == "qwen3_vl":
        cfg = transformers.Qwen3VLConfig(
            text_config=dict(text, head_dim=8, rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 2],
                                                                "mrope_interleaved": True, "rope_theta": 10000.0}, **ids),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                               patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                               num_position_embeddings=64, deepstack_visual_indexes=[0]),
            image_token_id=VOCAB["<|image_pad|>"], video_token_id=VOCAB["<|video_pad|>"],
            vision_start_token_id=VOCAB["<|vision_start|>"], vision_end_token_id=VOCAB["<|vision_end|>"])
        model = transformers.Qwen3VLForConditionalGeneration(cfg)
        proc = _image_processor_class(family)(min_pixels=64 * 64, max_pixels=128 * 128, patch_size=16,
                                              merge_size=2, temporal_patch_size=2)
    else:
        gids = dict(bos_token_id=VOCAB["<bos>"], eos_token_id=VOCAB["<end_of_turn>"], pad_token_id=VOCAB["<pad>"])
        cfg = transformers.Gemma3Config(
            text_config=dict(text, head_dim=8, sliding_window=16, **gids),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               image_size=28, patch_size=14),
            mm_tokens_per_image=4, boi_token_index=VOCAB["<start_of_image>"], eoi_token_index=VOCAB["<end_of_image>"],
            image_token_index=VOCAB["<image_soft_token>"], **gids)
        model = transformers.Gemma3ForConditionalGeneration(cfg)
        proc = _image_processor_class(family)(size={"height": 28, "width": 28})
    return model, proc


FAMILIES = ["qwen2_5_vl", "qwen3_vl", "gemma3"]


@pytest.fixture(scope="module", params=FAMILIES)
def tiny_checkpoint(request, tmp_path_factory):
    torch.manual_seed(0)
    family = request.param
    model, proc = _tiny_model(family)
    path = tmp_path_factory.mktemp(family)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    _tokenizer(family).save_pretrained(path)
    return family, path


@pytest.fixture(scope="module")
def ct_volume():
    rng = np.random.default_rng(0)
    arr = np.full((6, 40, 48), -1000, np.int16)
    arr[:, 5:35, 6:42] = -850 + rng.integers(-30, 30, (6, 30, 36))
    arr[2:5, 12:20, 10:18] = 40
    return Volume(arr, Geometry(spacing=(0.7, 0.7, 5.0)), "CT", "synthetic")


def test_adapter_loads_packs_and_generates(tiny_checkpoint, ct_volume):
    family, path = tiny_checkpoint
    adapter = VLMAdapter.from_dir(path)
    assert adapter.family == family
    img = slice_image(ct_volume, 3).image
    inputs, seen = adapter.pack([img], "Where is the nodule?")
    if family == "gemma3":
        assert int((inputs["input_ids"] == VOCAB["<image_soft_token>"]).sum()) == 4
        assert seen == [(28, 28)]
    else:
        grid = inputs["image_grid_thw"][0]
        n = int((inputs["input_ids"] == VOCAB["<|image_pad|>"]).sum())
        assert n == int(grid.prod()) // 4  # one token per 2x2 merged patch
        patch = 14 if family == "qwen2_5_vl" else 16
        assert seen == [(int(grid[2]) * patch, int(grid[1]) * patch)]
    gen = adapter.generate([img], "Where is the nodule?", max_new_tokens=4)
    assert isinstance(gen.text, str) and gen.seconds > 0
    k, box, outputs = adapter.find_box(ct_volume, "nodule", slices=[3])
    assert list(outputs) == [3]  # random weights: any text, parsed without error


def test_missing_or_unsupported_checkpoint(tmp_path):
    from medvl.errors import EngineError

    with pytest.raises(EngineError, match="config.json missing"):
        VLMAdapter.from_dir(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llava"}')
    with pytest.raises(EngineError, match="not supported"):
        VLMAdapter.from_dir(tmp_path)


# Outputs in each family's real format (as their model cards and grounding demos show).
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


class _BoxEngine:
    """Test engine: the box itself is the mask; propagation copies it to the next slices
    while the intensity under it stays above -500 HU."""

    name = "box"

    def bind(self, volume, axis):
        return {"volume": volume}

    def segment_slice(self, state, index, prompt, obj_id=None):
        from medvl.engines.base import SliceResult

        arr = state["volume"].array[index]
        m = np.zeros(arr.shape, bool)
        x0, y0, x1, y1 = (int(v) for v in prompt.boxes[-1])
        m[y0:y1 + 1, x0:x1 + 1] = True
        state["box"] = m
        return SliceResult(m & (arr > -500), 1.0)

    def propagate(self, state, seeds, prompts, should_stop=None, obj_id=None):
        arr = state["volume"].array
        (k,) = seeds
        for step in (1, -1):
            n = k + step
            while 0 <= n < arr.shape[0] and (state["box"] & (arr[n] > -500)).any():
                yield n, state["box"] & (arr[n] > -500)
                n += step

    def stats(self, state):
        return {}


def test_ground_maps_box_to_voxels_and_propagates(ct_volume):
    from medvl.language.vlm.adapter import Generation
    from medvl.session import VolumeSession

    class Recorded(VLMAdapter):
        def __init__(self):
            self.family, self.settings = "qwen3_vl", __import__("medvl.language.vlm", fromlist=["x"]).VLMSettings()

        def generate(self, images, prompt, max_new_tokens=None):
            # nodule at rows 12..19, cols 10..17 of a 48 x 40 slice, on a 0..1000 grid
            return Generation('[{"bbox_2d": [200, 290, 380, 490], "label": "nodule"}]', [(64, 64)], 0.01)

    session = VolumeSession(engine=_BoxEngine())
    res = Recorded().ground(ct_volume, "nodule", session, slices=[3])
    (i0, j0, k0), (i1, j1, k1) = res.box_ijk
    assert k0 == k1 == 3 and (i0, j0) == (9, 11) and (i1, j1) == (19, 20)
    assert res.mask[2:5, 12:20, 10:18].all() and not res.mask[[0, 1, 5]].any()


def test_key_slices_spread_and_windowed(ct_volume):
    ks = key_slices(ct_volume, 3)
    assert len(ks) == 3 and all(0 <= k < 6 for k in ks)
    img = slice_image(ct_volume, 3).image
    assert img.size == (48, 40) and img.mode == "RGB"
