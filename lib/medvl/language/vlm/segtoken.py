"""The unified model: a Qwen2.5-VL chat model whose `[SEG]` token drives SAM 2 (Sa2VA, Citrus-V, LISA).

    model = SegTokenModel.from_dir("/models/Sa2VA-Qwen2_5-VL-7B")       # checked, then loaded
    res = model.segment(volume, "the tumour in the left lung")          # bool (k, j, i) mask

`segment` runs, on key slices (middle first, `VLMSettings.n_slices`, until one answers):

1. the slice as the chat model's image and the layout's segmentation request
   (`segtoken_layout.LAYOUTS`), greedy generation with hidden states;
2. every generated `[SEG]` token: its last-layer hidden state (the state computed with
   `[SEG]` as the input token, as Sa2VA's `get_seg_hidden_states` selects it) through the
   projector -> a (hidden_dim,) prompt embedding of SAM 2;
3. SAM 2's image encoder on that slice (our `sam2` engine, from the checkpoint's own SAM 2
   weights) and its mask decoder with the embedding appended to the sparse prompt
   (`segtoken_sam2.decode_with_embedding`) -> the key-slice mask (the union over the [SEG]s);
4. the key-slice mask as a mask prompt of that slice in the engine, propagated both ways
   through the volume by SAM 2's memory (`Sam2Engine.propagate`).

No `[SEG]` in any answer, or an empty key-slice mask, is a `NotFoundError` naming the model
and what it said. `generate` / `describe` / `settings` are the plain chat model's
(`VLMAdapter`), so reports and VQA run on the same checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medvl.language.vlm.adapter import VLMAdapter, VLMSettings, _chat_template, _image_processor_class
from medvl.language.vlm.images import key_slices, slice_image
from medvl.language.vlm.segtoken_layout import LAYOUTS, SAM2_PREFIX, SEG_TOKEN, SegLayout, key_mapping, qwen_config

log = logging.getLogger(__name__)


@dataclass
class SegAnswer:
    """One generation on one key slice."""

    slice_k: int
    text: str  # the answer, special tokens kept ([SEG] visible)
    embeddings: torch.Tensor  # (n_seg, hidden_dim) float32: projector(hidden state) of each [SEG]


@dataclass
class SegResult:
    mask: np.ndarray | None  # bool (k, j, i) after propagation; None when nothing was found
    slice_k: int | None  # the key slice the [SEG] mask was decoded on
    key_mask: np.ndarray | None  # bool (j, i) mask decoded on slice_k
    seg_tokens: int  # [SEG] tokens in the answer used
    score: float  # the decoder's IoU estimate on the key slice
    outputs: dict = field(default_factory=dict)  # slice k -> answer text
    why: str = ""  # why nothing was found


class SegTokenModel:
    """A loaded [SEG]-token checkpoint (see the module docstring)."""

    family = "segtoken"

    def __init__(self, vlm: VLMAdapter, projector: torch.nn.Module, engine, layout: SegLayout, seg_id: int,
                 sam2_config: str, name: str):
        self.vlm = vlm  # the Qwen2.5-VL chat model, tokenizer and image processor
        self.projector = projector.eval()  # [SEG] hidden state (hidden,) -> SAM 2 prompt embedding (hidden_dim,)
        self.engine = engine  # Sam2Engine holding the checkpoint's SAM 2 weights
        self.layout = layout
        self.seg_id = seg_id  # token id of [SEG]
        self.sam2_config = sam2_config  # the SAM 2 config its weights matched
        self.name = name  # the folder's name, for messages
        self._lock = vlm._lock  # one generation at a time per model, [SEG] or chat

    # -- the chat model (reports, VQA) --------------------------------------------------
    @property
    def settings(self) -> VLMSettings:
        return self.vlm.settings

    def generate(self, images: list, prompt: str, max_new_tokens: int | None = None):
        return self.vlm.generate(images, prompt, max_new_tokens)

    # -- loading ------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path, settings: VLMSettings = VLMSettings(), device: str = "cpu", dtype=None) -> "SegTokenModel":
        """Load a checked [SEG]-model folder: the Qwen2.5-VL part by transformers (its prefix stripped by
        `key_mapping`, the projector and SAM 2 tensors left to us), the projector, SAM 2 as our engine."""
        import transformers
        from transformers import AutoTokenizer

        from medvl.language.vlm.checkpoint import CheckpointError, inspect_checkpoint
        from medvl.language.vlm.segtoken_sam2 import read_tensors, sam2_engine

        info = inspect_checkpoint(path)
        if info.family != cls.family:
            raise CheckpointError(f"VLM checkpoint {info.path} is a {info.family} checkpoint, not a [SEG]-model")
        path = info.path
        cfg = json.loads((path / "config.json").read_text())
        layout = LAYOUTS[cfg["model_type"]]
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)  # never run shipped code
        if not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = _chat_template(path)
        seg_id = _seg_token_id(path, tokenizer, cfg)
        image_processor = _image_processor_class("qwen2_5_vl").from_pretrained(str(path))
        kwargs = {"dtype": dtype if dtype is not None else "auto"}
        if device != "cpu":
            kwargs["device_map"] = device
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # its report lists the projector and SAM 2 tensors as unexpected
        try:
            qwen, loading = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
                str(path), config=qwen_config(cfg), key_mapping=key_mapping(layout), output_loading_info=True,
                **kwargs)
        finally:
            transformers.logging.set_verbosity(verbosity)
        others = sorted(k for k in loading.get("unexpected_keys") or []
                        if not k.startswith((SAM2_PREFIX, layout.projector_prefix)))
        if others:
            log.warning("[SEG]-model %s: %d tensors belong to none of its parts (e.g. %s): ignored", path.name,
                        len(others), others[0])
        missing = sorted(loading.get("missing_keys") or [])
        if missing:
            raise CheckpointError(f"VLM checkpoint {path}: {len(missing)} Qwen2.5-VL weights missing under "
                                  f"{layout.lm_prefix!r} (e.g. {missing[0]}); family detected: segtoken "
                                  f"({layout.name})")
        hidden = qwen.config.text_config.hidden_size
        engine, sam2_config = sam2_engine(path, info.weight_files, device, layout.sam2_configs)
        projector = _projector(path, read_tensors(info.weight_files, layout.projector_prefix), hidden,
                               engine.model.hidden_dim, layout).to(device=qwen.device, dtype=qwen.dtype)
        vlm = VLMAdapter(qwen, tokenizer, image_processor, "qwen2_5_vl", settings)
        log.info("[SEG]-model %s (%s): Qwen2.5-VL hidden %d, SAM 2 %s", path.name, layout.name, hidden, sam2_config)
        return cls(vlm, projector, engine, layout, seg_id, sam2_config, path.name)

    # -- [SEG] -> mask ------------------------------------------------------------------
    def answer(self, image, target: str, slice_k: int = -1) -> SegAnswer:
        """Ask for `target` on one image; the projected hidden state of each generated [SEG]."""
        vlm = self.vlm
        inputs, _ = vlm.pack([image], self.layout.prompt.format(target=target))
        inputs = {k: v.to(vlm.model.device) for k, v in inputs.items()}
        extra = {}
        if vlm.model.generation_config.eos_token_id is None:  # a release without generation_config.json
            extra = {"eos_token_id": vlm.tokenizer.eos_token_id, "pad_token_id": vlm.tokenizer.pad_token_id}
        with torch.inference_mode():
            out = vlm.model.generate(**inputs, max_new_tokens=vlm.settings.max_new_tokens, do_sample=False,
                                     output_hidden_states=True, return_dict_in_generate=True, **extra)
            seq = out.sequences[0]
            # last layer, every position that was fed: the prompt (step 0), then one token per step
            hidden = torch.cat([step[-1][0] for step in out.hidden_states], dim=0)
            fed = seq[:-1]  # the last generated token was never fed back: it has no hidden state
            first_new = inputs["input_ids"].shape[1]
            is_seg = (fed == self.seg_id) & (torch.arange(len(fed), device=fed.device) >= first_new)
            states = hidden[-len(fed):][is_seg]
            embeddings = self.projector(states).float() if len(states) else states.new_zeros((0, 0)).float()
        text = vlm.tokenizer.decode(seq[first_new:], skip_special_tokens=False)
        for end in (vlm.tokenizer.eos_token, vlm.tokenizer.pad_token):
            if end:
                text = text.replace(end, "")
        return SegAnswer(slice_k, text.strip(), embeddings)

    def segment(self, volume, target: str, slices: list[int] | None = None, window: str | None = None) -> SegResult:
        """`target` on `volume` (see the module docstring); `slices`: the key slices to try."""
        from medvl.language.vlm.segtoken_sam2 import decode_with_embedding

        with self._lock, torch.inference_mode():
            t0 = time.perf_counter()
            outputs: dict[int, str] = {}
            ks = slices if slices is not None else key_slices(volume, self.settings.n_slices)
            for k in ks:
                ans = self.answer(slice_image(volume, k, window or self.settings.ct_window).image, target, k)
                outputs[k] = ans.text
                if len(ans.embeddings):
                    break
            else:
                return SegResult(None, None, None, 0, 0.0, outputs, f"no {SEG_TOKEN} token in its answers")
            state = self.engine.bind(volume, "k")
            fpn, pos_enc = self.engine.slice_features(state, k)
            key = None
            score = 0.0
            for emb in ans.embeddings:  # one decoder call per [SEG]; the object is their union
                km = decode_with_embedding(self.engine.model, fpn, pos_enc, state.frame, emb)
                key = km.mask if key is None else key | km.mask
                score = max(score, km.score)
            if not key.any():
                return SegResult(None, k, key, len(ans.embeddings), score, outputs,
                                 f"SAM 2 decoded an empty mask from its {SEG_TOKEN} on slice {k}")
            mask = np.zeros(volume.array.shape, dtype=bool)
            mask[k] = key
            for index, m in self.engine.propagate(state, {k: key}, {}):
                mask[index] = m
            log.info("[SEG] %r on slice %d: %d voxels in %.1f s", target, k, int(mask.sum()), time.perf_counter() - t0)
            return SegResult(mask, k, key, len(ans.embeddings), score, outputs)


def _seg_token_id(path: Path, tokenizer, cfg: dict) -> int:
    """[SEG]'s id: config.json's seg_token_idx (Citrus-V) or the tokenizer's added token (Sa2VA); they must agree."""
    from medvl.language.vlm.checkpoint import CheckpointError

    in_vocab = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
    in_vocab = in_vocab if isinstance(in_vocab, int) and in_vocab != tokenizer.unk_token_id else None
    in_config = cfg.get("seg_token_idx")
    if in_config is not None and in_vocab is not None and in_config != in_vocab:
        raise CheckpointError(f"VLM checkpoint {path}: config.json seg_token_idx {in_config} is not the tokenizer's "
                              f"{SEG_TOKEN} id {in_vocab}; family detected: segtoken")
    seg = in_config if in_config is not None else in_vocab
    if seg is None:
        raise CheckpointError(f"VLM checkpoint {path}: the tokenizer has no {SEG_TOKEN} token and config.json no "
                              f"seg_token_idx; family detected: segtoken")
    return int(seg)


