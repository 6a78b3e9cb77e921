"""Vision-language checkpoints from a local directory: Qwen2.5-VL, Qwen3-VL, Gemma 3.

`VLMAdapter.from_dir(path)` reads `config.json` (`model_type` picks the family), the
tokenizer (with its chat template), the image processor and the weights - nothing is
downloaded. Inputs are packed here rather than by the checkpoint's `AutoProcessor`
(which also loads a video processor that needs torchvision, absent on purpose):

- Qwen2.5-VL / Qwen3-VL: the chat template's single image placeholder `<|image_pad|>` is
  expanded to (t x h x w) / merge^2 copies, from the image processor's `image_grid_thw`;
  the image the model saw is (w x patch) x (h x patch) pixels.
- Gemma 3: `<start_of_image>` is expanded to `\\n\\n<start_of_image>` + `mm_tokens_per_image`
  x `<image_soft_token>` + `<end_of_image>\\n\\n`; the processor resizes to a fixed square.

Tasks: `generate(images, prompt)` (reports and VQA build their prompts in `tasks.py`);
`ground(volume, text, session)` asks for a box on key slices, parses it
(`parsing.parse_boxes`), maps it to voxel indices and hands it to the segmentation
session, which propagates it through the volume.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medvl.errors import EngineError
from medvl.language.vlm.images import SliceImage, key_slices, slice_image
from medvl.language.vlm.parsing import Box, parse_boxes

log = logging.getLogger(__name__)

GROUND_PROMPTS = {
    "qwen2_5_vl": 'Locate the {target} in this {modality} slice and output its bbox coordinates in JSON format, '
                  'like [{{"bbox_2d": [x1, y1, x2, y2], "label": "{target}"}}]. If it is not visible, answer "none".',
    "qwen3_vl": 'Locate the {target} in this {modality} slice and output its bbox coordinates in JSON format, '
                'like [{{"bbox_2d": [x1, y1, x2, y2], "label": "{target}"}}]. If it is not visible, answer "none".',
    "gemma3": 'Detect the {target} in this {modality} slice. Output a JSON list with "box_2d" as [y1, x1, y2, x2] '
              'normalised to 0-1000 and "label". If it is not visible, answer "none".',
}


@dataclass(frozen=True)
class VLMSettings:
    max_new_tokens: int = 128
    max_pixels: int = 512 * 512  # Qwen processors: cap on the resized image area
    n_slices: int = 5  # key slices tried by `ground`
    ct_window: str = "lung"
    box_margin: int = 0  # voxels added around a parsed box


@dataclass
class Generation:
    text: str
    seen_sizes: list[tuple[int, int]]  # (width, height) of each image as the model saw it
    seconds: float


@dataclass
class GroundResult:
    mask: np.ndarray | None  # bool (k, j, i) after propagation, None when no box was found
    box_ijk: tuple[tuple[int, int, int], tuple[int, int, int]] | None
    slice_k: int | None
    outputs: dict = field(default_factory=dict)  # slice k -> raw model text


def _image_processor_class(family: str):
    import transformers

    names = {"qwen2_5_vl": ("Qwen2VLImageProcessorPil", "Qwen2VLImageProcessor"),
             "qwen3_vl": ("Qwen2VLImageProcessorPil", "Qwen2VLImageProcessor"),
             "gemma3": ("Gemma3ImageProcessorPil", "Gemma3ImageProcessor")}[family]
    for name in names:  # the PIL backend needs no torchvision
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise EngineError(f"transformers {transformers.__version__} has no image processor for {family}")


def _chat_template(path: Path) -> str:
    """The chat template of a checkpoint that keeps it beside the tokenizer (chat_template.jinja,
    or the processor's chat_template.json as Qwen2.5-VL and Gemma 3 releases do)."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text())["chat_template"]
    raise EngineError(f"VLM checkpoint {path}: no chat template (tokenizer_config.json, chat_template.jinja or "
                      "chat_template.json)")


def _model_class(family: str):
    import transformers

    name = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen3_vl": "Qwen3VLForConditionalGeneration",
            "gemma3": "Gemma3ForConditionalGeneration"}[family]
    cls = getattr(transformers, name, None)
    if cls is None:
        raise EngineError(f"transformers {transformers.__version__} lacks {name}: upgrade transformers")
    return cls


