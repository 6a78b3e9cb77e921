"""The language layer's three tasks on a configured VLM (`SolveSettings.vlm`).

- `solve_with_vlm` (called by `medvl.language.solvers.solve` for an understood concept): the
  VLM is asked for a box around the concept on key slices; the largest parsed box becomes a
  box prompt (ITK (i, j, k) corners, `VLMAdapter.ground`) and the engine session propagates
  it through the volume. No box ("none", or nothing parseable) is a `NotFoundError` naming the
  model, the slices asked and what it answered - the refusal the offline solvers give for an
  absent concept. The offline grounding's refusals ("not understood", "not applicable") come
  first, as always. A [SEG]-token model (family "segtoken") answers with `[SEG]` instead of a
  box: `solve_with_segtoken` decodes it with the checkpoint's own SAM 2 on the key slice and
  propagates with it; no `[SEG]` is the same "not found" refusal.
- `VLMNarrator`: the report narrator. The VLM sees key slices (through the lesions, else
  spread over the volume) and the measured facts, and writes the narrative; `narrate`
  checks every number in context exactly as for SmolLM2 and falls back to the deterministic
  text when it is rejected (recorded in `report.narrative_check`).
- `phrase_answer`: VQA. The deterministic answer's facts and the question go to the VLM with
  key slices of the object; its answer is number-checked the same way against those facts
  (and must quote at least one of them when the deterministic answer does: "none" is no
  answer to "how large") and replaced by the deterministic answer when rejected (recorded in
  `Answer.check`).
"""

from __future__ import annotations

import logging

import numpy as np

from medvl.language.errors import NotFoundError
from medvl.language.vlm.backend import VLMConfig, load_adapter
from medvl.language.vlm.images import slice_image, views_for

log = logging.getLogger(__name__)

RULE = "Copy numbers exactly as given. Do not write any other number."


def _target(grounding) -> str:
    label = grounding.concept.label
    side = grounding.qualifiers.side
    return f"{label} on the {side} side" if side in ("left", "right") and side not in label else label


def solve_with_vlm(volume, grounding, session, settings) -> tuple[np.ndarray, dict]:
    """(bool (k, j, i) mask, info) of an understood concept, by the VLM's box and the engine."""
    from medvl.errors import EngineError

    config: VLMConfig = settings.vlm
    if config.family == "segtoken":
        return solve_with_segtoken(volume, grounding, settings)
    adapter = load_adapter(config)
    target = _target(grounding)
    slices, window = views_for(volume, target, (), adapter.settings.n_slices, adapter.settings.ct_window)
    res = adapter.ground(volume, target, None, slices=slices, window=window)  # the box first: "none" needs no engine
    outputs = {int(k): v[:300] for k, v in res.outputs.items()}
    backend = config.describe()
    if res.box_ijk is None:
        said = next(iter(res.outputs.values()), "")[:80]
        raise NotFoundError(f"{target} not found by {config.model} ({config.family}) on slices "
                            f"{', '.join(map(str, slices))}: no box in its answer {said!r}")
    if session is None:
        raise EngineError("a VLM box needs an engine session to propagate it (SolveSettings.needs_session)")
    mask = np.asarray(adapter.propagate_box(volume, res.box_ijk, session, settings.obj_id), bool)
    if not mask.any():
        raise NotFoundError(f"{target}: the engine found nothing inside {config.model}'s box {res.box_ijk} "
                            f"on slice {res.slice_k}")
    return mask, {"method": "vlm+engine", "backend": backend, "target": target,
                  "box_ijk": [list(c) for c in res.box_ijk], "slice_k": res.slice_k, "vlm_outputs": outputs}


