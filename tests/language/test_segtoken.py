"""The unified [SEG]-token model (Sa2VA-Qwen2.5-VL / Citrus-V layouts) on tiny RANDOM checkpoints
(`medvl.bench.segtoken_tiny`): they prove the mechanics - the folder checks, the weight mapping, that
the [SEG] hidden state is what reaches SAM 2's decoder, that the key-slice mask is propagated by the
sam2 engine, the refusal without [SEG], the CLI - never segmentation quality."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("sam2")

from medvl.bench.segtoken_tiny import write_segtoken_checkpoint  # noqa: E402
from medvl.cli import main  # noqa: E402
from medvl.language import NotFoundError, SolveSettings, ground_for_volume, solve  # noqa: E402
from medvl.language.vlm.backend import VLMConfig, load_adapter  # noqa: E402
from medvl.language.vlm.checkpoint import CheckpointError, inspect_checkpoint  # noqa: E402
from medvl.language.vlm.segtoken import SegTokenModel  # noqa: E402
from tests.conftest import make_synthetic_volume  # noqa: E402
from tests.language.test_vlm_tasks import crop  # noqa: E402,F401 - the lung2 2-slice crop fixture


@pytest.fixture(scope="module")
def sa2va(tmp_path_factory):
    """A tiny Sa2VA-Qwen2.5-VL-layout checkpoint that answers "[SEG]"."""
    return write_segtoken_checkpoint(tmp_path_factory.mktemp("seg") / "tiny-sa2va", "sa2va_chat")


def _safetensors(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("layout,legacy", [("citrus_v", False), ("sa2va_chat", True)])
def test_loader_maps_every_part_of_both_layouts(tmp_path, layout, legacy):
    """Citrus-V's mllm.* names, and Sa2VA's pre-4.52 transformers names (model.visual.*, model.model.layers.*)."""
    import torch

    path = write_segtoken_checkpoint(tmp_path / layout, layout, legacy=legacy)
    assert VLMConfig.from_path(path).family == "segtoken"
    model = SegTokenModel.from_dir(path)
    file = _safetensors(path)
    lp = "mllm." if layout == "citrus_v" else "model."
    qwen = model.vlm.model.state_dict()
    vis, layer = ("visual.", "model.layers.0.") if legacy else ("model.visual.", "model.language_model.layers.0.")
    assert torch.equal(qwen["model.visual.blocks.0.attn.qkv.weight"], file[f"{lp}{vis}blocks.0.attn.qkv.weight"])
    assert torch.equal(qwen["model.language_model.layers.0.self_attn.q_proj.weight"],
                       file[f"{lp}{layer}self_attn.q_proj.weight"])
    pp = "seg_projector." if layout == "citrus_v" else "text_hidden_fcs."
    assert torch.equal(model.projector[2].weight, file[f"{pp}2.weight"])
    sam = model.engine.model.state_dict()
    assert torch.equal(sam["sam_mask_decoder.iou_token.weight"],
                       file["grounding_encoder.sam2_model.sam_mask_decoder.iou_token.weight"])
    assert model.seg_id == model.vlm.tokenizer.convert_tokens_to_ids("[SEG]")


def _copy(src, dst, config=None, drop: str | None = None):
    from safetensors.torch import save_file

    shutil.copytree(src, dst)
    if config is not None:
        cfg = json.loads((dst / "config.json").read_text())
        cfg.update(config)
        (dst / "config.json").write_text(json.dumps(cfg))
    if drop is not None:
        tensors = {k: v for k, v in _safetensors(src).items() if not k.startswith(drop)}
        save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_mismatched_folders_are_refused_in_one_line(sa2va, tmp_path):
    from medvl.bench import vlm_tiny

    cases = [
        (_copy(sa2va, tmp_path / "no-sam", drop="grounding_encoder."),
         r"the weights lack grounding_encoder\.sam2_model\.image_encoder\.\*.*family detected: segtoken "
         r"\(sa2va_qwen2_5_vl\)"),
        (_copy(sa2va, tmp_path / "no-proj", drop="text_hidden_fcs."), r"lack text_hidden_fcs\.0/2\.weight"),
        (_copy(sa2va, tmp_path / "internvl", config={"llm_config": {}}),
         r"InternVL/InternLM.*family detected: none \(model_type 'sa2va_chat'\)"),
        (_copy(sa2va, tmp_path / "citrus-no-idx", config={"model_type": "citrus_v"}),
         r"citrus_v config\.json without an integer seg_token_idx"),
    ]
    for folder, pattern in cases:
        with pytest.raises(CheckpointError, match=pattern) as err:
            VLMConfig.from_path(folder)
        assert str(folder) in str(err.value) and "\n" not in str(err.value)
        assert "expected config.json (model_type qwen2_5_vl" in str(err.value)
    half = _copy(sa2va, tmp_path / "half-sam", drop="grounding_encoder.sam2_model.memory_attention.")
    with pytest.raises(CheckpointError, match=r"half-sam: its grounding_encoder\.sam2_model\.\* tensors .* match no "
                                              r"SAM 2 config"):
        SegTokenModel.from_dir(half)
    plain = vlm_tiny.write_checkpoint("qwen2_5_vl", tmp_path / "plain")
    with pytest.raises(CheckpointError, match="plain is a qwen2_5_vl checkpoint, not a \\[SEG\\]-model"):
        SegTokenModel.from_dir(plain)


def test_the_seg_hidden_state_is_the_decoders_prompt_and_the_key_mask_is_propagated(sa2va):
    """A forward hook on SAM 2's mask decoder sees exactly projector(last-layer hidden state of [SEG]),
    recomputed here by a plain forward pass over prompt + answer; the key-slice mask is the seed the
    sam2 engine propagates (compared with the engine run directly from that seed)."""
    import torch

    vol = make_synthetic_volume((12, 64, 64), radius=9, seed=3)
    model = load_adapter(VLMConfig.from_path(sa2va))
    seen = []
    hook = model.engine.model.sam_mask_decoder.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(kwargs["sparse_prompt_embeddings"].clone()), with_kwargs=True)
    try:
        res = model.segment(vol, "ball")
    finally:
        hook.remove()
    k = res.slice_k
    assert res.outputs[k] == "[SEG]" and res.seg_tokens == 1
    # the hidden state of [SEG], independently: one forward pass over the prompt and the answer
    from medvl.language.vlm.images import slice_image

    inputs, _ = model.vlm.pack([slice_image(vol, k, model.settings.ct_window).image],
                               model.layout.prompt.format(target="ball"))
    ids = torch.cat([inputs["input_ids"], torch.tensor([[model.seg_id]])], dim=1)
    with torch.no_grad():
        out = model.vlm.model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)},
                              output_hidden_states=True)
        expected = model.projector(out.hidden_states[-1][0, -1]).float()
    # the first decoder call is the [SEG] prompt (empty point, its pad, [SEG]); the rest are the engine's own
    # (mask prompt, tracking: no [SEG])
    assert seen[0].shape == (1, 3, model.engine.model.hidden_dim) and all(s.shape[1] == 2 for s in seen[1:])
    assert torch.allclose(seen[0][0, -1], expected, atol=1e-5)
    assert not torch.allclose(seen[0][0, -1], model.projector(out.hidden_states[-1][0, -2]).float(), atol=1e-3)
    # propagation: slice k holds the decoded mask, the others are the engine's walk from it
    assert res.key_mask.any() and np.array_equal(res.mask[k], res.key_mask)
    engine = model.engine
    state = engine.bind(vol, "k")
    direct = dict(engine.propagate(state, {k: res.key_mask}, {}))
    assert direct and all(np.array_equal(res.mask[i], m) for i, m in direct.items())
    others = [i for i in range(vol.array.shape[0]) if i != k and res.mask[i].any()]
    assert others and set(others) <= set(direct)


def test_no_seg_token_is_a_not_found_refusal(crop, tmp_path):  # noqa: F811
    vol, *_ = crop
    cfg = VLMConfig.from_path(write_segtoken_checkpoint(tmp_path / "says-zero", "citrus_v", reply="0"))
    with pytest.raises(NotFoundError, match=r"lung nodule or mass not found by says-zero \(segtoken\) on slices "
                                            r"[01], [01]: no \[SEG\] token in its answers; it said '0'"):
        solve(vol, ground_for_volume("nodule", vol), None, SolveSettings(vlm=cfg))


def test_cli_segment_text_with_a_seg_model(crop, sa2va, tmp_path, capsys):  # noqa: F811
    from medvl.io import read_mask

    vol, _, image, _ = crop
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(image), "--text", "the tumour", "--vlm", str(sa2va), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    text = summary["text"]
    assert text["language"]["family"] == "segtoken" and text["language"]["model"] == "tiny-sa2va"
    assert text["method"] == "segtoken+sam2" and text["seg_tokens"] == 1 and "RANDOM" in text["sam2"]
    written = read_mask(out, like=vol).array > 0
    expected, _ = solve(vol, ground_for_volume("the tumour", vol), None, SolveSettings(vlm=VLMConfig.from_path(sa2va)))
    assert written.any() and np.array_equal(written, expected)


def test_questions_reach_the_chat_model_of_the_same_checkpoint(sa2va):
    """VQA on a [SEG]-model: its chat model answers (forced: "[SEG]" alone, no text once special tokens are
    dropped), the number check rejects the empty answer and the deterministic one is kept, recorded."""
    from medvl.language import answer

    vol = make_synthetic_volume((8, 48, 48), radius=6, seed=5)
    ans = answer(vol, "How large is the lesion?", masks={"lesion": vol.meta["truth"]},
                 settings=SolveSettings(vlm=VLMConfig.from_path(sa2va)))
    assert ans.backend["family"] == "segtoken" and ans.check["model"] == "tiny-sa2va (segtoken)"
    assert ans.check["fallback"] and ans.check["rejected"][0]["text"] == "" and "mL" in ans.text
