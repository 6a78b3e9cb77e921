"""Words a prompt may use besides concept words: qualifiers, modifiers and filler; the
spelling rules (US spelling, edit distance) the grounder uses to read them.

Everything here applies to every concept. A prompt word that is neither here nor in the
chosen concept's vocabulary (`medvl.language.concepts`) makes the prompt "not understood":
that is the grounding rule, so these lists hold only words that never name a structure or
a finding of their own (actions, articles, question words, sides, sizes, shapes, scan words).
"""

from __future__ import annotations

import re

SPELLING = {"tumour": "tumor", "tumours": "tumors", "oesophagus": "esophagus", "haemorrhage": "hemorrhage",
            "centre": "center", "oedema": "edema", "foetal": "fetal", "anaesthesia": "anesthesia",
            "tumoral": "tumor"}
SIDE = {"left": "left", "right": "right", "both": "both", "bilateral": "both", "sinistral": "left",
        "dextral": "right", "l": "left", "r": "right", "lt": "left", "rt": "right"}
RANK = {"largest": "largest", "biggest": "largest", "dominant": "largest", "main": "largest",
        "smallest": "smallest", "tiniest": "smallest"}
LEVEL = {"upper": "upper", "superior": "upper", "apical": "upper", "top": "upper",
         "lower": "lower", "inferior": "lower", "bottom": "lower", "middle": "middle", "mid": "middle"}
# size, shape and appearance words that narrow a finding without naming a new one
MODIFIERS = {"small", "large", "big", "tiny", "huge", "little", "round", "rounded", "oval", "irregular",
             "spiculated", "lobulated", "solitary", "single", "suspicious", "obvious", "visible", "new",
             "known", "primary", "index", "target", "one", "two", "sides", "side", "region", "area", "zone",
             "portion", "tissue", "tissues", "structure", "structures", "whole", "entire", "complete", "total",
             "hemisphere", "hemispheres", "anterior", "posterior", "medial", "lateral", "central", "peripheral",
             "front", "back", "near", "inside", "within"}
# actions, articles, pronouns, question words and scan words: no content of their own
FILLER = {"segment", "segmentation", "show", "me", "the", "a", "an", "please", "find", "outline", "mask", "masks",
          "highlight", "mark", "draw", "delineate", "contour", "select", "get", "of", "in", "on", "at", "all",
          "can", "could", "would", "you", "i", "we", "want", "need", "to", "see", "display", "label", "detect",
          "locate", "where", "is", "are", "and", "its", "it", "this", "that", "there", "any", "with", "for",
          "from", "into", "by", "my", "our", "your", "his", "her", "their", "patient's", "be", "was", "were",
          "do", "does", "did", "have", "has", "what", "which", "how", "many", "much", "size", "measure",
          "measurement", "volume", "diameter", "diameters", "located", "location", "present", "identify",
          "ct", "mr", "mri", "scan", "image", "study", "series", "t1", "t2", "weighted", "here", "just",
          "only", "so", "some", "these", "those", "them", "they", "give", "make", "create", "also",
          "extract", "isolate", "pick", "let's", "lets", "let", "us", "whats", "what's", "where's", "number",
          "count", "mean", "hu", "intensity", "density", "long", "wide", "thick", "or", "not", "tell", "about", "up", "each", "every", "same", "other"}

CLOSED = set(SIDE) | set(RANK) | set(LEVEL) | MODIFIERS | FILLER  # words covered for every concept


def normalize(text: str) -> list[str]:
    """Lowercase words with US spelling; punctuation dropped (hyphens split words)."""
    words = re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())
    return [SPELLING.get(w, w) for w in words]


def edit_distance(a: str, b: str, limit: int = 3) -> int:
    """Damerau-Levenshtein distance (optimal string alignment: a swap of neighbours is one
    edit), capped at `limit` + 1 for speed."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2, prev = None, list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if prev2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def allowed_edits(word: str, long_word: int = 8) -> int:
    """How many edits a misspelling of `word` may have: none under 4 letters, one swap of
    neighbours only under 6 ("lugns"; a substitution there too often makes another real
    word: "drain" / "brain"), one edit from 6 letters, two from `long_word` letters."""
    if len(word) < 4:
        return 0
    return 2 if len(word) >= long_word else 1


def _swap_only(word: str, other: str) -> bool:
    """True when `other` is `word` with two neighbouring letters swapped."""
    if len(word) != len(other) or word == other:
        return False
    diff = [i for i, (a, b) in enumerate(zip(word, other)) if a != b]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and word[diff[0]] == other[diff[1]] \
        and word[diff[1]] == other[diff[0]]


def correct(word: str, vocabulary: set[str], long_word: int = 8) -> str | None:
    """The vocabulary word `word` is a misspelling of (unique nearest within `allowed_edits`),
    or None. Words that are in the vocabulary are their own answer."""
    if word in vocabulary:
        return word
    limit = allowed_edits(word, long_word)
    if not limit:
        return None
    best, best_d, tie = None, limit + 1, False
    for v in vocabulary:
        if len(v) < 4:
            continue
        if len(word) < 6:
            d = 1 if _swap_only(word, v) else limit + 1
        else:
            d = edit_distance(word, v, limit)
        if d < best_d:
            best, best_d, tie = v, d, False
        elif d == best_d:
            tie = True
    return best if best is not None and best_d <= limit and not tie else None
