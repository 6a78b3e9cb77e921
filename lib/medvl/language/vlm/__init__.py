"""Real vision-language backends (Qwen2.5-VL / Qwen3-VL, Gemma 3) from local checkpoints:
key slices as images, prompts, box parsing -> voxel indices -> engine propagation; and the
[SEG]-token models (Sa2VA-Qwen2.5-VL, Citrus-V: `segtoken.SegTokenModel`, docs/segtoken.md).

The setting (`VLMConfig`, one for every entry point), the folder checks and the tasks the
language layer runs on a configured VLM: docs/vlm.md."""

from medvl.language.vlm.adapter import GroundResult, VLMAdapter, VLMSettings
from medvl.language.vlm.backend import VLMConfig, load_adapter
from medvl.language.vlm.checkpoint import CheckpointError, inspect_checkpoint
from medvl.language.vlm.parsing import Box, parse_boxes

__all__ = ["Box", "CheckpointError", "GroundResult", "VLMAdapter", "VLMConfig", "VLMSettings", "inspect_checkpoint",
           "load_adapter", "parse_boxes"]