class VLMAdapter:
    """One local vision-language checkpoint, ready to generate on CPU (or `device`)."""

    def __init__(self, model, tokenizer, image_processor, family: str, settings: VLMSettings = VLMSettings()):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.family = family
        self.settings = settings
        self.config = model.config
        self._lock = threading.Lock()  # one generation at a time per adapter

    @classmethod
    def from_dir(cls, path, settings: VLMSettings = VLMSettings(), device: str = "cpu", dtype=None) -> "VLMAdapter":
        """Load a checkpoint folder (config.json, tokenizer, preprocessor_config.json, weights),
        checked first by `checkpoint.inspect_checkpoint` (CheckpointError: one line).

        The weights load straight from the safetensors files in their stored dtype
        (`dtype="auto"`), onto `device` (cuda: placed there while loading, not copied after)."""
        from transformers import AutoTokenizer

        from medvl.language.vlm.checkpoint import inspect_checkpoint

        info = inspect_checkpoint(path)
        path, family = info.path, info.family
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = _chat_template(path)
        image_processor = _image_processor_class(family).from_pretrained(str(path))
        kwargs = {"dtype": dtype if dtype is not None else "auto"}
        if device != "cpu":
            kwargs["device_map"] = device
        model = _model_class(family).from_pretrained(str(path), **kwargs)
        return cls(model, tokenizer, image_processor, family, settings)

    # -- input packing --------------------------------------------------------------
    def _messages(self, prompt: str, n_images: int) -> list[dict]:
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": prompt}]
        return [{"role": "user", "content": content}]

    def pack(self, images: list, prompt: str) -> tuple[dict, list[tuple[int, int]]]:
        """Model inputs (torch tensors) for `images` + `prompt`, and the size each image was seen at."""
        text = self.tokenizer.apply_chat_template(self._messages(prompt, len(images)), add_generation_prompt=True,
                                                  tokenize=False)
        if self.family in ("qwen2_5_vl", "qwen3_vl"):
            kwargs = {}
            size = getattr(self.image_processor, "size", None) or {}
            if self.settings.max_pixels and "shortest_edge" in size:  # cap the area the model sees
                kwargs["size"] = {"shortest_edge": min(size["shortest_edge"], self.settings.max_pixels),
                                  "longest_edge": min(size.get("longest_edge", self.settings.max_pixels),
                                                      self.settings.max_pixels)}
            px = self.image_processor(images=images, return_tensors="pt", **kwargs)
            grid = px["image_grid_thw"]
            merge = self.image_processor.merge_size
            patch = self.image_processor.patch_size
            pad = "<|image_pad|>"
            parts = text.split(pad)
            if len(parts) != len(images) + 1:
                raise EngineError(f"chat template produced {len(parts) - 1} image placeholders for {len(images)} images")
            text = parts[0] + "".join(pad * (int(g.prod()) // merge ** 2) + p for g, p in zip(grid, parts[1:]))
            enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
            inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                      "pixel_values": px["pixel_values"], "image_grid_thw": grid}
            seen = [(int(g[2]) * patch, int(g[1]) * patch) for g in grid]
        else:
            px = self.image_processor(images=images, return_tensors="pt")
            n = int(self.config.mm_tokens_per_image)
            boi, eoi, soft = self.tokenizer.boi_token, self.tokenizer.eoi_token, self.tokenizer.image_token
            text = text.replace(boi, f"\n\n{boi}{soft * n}{eoi}\n\n")
            enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
            inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                      "pixel_values": px["pixel_values"]}
            if "token_type_ids" in getattr(self.model, "forward").__code__.co_varnames:
                inputs["token_type_ids"] = (enc["input_ids"] == self.tokenizer.image_token_id).long()
            size = px["pixel_values"].shape[-1]
            seen = [(size, size)] * len(images)
        return inputs, seen

    def generate(self, images: list, prompt: str, max_new_tokens: int | None = None) -> Generation:
        """Greedy answer to `prompt` about `images` (PIL RGB)."""
        import torch

        with self._lock:
            t0 = time.perf_counter()
            inputs, seen = self.pack(images, prompt)
            inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
            with torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=max_new_tokens or self.settings.max_new_tokens,
                                          do_sample=False)
            text = self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            return Generation(text.strip(), seen, time.perf_counter() - t0)

    # -- tasks ------------------------------------------------------------------------
    def find_box(self, volume, target: str, slices: list[int] | None = None, window: str | None = None
                 ) -> tuple[int | None, Box | None, dict]:
        """Ask for `target` on each key slice; the slice with the largest parsed box wins.
        Returns (k, box in slice pixels, {k: raw output})."""
        best, outputs = (None, None), {}
        for k in slices if slices is not None else key_slices(volume, self.settings.n_slices):
            si: SliceImage = slice_image(volume, k, window or self.settings.ct_window)
            gen = self.generate([si.image], GROUND_PROMPTS[self.family].format(target=target, modality=volume.modality))
            outputs[k] = gen.text
            boxes = parse_boxes(gen.text, self.family, gen.seen_sizes[0], si.image.size)
            for b in boxes:
                if best[1] is None or b.area() > best[1].area():
                    best = (k, b)
        return best[0], best[1], outputs

    def voxel_box(self, volume, k: int, box: Box) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """A box in slice pixels of axial slice k -> ITK (i, j, k) corners (floor/ceil, margin, clipped)."""
        ni, nj = volume.size_ijk[0], volume.size_ijk[1]
        m = self.settings.box_margin
        c0 = (max(int(np.floor(box.x0)) - m, 0), max(int(np.floor(box.y0)) - m, 0), k)
        c1 = (min(int(np.ceil(box.x1)) + m, ni - 1), min(int(np.ceil(box.y1)) + m, nj - 1), k)
        return c0, c1

    @staticmethod
    def propagate_box(volume, box_ijk, session, obj_id: int = 1) -> np.ndarray:
        """The box as the session's prompt for `obj_id` on `volume`, propagated; the bool (k, j, i) mask."""
        same_image = session.volume is not None and session.volume.array is volume.array and \
            session.volume.geometry == volume.geometry  # e.g. a copy that only overrides the modality
        if not same_image:
            session.set_volume(volume)
        elif obj_id in session.objects:
            session.reset(obj_id)
        session.add_box(*box_ijk, obj_id=obj_id)
        session.run_propagation(obj_id)
        return session.mask(obj_id)

    def ground(self, volume, target: str, session=None, obj_id: int = 1, slices: list[int] | None = None,
               window: str | None = None) -> GroundResult:
        """Text -> box on a key slice -> voxel box (ITK (i, j, k)) -> session prompt + propagation."""
        k, box, outputs = self.find_box(volume, target, slices, window)
        if box is None:
            return GroundResult(None, None, None, outputs)
        box_ijk = self.voxel_box(volume, k, box)
        if session is None:
            return GroundResult(None, box_ijk, k, outputs)
        return GroundResult(self.propagate_box(volume, box_ijk, session, obj_id), box_ijk, k, outputs)
