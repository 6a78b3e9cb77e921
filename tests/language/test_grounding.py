"""Text -> concept: paraphrases, side/size/level words, and text that must not be grounded."""

from __future__ import annotations

import pytest

from medvl.language.errors import NotUnderstoodError
from medvl.language.grounding import Grounder, ground

PARAPHRASES = [
    ("segment the tumour in the right lung", "nodule", "right"),
    ("a spot on the lung", "nodule", None),
    ("pulmonary lesion", "nodule", None),
    ("lung cancer please", "nodule", None),
    ("the biggest mass", "nodule", None),
    ("show me the lungs", "lungs", None),
    ("the air in the chest", "lungs", None),
    ("left lung", "left_lung", "left"),
    ("outline the lungs on the right", "right_lung", "right"),
    ("the windpipe", "airway", None),
    ("breathing tube", "airway", None),
    ("bone", "bone", None),
    ("the ribcage and spine", "bone", None),
    ("osseous structures", "bone", None),
    ("adipose tissue", "fat", None),
    ("subcutaneous fat", "fat", None),
    ("the whole patient", "body", None),
    ("the patient's silhouette", "body", None),
]


@pytest.mark.parametrize("text,concept,side", PARAPHRASES)
def test_paraphrases(grounder, text, concept, side):
    g = ground(text, grounder)
    assert g.understood, g.message()
    assert g.concept.name == concept
    assert g.qualifiers.side == side


def test_qualifiers(grounder):
    q = ground("the largest nodule in the upper left lung", grounder).qualifiers
    assert (q.side, q.rank, q.level) == ("left", "largest", "upper")
    q = ground("smallest lower lesion", grounder).qualifiers
    assert (q.rank, q.level) == ("smallest", "lower")


@pytest.mark.parametrize("text", ["what's the weather today", "asdfgh qwerty", "segment the liver", "the heart",
                                  "kidney stones", "pleural effusion", "the vessels", "", "please segment"])
def test_unknown_text_is_not_understood(grounder, text):
    g = ground(text, grounder)
    assert not g.understood
    msg = g.message()
    assert msg.startswith("not understood") and "nearest known concepts" in msg
    assert len(g.nearest) == 3 or not text.strip() or text == "please segment"
    with pytest.raises(NotUnderstoodError, match="not understood"):
        g.require()


def test_finding_beats_location(grounder):
    """'liver lesion' must not become a lung nodule; 'mass in the left lung' is the mass."""
    assert not ground("liver lesion", grounder).understood
    g = ground("mass in the left lung", grounder)
    assert g.concept.name == "nodule" and g.qualifiers.side == "left"


def test_keywords_only_without_encoder():
    g = Grounder(encoder=None)
    assert g.ground("tumour").concept.name == "nodule"
    assert g.ground("left lung").concept.name == "left_lung"
    miss = g.ground("the breathing pipe thing")
    assert not miss.understood and "encoder" in miss.reason


def test_as_dict_is_json_ready(grounder):
    import json

    d = ground("the nodule on the right", grounder).as_dict()
    assert json.loads(json.dumps(d))["concept"] == "nodule" and d["side"] == "right"
