"""Free text -> one concept of the vocabulary, plus the qualifiers that narrow the choice.

`ground("segment the tumour in the right lung")` -> Grounding(concept=nodule, side="right").

Order of decisions:
1. Qualifier words are read first: side (left/right/both), rank (largest/smallest), level
   (upper/middle/lower).
2. A prompt that names anatomy outside the vocabulary (liver, kidney, heart, ...) is not
   understood, even when it also has a known word: "liver lesion" must not become a lung
   nodule.
3. Keywords (whole words) ground directly. When several concepts match, a finding beats
   anatomy ("the mass in the left lung" is the mass) and the longer keyword wins among
   anatomy ("left lung" over "lung").
4. Otherwise the sentence encoder compares the prompt with each concept's example phrasings;
   the best concept is taken when its cosine similarity reaches `threshold`.
5. Else the answer is "not understood", listing the nearest concepts - never a guess.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np

from medvl.language.concepts import BY_NAME, CONCEPTS, UNSUPPORTED_ANATOMY, Concept
from medvl.language.errors import NotUnderstoodError

log = logging.getLogger(__name__)

_SPELLING = {"tumour": "tumor", "tumours": "tumors", "oesophagus": "esophagus", "haemorrhage": "hemorrhage",
             "centre": "center", "oedema": "edema", "foetal": "fetal", "anaesthesia": "anesthesia"}
_SIDE = {"left": "left", "right": "right", "both": "both", "bilateral": "both", "sinistral": "left",
         "dextral": "right"}
_RANK = {"largest": "largest", "biggest": "largest", "dominant": "largest", "main": "largest",
         "smallest": "smallest", "tiniest": "smallest"}
_LEVEL = {"upper": "upper", "superior": "upper", "apical": "upper", "top": "upper",
          "lower": "lower", "inferior": "lower", "basal": "lower", "bottom": "lower",
          "middle": "middle", "mid": "middle"}
# words that ask for an action or are filler; removed before embedding
_FILLER = {"segment", "segmentation", "show", "me", "the", "a", "an", "please", "find", "outline", "mask",
           "highlight", "mark", "draw", "delineate", "contour", "select", "get", "of", "in", "on", "at", "all",
           "can", "you", "i", "want", "need", "to", "see", "display", "label", "detect", "locate", "where",
           "is", "are", "and", "its", "it", "this", "that", "there", "any"}


def normalize(text: str) -> list[str]:
    """Lowercase words with US spelling; punctuation dropped."""
    words = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())
    return [_SPELLING.get(w, w) for w in words]


@dataclass
class Qualifiers:
    side: str | None = None  # "left", "right" or "both" (patient's)
    rank: str | None = None  # "largest" or "smallest"
    level: str | None = None  # "upper", "middle" or "lower"


@dataclass
class Grounding:
    text: str  # the prompt as given
    concept: Concept | None  # None: not understood
    qualifiers: Qualifiers = field(default_factory=Qualifiers)
    method: str = ""  # "keyword", "embedding" or "" when not understood
    score: float = 0.0  # cosine similarity of the prompt to the chosen concept (encoder), 0..1
    nearest: list[tuple[str, float]] = field(default_factory=list)  # (concept name, similarity), best first
    reason: str = ""  # why not understood

    @property
    def understood(self) -> bool:
        return self.concept is not None

    def message(self) -> str:
        """One line for a user: what was understood, or why not and what is known."""
        if self.understood:
            q = self.qualifiers
            extra = ", ".join(v for v in (q.side, q.rank, q.level) if v)
            return f"understood as {self.concept.label}" + (f" ({extra})" if extra else "")
        near = ", ".join(BY_NAME[n].label for n, _ in self.nearest[:3])
        return f"not understood: {self.text!r} ({self.reason}); nearest known concepts: {near}"

    def require(self) -> "Grounding":
        """self when understood, else NotUnderstoodError with `message()`."""
        if not self.understood:
            raise NotUnderstoodError(self.message())
        return self

    def as_dict(self) -> dict:
        q = self.qualifiers
        return {"text": self.text, "concept": self.concept.name if self.concept else None,
                "understood": self.understood, "method": self.method, "score": round(self.score, 3),
                "side": q.side, "rank": q.rank, "level": q.level, "reason": self.reason,
                "nearest": [[n, round(s, 3)] for n, s in self.nearest]}


class Grounder:
    """Grounds text with keywords and a sentence encoder (`None`: keywords only)."""

    def __init__(self, encoder=None, threshold: float = 0.55, concepts: tuple[Concept, ...] = CONCEPTS):
        self.encoder = encoder
        self.threshold = threshold
        self.concepts = concepts
        self._phrase_owner: list[int] = []
        self._phrase_vecs = None
        if encoder is not None:
            phrases = []
            for n, c in enumerate(concepts):
                for p in (c.label,) + c.phrases:
                    phrases.append(p)
                    self._phrase_owner.append(n)
            self._phrase_vecs = encoder.encode(phrases)

    def similarities(self, text: str) -> list[tuple[str, float]]:
        """(concept name, best cosine similarity over its phrasings), best first; [] without encoder."""
        if self.encoder is None:
            return []
        v = self.encoder.encode([text])[0]
        sims = self._phrase_vecs @ v
        best = np.full(len(self.concepts), -1.0)
        for owner, s in zip(self._phrase_owner, sims):
            best[owner] = max(best[owner], float(s))
        order = np.argsort(best)[::-1]
        return [(self.concepts[n].name, float(best[n])) for n in order]

    def ground(self, text: str) -> Grounding:
        words = normalize(text)
        quals = Qualifiers(
            side=next((_SIDE[w] for w in words if w in _SIDE), None),
            rank=next((_RANK[w] for w in words if w in _RANK), None),
            level=next((_LEVEL[w] for w in words if w in _LEVEL), None),
        )
        joined = " " + " ".join(words) + " "
        content = [w for w in words if w not in _FILLER and w not in _SIDE and w not in _RANK and w not in _LEVEL]
        query = " ".join(content) if content else " ".join(words)
        sims = self.similarities(query) if query else []
        score_of = dict(sims)
        g = Grounding(text=text, concept=None, qualifiers=quals, nearest=sims[:3])
        if not content:
            g.reason = "no content words"
            return g
        unsupported = [w for w in UNSUPPORTED_ANATOMY if f" {w} " in joined]
        if unsupported:
            g.reason = f"'{unsupported[0]}' is not a structure the offline solvers know"
            return g
        hits = []
        for n, c in enumerate(self.concepts):
            for kw in c.keywords:
                if f" {kw} " in joined:
                    hits.append((c.kind == "lesion", len(kw), -n, c))
        if hits:
            hits.sort(key=lambda h: h[:3], reverse=True)
            concept = hits[0][3]
            if sims and concept.kind != "lesion":  # "a spot on the lung": the encoder knows it is a finding
                top, top_score = BY_NAME[sims[0][0]], sims[0][1]
                if top.kind == "lesion" and top_score >= max(self.threshold, score_of.get(concept.name, 0) + 0.1):
                    concept = top
            concept = self._apply_side(concept, quals)
            g.concept, g.method, g.score = concept, "keyword", score_of.get(concept.name, 1.0)
            return g
        if sims and sims[0][1] >= self.threshold:
            concept = self._apply_side(BY_NAME[sims[0][0]], quals)
            g.concept, g.method, g.score = concept, "embedding", sims[0][1]
            return g
        g.reason = (f"closest match {sims[0][1]:.2f} is below {self.threshold:.2f}" if sims
                    else "no known keyword (sentence encoder not loaded)")
        return g

    def _apply_side(self, concept: Concept, quals: Qualifiers) -> Concept:
        """'lungs' with a side word is that lung."""
        if concept.name == "lungs" and quals.side in ("left", "right"):
            return BY_NAME[f"{quals.side}_lung"]
        return concept


_DEFAULT: Grounder | None = None


def default_grounder() -> Grounder:
    """Process-wide grounder with the MiniLM encoder; keywords only if the encoder is missing."""
    global _DEFAULT
    if _DEFAULT is None:
        from medvl.language.encoder import default_encoder

        try:
            enc = default_encoder()
        except Exception as err:  # noqa: BLE001 - a missing encoder degrades, it does not break
            log.warning("sentence encoder unavailable (%s); grounding by keywords only", err)
            enc = None
        _DEFAULT = Grounder(enc)
    return _DEFAULT


def ground(text: str, grounder: Grounder | None = None) -> Grounding:
    """Ground free text onto the vocabulary (see the module docstring)."""
    return (grounder or default_grounder()).ground(text)