def _projector(path, tensors: dict, hidden: int, out_dim: int, layout: SegLayout) -> torch.nn.Module:
    """The [SEG] projector: Linear(h, h) -> ReLU -> Linear(h, out) -> Dropout (Sa2VA's text_hidden_fcs,
    Citrus-V's seg_projector), or Citrus-V's residual variant (linear1/linear2 + residual_mapping)."""
    from medvl.language.vlm.checkpoint import CheckpointError

    if "linear1.weight" in tensors:
        net = _ResidualProjector(hidden, out_dim, "residual_mapping.weight" in tensors)
    else:
        net = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out_dim),
                                  torch.nn.Dropout(0.0))
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        raise CheckpointError(f"VLM checkpoint {path}: projector {layout.projector_prefix}* has {got}, expected "
                              f"{expected} (LM hidden {hidden} -> SAM 2 prompt dim {out_dim}); family detected: "
                              f"segtoken ({layout.name})")
    net.load_state_dict(tensors)
    return net


class _ResidualProjector(torch.nn.Module):
    """Citrus-V's residual [SEG] projector: linear2(relu(linear1(x))) + residual_mapping(x)."""

    def __init__(self, hidden: int, out_dim: int, mapped: bool):
        super().__init__()
        self.linear1 = torch.nn.Linear(hidden, hidden)
        self.linear2 = torch.nn.Linear(hidden, out_dim)
        self.residual_mapping = torch.nn.Linear(hidden, out_dim) if mapped else torch.nn.Identity()

    def forward(self, x):
        return self.linear2(torch.relu(self.linear1(x))) + self.residual_mapping(x)