def solve_with_segtoken(volume, grounding, settings) -> tuple[np.ndarray, dict]:
    """(bool (k, j, i) mask, info) of an understood concept by a [SEG]-token model: [SEG] on a key slice ->
    SAM 2 prompt -> key-slice mask -> SAM 2 propagation (`segtoken.SegTokenModel.segment`)."""
    config: VLMConfig = settings.vlm
    model = load_adapter(config)
    target = _target(grounding)
    slices, window = views_for(volume, target, (), model.settings.n_slices, model.settings.ct_window)
    res = model.segment(volume, target, slices, window)
    outputs = {int(k): v[:300] for k, v in res.outputs.items()}
    if res.mask is None:
        said = next(iter(res.outputs.values()), "")[:80] if res.slice_k is None else res.outputs[res.slice_k][:80]
        raise NotFoundError(f"{target} not found by {config.model} ({config.family}) on slices "
                            f"{', '.join(map(str, res.outputs))}: {res.why}; it said {said!r}")
    return res.mask, {"method": "segtoken+sam2", "backend": config.describe(), "target": target,
                      "slice_k": res.slice_k, "seg_tokens": res.seg_tokens, "key_score": round(res.score, 3),
                      "sam2": model.engine.label, "vlm_outputs": outputs}


def _images(volume, text: str, masks, n: int, default_window: str):
    """Images of the slices and CT window chosen for `text` (`views_for`) and their indices k."""
    ks, window = views_for(volume, text, masks, n, default_window)
    return [slice_image(volume, k, window).image for k in ks], ks


class VLMNarrator:
    """The report narrative written by the configured VLM (see the module docstring)."""

    name = "vlm"

    def __init__(self, config: VLMConfig, volume, masks: dict | None = None, n_slices: int = 2):
        self.config = config
        self.model = f"{config.model} ({config.family})"
        self.volume = volume
        self.masks = masks or {}
        self.n_slices = n_slices
        self.attempt = 0  # bumped by `narrate` before a retry: the prompt gets stricter
        self.slices: list[int] = []

    def prompt(self, report) -> str:
        from medvl.language.narrative import fact_lines

        rule = RULE + (" Never invent numbers, dates, counts or percentages." if self.attempt else "")
        return (f"These are axial slices of a {self.volume.modality} scan. Measured facts:\n"
                + "\n".join(fact_lines(report)) + f"\nWrite two sentences for the findings section. {rule}")

    def write(self, report) -> str:
        adapter = load_adapter(self.config)
        lesions = [o for o in report.objects if o.kind == "lesion" and o.name in report.masks]
        images, self.slices = _images(self.volume, " ".join(o.name for o in lesions),
                                      [report.masks[o.name] for o in lesions], self.n_slices,
                                      adapter.settings.ct_window)
        return adapter.generate(images, self.prompt(report)).text


def phrase_answer(ans, volume, facts, masks, config: VLMConfig, n_slices: int = 2):
    """`ans` (answerable, from `facts`: ObjectFacts) rephrased by the VLM when its numbers check;
    sets `ans.text` (kept when rejected), `ans.backend` and `ans.check`. Returns `ans`."""
    from medvl.language.narrative import check_in_context, extract_numbers, fact_lines
    from medvl.language.report import Report

    adapter = load_adapter(config)
    images, ks = _images(volume, ans.question, [m for m in masks if m is not None], n_slices,
                         adapter.settings.ct_window)
    facts_report = Report(image={}, objects=list(facts), impression="")
    prompt = (f"These are axial slices of a {volume.modality} scan. Measured facts:\n"
              + "\n".join(fact_lines(facts_report))
              + f"\nQuestion: {ans.question}\nAnswer in one or two sentences from these facts. {RULE}")
    ans.backend = config.describe()  # the configured backend; `check` says whether its text was kept
    check = {"requested": "vlm", "model": f"{config.model} ({config.family})", "slices": ks, "rejected": [],
             "fallback": False}
    try:
        text = adapter.generate(images, prompt).text
    except Exception as err:  # noqa: BLE001 - a broken model falls back; the answer still comes
        log.warning("VLM answer failed: %s", err)
        check.update(rejected=[{"error": str(err)}], fallback=True)
        ans.check = check
        return ans
    bad = check_in_context(text, facts_report) if text else [{"token": "", "kind": "", "why": "empty answer"}]
    if not bad and extract_numbers(ans.text) and not extract_numbers(text):  # a measured answer must quote a fact
        bad = [{"token": "", "kind": "", "why": "quotes none of the measured numbers the question asks for"}]
    if bad:
        check.update(rejected=[{"text": text, "unchecked": [b["token"] for b in bad], "why": bad}], fallback=True)
    else:
        ans.text = text
    ans.check = check
    return ans
