"""Real vision-language backends (Qwen2.5-VL / Qwen3-VL, Gemma 3) from local checkpoints:
key slices as images, prompts, box parsing -> voxel indices -> engine propagation."""

from medvl.language.vlm.adapter import GroundResult, VLMAdapter, VLMSettings
from medvl.language.vlm.parsing import Box, parse_boxes

__all__ = ["Box", "GroundResult", "VLMAdapter", "VLMSettings", "parse_boxes"]
