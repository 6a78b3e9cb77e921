"""Tiny randomly initialised vision-language checkpoints in each supported family's public format.

For tests and the memory benchmark only (STYLE rule 12): `write_checkpoint(family, path)`
saves a folder laid out like a released checkpoint - config.json with the family's
`model_type`, model.safetensors with the family's key names (written by the family's own
transformers class), tokenizer.json + tokenizer_config.json with a chat template in the
family's turn format, preprocessor_config.json of the family's image processor - built from
the same classes the real checkpoints use (Qwen2_5_VLForConditionalGeneration,
Qwen3VLForConditionalGeneration, Gemma3ForConditionalGeneration). Nothing is downloaded.

The tokenizer is a character-level WordLevel vocabulary holding each family's special
tokens, so prompts and image placeholders tokenise exactly like the real ones (one id per
special token).

`reply="..."`: a *forced* checkpoint that answers every prompt with exactly that text. The
reply is one vocabulary entry; every decoder layer's output projections are zeroed, so the
hidden state at the last position is the last token's embedding, and the lm_head is set to
a bigram table: "\\n" (the end of every generation prompt) -> the reply token -> the
end-of-turn token. The vision tower, the input packing (image tokens must match the image
features or the model raises) and `generate` all run as for any checkpoint; only what it
says is fixed, so tests can check what the pipeline does with a known answer.

`scale_hidden` / `layers`: bigger configs of the same layout (the memory benchmark scales one
to ~500 MB).
"""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("qwen2_5_vl", "qwen3_vl", "gemma3")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>", "<|box_start|>", "<|box_end|>", "<start_of_image>", "<end_of_image>",
            "<image_soft_token>", "<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"]
CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;[]{}()\"'_-\n<>|/?!+=%")

# Chat templates in each family's turn format (Qwen: ChatML with <|vision_start|><|image_pad|><|vision_end|>
# per image, as in Qwen2.5-VL's / Qwen3-VL's chat_template.json; Gemma 3: <start_of_turn>user ... with
# <start_of_image> per image and the "model" role, as in gemma-3's tokenizer_config.json).
QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
                 "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")
GEMMA_TEMPLATE = ("<bos>{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{% for c in m['content'] %}"
                  "{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
                  "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")

# image processor sizes of the tiny checkpoints (the real ones: Qwen 14/16 px patches, Gemma 3 896 px)
QWEN25_PIXELS = (56 * 56, 112 * 112)  # min_pixels, max_pixels
QWEN3_PIXELS = (64 * 64, 128 * 128)
GEMMA_SIZE = 28
GEMMA_MM_TOKENS = 4


def vocab(reply: str | None = None) -> dict[str, int]:
    tokens = SPECIALS + CHARS + ([reply] if reply and reply not in CHARS else [])
    return {t: i for i, t in enumerate(tokens)}


def tokenizer(family: str, reply: str | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(vocab=vocab(reply), unk_token="<pad>"))
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


def image_processor(family: str):
    from medvl.language.vlm.adapter import _image_processor_class

    cls = _image_processor_class(family)
    if family == "qwen2_5_vl":
        return cls(min_pixels=QWEN25_PIXELS[0], max_pixels=QWEN25_PIXELS[1], patch_size=14, merge_size=2,
                   temporal_patch_size=2)
    if family == "qwen3_vl":
        return cls(min_pixels=QWEN3_PIXELS[0], max_pixels=QWEN3_PIXELS[1], patch_size=16, merge_size=2,
                   temporal_patch_size=2)
    return cls(size={"height": GEMMA_SIZE, "width": GEMMA_SIZE})


