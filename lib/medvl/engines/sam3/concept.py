"""Text concepts through SAM 3's concept model (`Sam3VideoModel`): every instance its own object.

`segment_concept(engine, state, text)` runs transformers' own detect-and-track loop
(`Sam3VideoModel.propagate_in_video_iterator`) over the bound slices, fed from memory
(`frames.SliceFrames`) with the shared feature cache: forward from the first slice to the
last, then backward from the last to the first, on one inference session, so an instance
first found on any slice is tracked through the slices on both sides of it (the backward
pass's mask wins on a slice both passes reached: it has the memory of both). The detector
runs on every slice in each pass (transformers' loop does not cache its features): 2 x
slices encoder passes per concept. Each tracked object
id of the model becomes one `Instance`, a bool (k, j, i) mask in the volume's own grid.
Objects the model itself removes (its hotstart heuristics) are left out.

`add_concept(session, text)` puts each instance into a `VolumeSession` as its own object
(`set_mask`, undoable), on free object ids; this is what the CLI and the server call.

The text goes through the checkpoint's CLIP tokenizer exactly as `Sam3VideoProcessor.
add_text_prompt` does (padded to 32 tokens). transformers' NMS, hole filling and sprinkle
removal for this model need the optional `kernels` package; without it transformers skips
them (it logs a warning) and so do we.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from medvl.errors import EngineError, PromptError
from medvl.slicing import put_slice

log = logging.getLogger(__name__)
TEXT_TOKENS = 32  # Sam3VideoProcessor.add_text_prompt pads every prompt to 32 tokens


@dataclass
class Instance:
    """One object the concept model found and tracked."""

    model_id: int  # the model's own object id in its inference session
    mask: np.ndarray = field(repr=False)  # bool (k, j, i), the volume's grid
    score: float  # the detector's score for the object in [0, 1]
    slices: list[int] = field(default_factory=list)  # slice indices (along the bound axis) where it is present


def _tokens(models, text: str, device: str) -> dict:
    enc = models.tokenizer(text, return_tensors="pt", padding="max_length", max_length=TEXT_TOKENS)
    return {"input_ids": enc.input_ids.to(device), "attention_mask": enc.attention_mask.to(device)}


def _settled(session, first_frame: int) -> None:
    """Before the backward pass: the forward pass's objects count as first seen beyond the
    backward hotstart window, so transformers' hotstart rule (remove an object first seen
    within `hotstart_delay` frames that stays unmatched) judges only objects the backward pass
    starts itself; without this it reads their forward first frame as "later" in reverse time
    and removes every one still unmatched."""
    for obj_id in list(session.obj_first_frame_idx):
        if obj_id not in session.removed_obj_ids:
            session.obj_first_frame_idx[obj_id] = first_frame


def segment_concept(engine, state, text: str, should_stop=None) -> list[Instance]:
    """Every instance of `text` on the bound volume, strongest first; [] when none is found."""
    from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

    text = " ".join(str(text).split())
    if not text:
        raise PromptError("empty text prompt: name the concept to segment, e.g. \"nodule\"")
    models = engine.models
    if models.video is None or models.tokenizer is None:
        raise EngineError(f"SAM 3 checkpoint {models.info.folder} (model_type {models.info.model_type}) has no "
                          "text model: text concepts need a sam3_video folder with its tokenizer files; "
                          "points and boxes work with this one")
    session = engine.new_session(state, cls=Sam3VideoInferenceSession)
    prompt_id = session.add_prompt(text)
    tokens = _tokens(models, text, engine.settings.device)
    session.prompt_input_ids[prompt_id] = tokens["input_ids"]
    session.prompt_attention_masks[prompt_id] = tokens["attention_mask"]
    per_object: dict[int, dict[int, np.ndarray]] = {}
    passes = [(0, False)] + ([(state.num_slices, True)] if state.num_slices > 1 else [])
    with torch.inference_mode():
        for start, reverse in passes:
            if reverse:
                _settled(session, start + models.video.hotstart_delay + 1)
            for out in models.video.propagate_in_video_iterator(session, start_frame_idx=start, reverse=reverse):
                hidden = set(out.removed_obj_ids or ()) | set(out.suppressed_obj_ids or ())
                for obj_id, logits in (out.obj_id_to_mask or {}).items():
                    if obj_id in hidden:
                        continue
                    mask = state.frame.logits_to_slice(logits.float().cpu()[None])[0, 0] > 0
                    if mask.any():
                        per_object.setdefault(int(obj_id), {})[int(out.frame_idx)] = mask
                if should_stop is not None and should_stop():
                    break
            else:
                continue
            break  # cancelled
    state.concept_runs += 1
    removed = set(session.removed_obj_ids) | set(session.hotstart_removed_obj_ids)
    scores = {int(k): float(v) for k, v in session.obj_id_to_score.items()}
    instances = []
    for obj_id, slices in per_object.items():
        if obj_id in removed:
            continue
        volume_mask = np.zeros(state.volume.array.shape, dtype=bool)
        for index, mask in slices.items():
            put_slice(volume_mask, state.axis, index, mask)
        instances.append(Instance(obj_id, volume_mask, scores.get(obj_id, 0.0), sorted(slices)))
    threshold = engine.settings.concept_threshold
    if threshold is not None:
        instances = [i for i in instances if i.score >= threshold]
    instances.sort(key=lambda i: (-i.score, i.model_id))
    log.info("sam3 concept %r: %d instance(s)", text, len(instances))
    return instances


def add_concept(session, text: str, axis: str = "k", should_stop=None,
                id_for: Callable[[int], int] | None = None) -> list[tuple[int, Instance]]:
    """Each instance of `text` becomes its own object of `session`; returns (obj_id, instance)
    pairs, strongest first. `id_for(n)` names the object id of the n-th instance (0-based; the
    server maps instance labels to ids); default: the session's free ids, ascending. The
    session's engine must answer concepts (the sam3 engine)."""
    engine = session.engine
    if not getattr(engine, "concepts", False):
        raise EngineError(f"engine {engine.name!r} does not segment text concepts: use --engine sam3")
    instances = engine.segment_concept(session.engine_state(axis), text, should_stop)
    if id_for is None:
        free = [oid for oid in range(1, 256) if oid not in session.objects]
        id_for = free.__getitem__
        if len(instances) > len(free):
            log.warning("sam3 concept %r: %d instances, %d free object ids: keeping the strongest",
                        text, len(instances), len(free))
            instances = instances[:len(free)]
    out = []
    for n, instance in enumerate(instances):
        oid = id_for(n)
        session.set_mask(oid, instance.mask, axis=axis)
        out.append((oid, instance))
    return out
