"""Questions about a volume and its findings, answered from the structured facts.

`answer(volume, "How large is the nodule?", masks)`:
1. Questions that image measurements cannot answer (malignancy, diagnosis, treatment,
   comparison with earlier scans, patient data) get a plain "cannot answer" and the list
   of what can be asked - never a guess.
2. The intent (size, volume, side, location, count, intensity, presence) is read from
   keywords, else from the sentence encoder's similarity to example questions.
3. The object is grounded like a text prompt ("the nodule", "the left lung"); without a
   mask for it, the concept is solved from the image. No concept named: the findings
   (masks given, else the nodule solver).
4. The question's side/level words ("in the right lung", "upper") narrow the objects: a
   question about the right lung is never answered with a left-lung finding; when none
   matches, the answer is "No" with where the findings are.
5. The answer quotes the report facts (`medvl.language.report.ObjectFacts`); user masks
   are lesions only when they coincide with a passing lesion candidate
   (`report.mask_kind`), and only lesions get RECIST axes.
6. With a VLM configured (`settings.vlm`), it sees key slices of the object and the facts and
   phrases the answer; its numbers are checked like a narrative's, a rejected text gives way
   to the deterministic answer (`Answer.check`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from medvl.language.errors import NotUnderstoodError, SolverError
from medvl.language.grounding import Grounder, default_grounder, normalize, volume_context
from medvl.language.report import ObjectFacts, mask_kind, object_facts
from medvl.language.solvers import SolveSettings, solve
from medvl.language.solvers.anatomy import anatomy_for
from medvl.volume import Volume

log = logging.getLogger(__name__)

CAN_ANSWER = "size (diameters), volume, side, location and slices, how many, mean intensity, presence"

_UNANSWERABLE = ("malignant", "benign", "cancerous", "diagnosis", "diagnose", "prognosis", "treat", "treatment",
                 "biopsy", "age", "old", "sex", "gender", "stage", "staging", "survival", "growing", "grown",
                 "change", "changed", "previous", "prior", "compare", "comparison", "name", "symptom", "symptoms",
                 "why", "cause", "should")
_INTENT_WORDS = [  # first match wins: order matters ("how many" before "how")
    ("count", ("how many", "number of", "count")),
    ("side", ("which side", "what side", "left or right", "right or left", "laterality", "which lung")),
    ("intensity", ("hu", "hounsfield", "density", "dense", "attenuation", "intensity", "bright")),
    ("volume", ("volume", "ml", "milliliter", "milliliters", "cc", "how much")),
    ("size", ("how large", "how big", "size", "diameter", "diameters", "dimension", "dimensions", "measure",
              "long axis", "short axis", "recist", "wide", "long", "mm", "big", "large")),
    ("location", ("where", "location", "located", "which slice", "which slices", "what slice", "level", "zone",
                  "slices", "lobe")),
    ("presence", ("is there", "are there", "any", "present", "do you see", "does it have", "visible")),
]
_INTENT_EXAMPLES = {
    "size": ("how large is the nodule", "what are its dimensions", "how big is it"),
    "volume": ("what is the volume", "how many milliliters"),
    "side": ("which side is it on", "is it left or right"),
    "location": ("where is the tumor", "on which slices is it"),
    "count": ("how many lesions are there", "number of nodules"),
    "intensity": ("what is the mean HU", "how dense is it"),
    "presence": ("is there a nodule", "do you see a mass"),
}


@dataclass
class Answer:
    question: str
    text: str  # the answer, or why it cannot be given
    answerable: bool
    intent: str = ""  # size / volume / side / location / count / intensity / presence
    objects: list[str] = field(default_factory=list)  # names of the objects the answer is about
    facts: list[dict] = field(default_factory=list)  # the facts it quotes (ObjectFacts as dicts)
    grounding: dict | None = None
    backend: dict = field(default_factory=dict)  # the language backend asked (VLMConfig.describe()); {} = offline
    check: dict = field(default_factory=dict)  # VLM answers: slices shown, rejected texts, fallback to `text`

    def as_dict(self) -> dict:
        from medvl.language.vlm.backend import OFFLINE

        return {"question": self.question, "answer": self.text, "answerable": self.answerable, "intent": self.intent,
                "objects": self.objects, "facts": self.facts, "grounding": self.grounding,
                "language": self.backend or dict(OFFLINE), "answer_check": self.check}


def classify(question: str, grounder: Grounder | None = None) -> str | None:
    """The intent of a question, or None when it is outside what the facts answer."""
    words = normalize(question)
    joined = " " + " ".join(words) + " "
    if any(f" {w} " in joined for w in _UNANSWERABLE):
        return None
    for intent, keys in _INTENT_WORDS:
        if any(f" {k} " in joined for k in keys):
            return intent
    enc = (grounder or default_grounder()).encoder
    if enc is None:
        return None
    names = [n for n, ex in _INTENT_EXAMPLES.items() for _ in ex]
    vecs = enc.encode([e for ex in _INTENT_EXAMPLES.values() for e in ex])
    sims = vecs @ enc.encode([question])[0]
    best = int(np.argmax(sims))
    return names[best] if sims[best] >= 0.6 else None


def _fmt(v: float, nd: int = 1) -> str:
    return f"{v:.{nd}f}"


def _sentence(intent: str, o: ObjectFacts) -> str:
    name = o.label
    plural = name.endswith("lungs")
    has, is_ = ("have", "are") if plural else ("has", "is")
    if intent == "size":
        if o.kind != "lesion":
            return (f"The {name} spans {' x '.join(_fmt(v) for v in o.bbox_size_mm)} mm (i x j x k) "
                    f"and measures {_fmt(o.volume_ml)} mL.")
        return (f"The {name} measure{'' if plural else 's'} {_fmt(o.long_axis_mm)} x {_fmt(o.short_axis_mm)} mm "
                f"(longest diameter x perpendicular, axial slice {o.axis_slice_k}); volume {_fmt(o.volume_ml)} mL.")
    if intent == "volume":
        return f"The {name} {has} a volume of {_fmt(o.volume_ml)} mL ({o.voxels} voxels)."
    if intent == "side":
        return f"The {name} {is_} on the {o.side} side." if o.side in ("left", "right") else \
            f"The {name} {is_} {'on both sides' if o.side == 'bilateral' else 'in the midline'}."
    if intent == "location":
        return f"The {name} {is_} in the {o.location}, on axial slices {o.slice_range_k[0]} to {o.slice_range_k[1]}."
    if intent == "intensity":
        return f"The mean intensity of the {name} is {_fmt(o.mean, 0)} {o.unit} (SD {_fmt(o.sd, 0)})."
    if intent == "presence":
        return f"Yes: a {name} in the {o.location}, {_fmt(o.volume_ml)} mL."
    raise ValueError(intent)


def answer(volume: Volume, question: str, masks: Mapping[str, np.ndarray] | None = None, session=None,
           settings: SolveSettings = SolveSettings(), grounder: Grounder | None = None) -> Answer:
    """Answer `question` about `volume` (and its named bool (k, j, i) masks) from measured facts."""
    grounder = grounder or default_grounder()
    intent = classify(question, grounder)
    if intent is None:
        return Answer(question, "This cannot be answered from the image measurements. I can answer about: "
                      f"{CAN_ANSWER}.", False)
    modality, region = volume_context(volume)
    g = grounder.ground(question, modality=modality, region=region)
    if g.method == "embedding":  # a question's object must be named; "which side?" is about the findings
        g.concept, g.method = None, ""
    concept = g.concept
    if concept is None and g.reason.startswith("'"):  # names anatomy we do not know: say so
        return Answer(question, f"Not understood: {g.reason}. I can answer about: {CAN_ANSWER}.", False,
                      intent, grounding=g.as_dict())
    anatomy = anatomy_for(volume) if volume.modality.upper() == "CT" else None
    masks = {k: np.asarray(v) != 0 for k, v in (masks or {}).items()}
    facts: list[ObjectFacts] = []
    if masks and (concept is None or concept.kind == "lesion"):
        facts = [object_facts(volume, m, n, mask_kind(volume, m, anatomy, settings), f"mask: {n}", anatomy)
                 for n, m in masks.items() if m.any()]
        facts, missing = _narrow(facts, g.qualifiers)
        if missing:
            return Answer(question, missing, True, intent, [], [], g.as_dict())
    elif concept is not None or volume.modality.upper() == "CT":
        if concept is None:
            g = grounder.ground("nodule", modality=modality, region=region)
            concept = g.concept
            if concept is None:  # a CT that is not of the chest: lung findings do not apply
                return Answer(question, f"Not answerable here: {g.reason}.", False, intent, grounding=g.as_dict())
        if intent == "count" and concept.kind == "lesion":
            return _count_candidates(question, volume, g, anatomy, settings)
        try:
            res = solve(volume, g, session, settings)
        except SolverError as err:
            if intent == "presence" or concept.kind == "lesion":
                return Answer(question, f"No: {err}.", True, intent, [], [], g.as_dict())
            return Answer(question, f"Cannot measure the {concept.label}: {err}", False, intent, grounding=g.as_dict())
        kind = "lesion" if concept.kind == "lesion" else "anatomy"
        facts = [object_facts(volume, res.mask, concept.name, kind, f"text: {question}", anatomy)]
        masks = {concept.name: res.mask}
    if not facts:
        return Answer(question, "There is no object to answer about: give a mask or ask about a known structure.",
                      False, intent, grounding=g.as_dict())
    if intent == "count":
        text = f"{len(facts)} object{'s' if len(facts) != 1 else ''}: " + ", ".join(
            f"{f.label} ({f.location})" for f in facts) + "."
    else:
        text = " ".join(_sentence(intent, f) for f in facts)
    from dataclasses import asdict

    ans = Answer(question, text, True, intent, [f.name for f in facts], [asdict(f) for f in facts], g.as_dict())
    if settings.vlm.enabled:  # the VLM phrases the answer from the same facts, number-checked (vlm.tasks)
        from medvl.language.vlm.tasks import phrase_answer

        phrase_answer(ans, volume, facts, [masks.get(f.name) for f in facts], settings.vlm)
    return ans


def _narrow(facts: list[ObjectFacts], q) -> tuple[list[ObjectFacts], str]:
    """The facts on the asked side / in the asked zone, and "" - or [] and why not ("No ...")."""
    keep = facts
    if q.side in ("left", "right"):
        keep = [f for f in keep if f.side == q.side]
    if q.level in ("upper", "middle", "lower"):
        keep = [f for f in keep if f.zone == q.level]
    if keep or not facts:
        return keep, ""
    where = "the " + " ".join(w for w in (q.level and f"{q.level} zone of the", q.side, "lung") if w)
    there = "; ".join(f"{f.label} in the {f.location}" for f in facts)
    return [], f"No: nothing in {where}; the finding{'s are' if len(facts) > 1 else ' is'} elsewhere ({there})."


def _count_candidates(question, volume, g, anatomy, settings) -> Answer:
    from medvl.language.solvers.nodule import find_candidates, lung_z_range, zone_of

    if anatomy is None:
        return Answer(question, "Lesion candidates are counted on CT only.", False, "count", grounding=g.as_dict())
    cands = [c for c in find_candidates(anatomy, settings.nodule) if c.passed]  # only lesions count
    z_range = lung_z_range(anatomy)
    side, level = g.qualifiers.side, g.qualifiers.level
    if side in ("left", "right"):
        cands = [c for c in cands if c.side == side]
    if level in ("upper", "middle", "lower") and z_range:
        cands = [c for c in cands if zone_of(c, z_range) == level]
    where = " in the " + " ".join(w for w in (level and f"{level} zone of the", side if side in ("left", "right")
                                               else None, "lungs" if side not in ("left", "right") else "lung") if w)
    if not cands:
        return Answer(question, f"No lesion candidate found{where}.", True, "count", [], [], g.as_dict())
    sides = ", ".join(f"{c.side} lung{f' ({zone_of(c, z_range)} zone)' if z_range else ''}, "
                      f"{c.radius_mm * 2:.1f} mm inscribed ball" for c in cands)
    return Answer(question, f"{len(cands)} lesion candidate{'s' if len(cands) != 1 else ''}{where}: {sides}.",
                  True, "count", [], [c.summary() for c in cands], g.as_dict())