def model(family: str, hidden: int = 32, layers: int = 2, reply: str | None = None, intermediate: int | None = None):
    """A randomly initialised model of `family` (torch seeded by the caller)."""
    import transformers

    v = vocab(reply)
    if reply:  # forced: one-hot embeddings need hidden >= vocab
        hidden = max(hidden, -(-len(v) // 8) * 8)
    head_dim = 8 if hidden < 512 else 64
    heads = hidden // head_dim
    half = head_dim // 2
    mrope = [half - 2 * ((half - half // 4) // 2), (half - half // 4) // 2, (half - half // 4) // 2]
    text = dict(vocab_size=len(v), hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=2, head_dim=head_dim,
                max_position_embeddings=2048, tie_word_embeddings=False)
    if family == "qwen2_5_vl":
        ids = dict(bos_token_id=v["<|im_start|>"], eos_token_id=v["<|im_end|>"], pad_token_id=v["<|endoftext|>"])
        cfg = transformers.Qwen2_5_VLConfig(
            text_config=dict(text, rope_parameters={"rope_type": "default", "mrope_section": mrope,
                                                    "rope_theta": 10000.0}, **ids),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=hidden,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                               fullatt_block_indexes=[1]),
            image_token_id=v["<|image_pad|>"], video_token_id=v["<|video_pad|>"],
            vision_start_token_id=v["<|vision_start|>"], vision_end_token_id=v["<|vision_end|>"],
            tie_word_embeddings=False, **ids)
        m = transformers.Qwen2_5_VLForConditionalGeneration(cfg)
    elif family == "qwen3_vl":
        ids = dict(bos_token_id=v["<|im_start|>"], eos_token_id=v["<|im_end|>"], pad_token_id=v["<|endoftext|>"])
        cfg = transformers.Qwen3VLConfig(
            text_config=dict(text, rope_parameters={"rope_type": "default", "mrope_section": mrope,
                                                                "mrope_interleaved": True, "rope_theta": 10000.0}, **ids),
            vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=hidden,
                               patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
                               num_position_embeddings=64, deepstack_visual_indexes=[0]),
            image_token_id=v["<|image_pad|>"], video_token_id=v["<|video_pad|>"],
            vision_start_token_id=v["<|vision_start|>"], vision_end_token_id=v["<|vision_end|>"],
            tie_word_embeddings=False)
        m = transformers.Qwen3VLForConditionalGeneration(cfg)
    elif family == "gemma3":
        ids = dict(bos_token_id=v["<bos>"], eos_token_id=v["<end_of_turn>"], pad_token_id=v["<pad>"])
        cfg = transformers.Gemma3Config(
            text_config=dict(text, sliding_window=16, **ids),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                               image_size=GEMMA_SIZE, patch_size=14),
            mm_tokens_per_image=GEMMA_MM_TOKENS, boi_token_index=v["<start_of_image>"],
            eoi_token_index=v["<end_of_image>"], image_token_index=v["<image_soft_token>"],
            tie_word_embeddings=False, **ids)
        m = transformers.Gemma3ForConditionalGeneration(cfg)
    else:
        raise ValueError(f"unknown family {family!r}: one of {', '.join(FAMILIES)}")
    if reply:
        _force(m, family, v, reply)
    return m


def _force(m, family: str, v: dict[str, int], reply: str) -> None:
    """Make `m` a bigram model: "\\n" -> reply -> end of turn (see the module docstring)."""
    import torch

    end = v["<end_of_turn>"] if family == "gemma3" else v["<|im_end|>"]
    lm = m.get_output_embeddings()
    emb = m.get_input_embeddings()
    with torch.no_grad():
        for name, p in m.named_parameters():  # decoder layers add nothing to the residual stream
            if "language_model" in name and (name.endswith("o_proj.weight") or name.endswith("down_proj.weight")):
                p.zero_()
        n, h = emb.weight.shape
        emb.weight.copy_(torch.eye(n, h))  # token t -> unit vector t (h >= n)
        lm.weight.zero_()
        lm.weight[v[reply], v["\n"]] = 10.0
        lm.weight[end, v[reply]] = 10.0


def write_checkpoint(family: str, path, hidden: int = 32, layers: int = 2, reply: str | None = None,
                     seed: int = 0, intermediate: int | None = None, dtype=None) -> Path:
    """Save a tiny checkpoint of `family` into `path` (created); returns the path."""
    import torch

    torch.manual_seed(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    m = model(family, hidden, layers, reply, intermediate)
    if dtype is not None:
        m = m.to(dtype)
    m.save_pretrained(path)
    image_processor(family).save_pretrained(path)
    tokenizer(family, reply).save_pretrained(path)
    return path
