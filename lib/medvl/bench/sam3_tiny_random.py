"""TESTS AND BENCHMARKS ONLY: a tiny SAM 3 checkpoint folder with RANDOM weights.

`write_tiny_random_sam3(folder)` saves what `Sam3VideoModel.save_pretrained` writes for the
public facebook/sam3 layout (config.json with model_type "sam3_video", its detector_config /
tracker_config, model.safetensors with the `detector_model.*`, `tracker_model.*` and
`tracker_neck.*` keys) plus a CLIP-style tokenizer (vocab.json, merges.txt and what
`save_pretrained` adds), built with the same transformers classes at a few hundred thousand
parameters and a 56 px input. Random weights prove the mechanics only (where masks go, what
is cached, which objects come back), never segmentation quality.

    python -m medvl.bench.sam3_tiny_random OUT_DIR [--tracker-only]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

IMAGE_SIZE = 56  # model input side: 4 x 4 patches of 14 px (the real model: 1008 px, 72 x 72)
PATCH = 14
HIDDEN = 128  # fpn / decoder width: SAM 3 reads 64-channel memories and needs a width above them (pointer split)
VIT_HIDDEN = 32


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable character table (the alphabet of CLIP's BPE vocabulary)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tiny_tokenizer(folder: Path) -> int:
    """A CLIP BPE tokenizer over single bytes (no merges); returns its vocabulary size."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    tok.save_pretrained(str(folder))  # tokenizer.json and tokenizer_config.json, as in the public folder
    return len(vocab)


def tiny_config(vocab_size: int, bos: int, eos: int, vit_hidden: int = VIT_HIDDEN, vit_layers: int = 2):
    """A `Sam3VideoConfig` with every module shrunk (same classes, same key names); `vit_hidden`
    and `vit_layers` scale the backbone up (the memory benchmark's 500 MB folder)."""
    from transformers import Sam3VideoConfig

    s, h = IMAGE_SIZE, HIDDEN
    vit = dict(model_type="sam3_vit_model", hidden_size=vit_hidden, intermediate_size=2 * vit_hidden,
               num_hidden_layers=vit_layers,
               num_attention_heads=2, image_size=s, patch_size=PATCH, window_size=2, global_attn_indexes=[1],
               pretrain_image_size=2 * PATCH)
    vision = dict(backbone_config=vit, fpn_hidden_size=h,
                  backbone_feature_sizes=[[4 * s // PATCH] * 2, [2 * s // PATCH] * 2, [s // PATCH] * 2])
    small = dict(hidden_size=h, num_layers=1, num_attention_heads=2, intermediate_size=2 * h)
    text = dict(vocab_size=vocab_size, hidden_size=VIT_HIDDEN, intermediate_size=2 * VIT_HIDDEN, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=32, projection_dim=h,
                bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    detector = dict(vision_config=vision, text_config=text, geometry_encoder_config=small,
                    detr_encoder_config=small, detr_decoder_config=dict(small, num_queries=8),
                    mask_decoder_config=dict(hidden_size=h, num_attention_heads=2))
    tracker = dict(vision_config=vision, prompt_encoder_config=dict(hidden_size=h, image_size=s, patch_size=PATCH),
                   mask_decoder_config=dict(hidden_size=h, mlp_dim=2 * h, num_attention_heads=2,
                                            iou_head_hidden_dim=h),
                   memory_attention_hidden_size=h, memory_attention_num_layers=1,
                   memory_attention_feed_forward_hidden_size=2 * h, memory_encoder_hidden_size=h,
                   memory_encoder_output_channels=64, mask_downsampler_embed_dim=h, memory_fuser_num_layers=1,
                   memory_fuser_embed_dim=h, memory_fuser_intermediate_dim=2 * h, image_size=s)
    # random detections never match from slice to slice, so the real config's hotstart (15 frames)
    # would remove every one: off here; every detection may start an object, at most 3
    return Sam3VideoConfig(detector_config=detector, tracker_config=tracker, hotstart_delay=0,
                           hotstart_unmatch_thresh=0, hotstart_dup_thresh=0, score_threshold_detection=0.0,
                           new_det_thresh=0.0, max_num_objects=3)


def write_tiny_random_sam3(folder: str | Path, seed: int = 0, tracker_only: bool = False,
                           vit_hidden: int = VIT_HIDDEN, vit_layers: int = 2) -> Path:
    """Save the tiny RANDOM-weight SAM 3 checkpoint folder (sam3_video, or sam3_tracker_video
    with `tracker_only`); returns the folder."""
    import torch
    from transformers import Sam3TrackerVideoModel, Sam3VideoModel

    folder = Path(folder)
    vocab = write_tiny_tokenizer(folder)
    config = tiny_config(vocab, bos=vocab - 2, eos=vocab - 1, vit_hidden=vit_hidden, vit_layers=vit_layers)
    torch.manual_seed(seed)
    if tracker_only:
        model = Sam3TrackerVideoModel(config.tracker_config)
    else:
        model = Sam3VideoModel(config)
    model.save_pretrained(str(folder))
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--tracker-only", action="store_true", help="a sam3_tracker_video folder (no text model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_tiny_random_sam3(args.out, args.seed, args.tracker_only)
    print(json.dumps({"checkpoint": str(path), "weights": "RANDOM (tests only)"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
