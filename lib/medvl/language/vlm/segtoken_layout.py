"""Checkpoint layouts of the [SEG]-token models (a Qwen2.5-VL chat model + projector + SAM 2).

Two public layouts are accepted, matched to the code that writes them (docs/segtoken.md says
how; no real weights were available to check against):

- **Sa2VA on Qwen2.5-VL** (magic-research/Sa2VA, `projects/sa2va/hf/models_qwen2_5_vl/`:
  `Sa2VAChatModelQwen`, e.g. ByteDance/Sa2VA-Qwen2_5-VL-7B): config.json `model_type`
  "sa2va_chat" holding a Qwen2.5-VL config (`text_config`, `vision_config`) and `auto_map`
  to `modeling_sa2va_qwen.Sa2VAChatModelQwen`; tensors `model.` + the
  Qwen2_5_VLForConditionalGeneration names (`model.model.visual.*`,
  `model.model.language_model.*`, `model.lm_head.weight`; the pre-4.52 transformers names
  `model.visual.*`, `model.model.layers.*` too), the projector `text_hidden_fcs.{0,2}`
  (Linear(h, h) -> ReLU -> Linear(h, 256) -> Dropout) and SAM 2 under
  `grounding_encoder.sam2_model.*`; `[SEG]` is an added token of the tokenizer.
  Prompt: "Please segment {target} in this image." (Sa2VA's SEG_QUESTIONS).
- **Citrus-V** (jdh-algo/Citrus-V, `architectures/citrus_v_transformers.py`: `CitrusV`,
  e.g. jdh-algo/Citrus-V-8B-v1.0): config.json `model_type` "citrus_v" with the Qwen2.5-VL
  fields at top level, `vision_config`, `seg_token_idx` and `grounding_encoder_config`;
  tensors `mllm.` + the Qwen2_5_VLForConditionalGeneration names, the projector
  `seg_projector.{0,2}` (the same Sequential) or `seg_projector.linear1/linear2/
  residual_mapping` (`use_res_seg_projector`), SAM 2 under `grounding_encoder.sam2_model.*`.
  Prompt: "Please help segment the {target} in this scan." (Citrus-V's demo).

Sa2VA's InternVL / InternLM releases (`llm_config`) and its Qwen3-VL ones (a Qwen3-VL
`vision_config`) use the same model_type and are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass

SEG_TOKEN = "[SEG]"
SAM2_PREFIX = "grounding_encoder.sam2_model."
MODEL_TYPES = ("sa2va_chat", "citrus_v")
# config.json keys that are not Qwen2.5-VL's (dropped before building its config)
EXTRA_CONFIG_KEYS = ("model_type", "architectures", "auto_map", "template", "transformers_version",
                     "grounding_encoder_config", "loss_mask_config", "loss_dice_config", "seg_token_idx",
                     "frozen_sam2_decoder", "frozen_sam2_image_encoder", "frozen_sam2_prompt_encoder",
                     "use_seg_loss", "use_res_seg_projector", "torch_dtype", "dtype")


@dataclass(frozen=True)
class SegLayout:
    name: str  # "sa2va_qwen2_5_vl" or "citrus_v"
    lm_prefix: str  # prefix of the Qwen2_5_VLForConditionalGeneration tensors
    projector_prefix: str  # prefix of the [SEG] projector's tensors
    prompt: str  # the segmentation request, {target} filled in
    sam2_configs: tuple[str, ...]  # SAM 2 configs the release was built with (tried first)


LAYOUTS = {
    "sa2va_chat": SegLayout("sa2va_qwen2_5_vl", "model.", "text_hidden_fcs.", "Please segment {target} in this image.",
                            ("sam2_hiera_l",)),
    "citrus_v": SegLayout("citrus_v", "mllm.", "seg_projector.", "Please help segment the {target} in this scan.",
                          ("sam2_hiera_l",)),
}
EXPECTED_WEIGHTS = {
    "sa2va_qwen2_5_vl": "model.model.visual.* (or model.visual.*), model.lm_head.weight, text_hidden_fcs.0/2.*, "
                        "grounding_encoder.sam2_model.*",
    "citrus_v": "mllm.model.visual.* (or mllm.visual.*), mllm.lm_head.weight, seg_projector.0/2.* (or linear1/linear2), "
                "grounding_encoder.sam2_model.*",
}


def config_problem(cfg: dict) -> str | None:
    """Why config.json is not a supported [SEG]-model (None when it is)."""
    model_type = cfg.get("model_type")
    if model_type == "sa2va_chat":
        if "llm_config" in cfg or "Sa2VAChatModel" in (cfg.get("architectures") or []):
            return ("a Sa2VA checkpoint on InternVL/InternLM (llm_config), not on Qwen2.5-VL: only Sa2VA-Qwen2_5-VL "
                    "checkpoints are supported")
        if "text_config" not in cfg or "vision_config" not in cfg:
            return "a sa2va_chat config.json without the Qwen2.5-VL text_config and vision_config"
        if "deepstack_visual_indexes" in (cfg.get("vision_config") or {}):
            return "a Sa2VA checkpoint on Qwen3-VL (deepstack vision_config): only Sa2VA-Qwen2_5-VL is supported"
    elif model_type == "citrus_v":
        if "vision_config" not in cfg:
            return "a citrus_v config.json without vision_config"
        if not isinstance(cfg.get("seg_token_idx"), int):
            return "a citrus_v config.json without an integer seg_token_idx"
    return None


def weights_problem(layout: SegLayout, keys: list[str]) -> str | None:
    """Why the tensor names do not hold the layout's three parts (None when they do)."""
    lp, pp = layout.lm_prefix, layout.projector_prefix
    have = set(keys)
    missing = []
    if not any(k.startswith((f"{lp}model.visual.", f"{lp}visual.")) for k in keys):
        missing.append(f"{lp}model.visual.*")
    if f"{lp}lm_head.weight" not in have:
        missing.append(f"{lp}lm_head.weight")
    if not ({f"{pp}0.weight", f"{pp}2.weight"} <= have or {f"{pp}linear1.weight", f"{pp}linear2.weight"} <= have):
        missing.append(f"{pp}0/2.weight")
    for part in ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder."):
        if not any(k.startswith(SAM2_PREFIX + part) for k in keys):
            missing.append(f"{SAM2_PREFIX}{part}*")
    if missing:
        return f"the weights lack {', '.join(missing)} (a {layout.name} checkpoint holds {EXPECTED_WEIGHTS[layout.name]})"
    return None


def qwen_config(cfg: dict):
    """The Qwen2_5_VLConfig inside a [SEG]-model's config.json (nested, or Citrus-V's flat fields)."""
    import transformers

    return transformers.Qwen2_5_VLConfig(**{k: v for k, v in cfg.items() if k not in EXTRA_CONFIG_KEYS})


def key_mapping(layout: SegLayout) -> dict[str, str]:
    """transformers `key_mapping` that strips the layout's prefix; transformers' own Qwen2.5-VL mapping then
    turns the pre-4.52 names (visual.*, model.layers.*) into the current ones."""
    return {"^" + layout.lm_prefix.replace(".", r"\."): ""}
