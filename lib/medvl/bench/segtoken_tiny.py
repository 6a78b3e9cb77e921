"""Tiny randomly initialised [SEG]-token checkpoints in the Sa2VA-Qwen2.5-VL and Citrus-V layouts.

For tests only (STYLE rule 12); RANDOM weights prove the mechanics, never quality.
`write_segtoken_checkpoint(path, layout)` saves a folder laid out as `segtoken_layout` describes:
config.json (model_type "sa2va_chat" with the nested Qwen2.5-VL config, `architectures` and
`auto_map` as Sa2VA's converter writes them; or "citrus_v" with the Qwen2.5-VL text fields at
top level, `seg_token_idx` and `grounding_encoder_config`), one model.safetensors holding the
Qwen2.5-VL tensors under the layout's prefix (`model.` / `mllm.`; `legacy=True`: the pre-4.52
transformers names), the projector (`text_hidden_fcs.{0,2}` / `seg_projector.{0,2}`) and a tiny
SAM 2.1 (`medvl.engines.sam2.model.RANDOM_TINY`) under `grounding_encoder.sam2_model.`, the
tokenizer with `[SEG]` as an added token, the Qwen2.5-VL image processor.

`reply`: the language model is forced (as `vlm_tiny`'s forced checkpoints: one-hot embeddings,
decoder layers that add nothing, a bigram lm_head) to answer every prompt with that one token
then end its turn: "[SEG]" makes it segment, another token (e.g. "0") makes it answer without
[SEG]. `reply=None`: fully random.
"""

from __future__ import annotations

import json
from pathlib import Path

from medvl.bench import vlm_tiny
from medvl.language.vlm.segtoken_layout import LAYOUTS, SAM2_PREFIX, SEG_TOKEN

SA2VA_AUTO_MAP = {"AutoConfig": "configuration_sa2va_chat.Sa2VAChatConfigQwen",
                  "AutoModel": "modeling_sa2va_qwen.Sa2VAChatModelQwen",
                  "AutoModelForCausalLM": "modeling_sa2va_qwen.Sa2VAChatModelQwen"}


def _legacy(key: str) -> str:
    """Qwen2_5_VLForConditionalGeneration's names before transformers 4.52 (visual.*, model.layers.*)."""
    if key.startswith("model.visual."):
        return key[len("model."):]
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model."):]
    return key


def _tokenizer():
    """vlm_tiny's character-level Qwen tokenizer with [SEG] as an added token (as Sa2VA adds it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = vlm_tiny.vocab(SEG_TOKEN)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.add_special_tokens(vlm_tiny.SPECIALS + [SEG_TOKEN])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  extra_special_tokens={"image_token": "<|image_pad|>"})
    tok.chat_template = vlm_tiny.QWEN_TEMPLATE
    return tok, vocab


def _force_reply(qwen, vocab: dict[str, int], reply: str) -> None:
    """lm_head as a bigram table "\\n" -> reply -> <|im_end|> (embeddings are one-hot, layers add nothing)."""
    import torch

    lm = qwen.get_output_embeddings()
    with torch.no_grad():
        lm.weight.zero_()
        lm.weight[vocab[reply], vocab["\n"]] = 10.0
        lm.weight[vocab["<|im_end|>"], vocab[reply]] = 10.0


def write_segtoken_checkpoint(path, layout: str = "sa2va_chat", reply: str | None = SEG_TOKEN, seed: int = 0,
                              legacy: bool = False) -> Path:
    """Save a tiny [SEG]-model of `layout` ("sa2va_chat" or "citrus_v") into `path`; returns the path."""
    import torch
    from safetensors.torch import save_file

    from medvl.engines.sam2.model import RANDOM_TINY, ModelSpec, build_model

    lay = LAYOUTS[layout]
    torch.manual_seed(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok, vocab = _tokenizer()
    qwen = vlm_tiny.model("qwen2_5_vl", reply=SEG_TOKEN)  # vocabulary = vlm_tiny's + [SEG]; one-hot embeddings
    if reply is not None:
        _force_reply(qwen, vocab, reply)
    sam2 = build_model(ModelSpec(RANDOM_TINY, None, 64), seed=seed)
    hidden = qwen.config.text_config.hidden_size
    projector = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                    torch.nn.Linear(hidden, sam2.hidden_dim), torch.nn.Dropout(0.0))
    tensors = {lay.lm_prefix + (_legacy(k) if legacy else k): v for k, v in qwen.state_dict().items()}
    tensors.update({lay.projector_prefix + k: v for k, v in projector.state_dict().items()})
    tensors.update({SAM2_PREFIX + k: v for k, v in sam2.state_dict().items()})
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    cfg = qwen.config.to_dict()
    if layout == "sa2va_chat":
        cfg.update(model_type="sa2va_chat", architectures=["Sa2VAChatModelQwen"], auto_map=SA2VA_AUTO_MAP,
                   template=vlm_tiny.QWEN_TEMPLATE)
    else:
        text = cfg.pop("text_config")
        cfg = {**text, **cfg, "model_type": "citrus_v", "architectures": ["CitrusV"],
               "seg_token_idx": vocab[SEG_TOKEN],
               "grounding_encoder_config": {"cfg_path": "sam2_hiera_l.yaml", "apply_postprocessing": False}}
    (path / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    qwen.generation_config.save_pretrained(path)
    vlm_tiny.image_processor("qwen2_5_vl").save_pretrained(path)
    tok.save_pretrained(path)
    return path
