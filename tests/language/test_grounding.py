"""Text -> concept: paraphrases, qualifiers, refusals (not understood / not applicable),
misspellings, the volume context, and an encoder that fails to load."""

from __future__ import annotations

import json

import pytest

from medvl.errors import EngineError
from medvl.language import grounding as grounding_module
from medvl.language.errors import NotApplicableError, NotUnderstoodError
from medvl.language.grounding import Grounder, ground

CT, MR = ("CT", "chest"), ("MR", "head")

PARAPHRASES = [
    ("segment the tumour in the right lung", CT, "nodule", "right"),
    ("a spot on the lung", CT, "nodule", None),
    ("pulmonary lesion", CT, "nodule", None),
    ("lung cancer please", CT, "nodule", None),
    ("the biggest mass", CT, "nodule", None),
    ("show me the lungs", CT, "lungs", None),
    ("the air in the chest", CT, "lungs", None),
    ("left lung", CT, "left_lung", "left"),
    ("outline the lungs on the right", CT, "right_lung", "right"),
    ("the windpipe", CT, "airway", None),
    ("breathing tube", CT, "airway", None),
    ("bone", CT, "bone", None),
    ("the ribcage and spine", CT, "bone", None),
    ("osseous structures", CT, "bone", None),
    ("adipose tissue", CT, "fat", None),
    ("subcutaneous fat", CT, "fat", None),
    ("the whole patient", CT, "body", None),
    ("the patient's silhouette", CT, "body", None),
    ("left thalamus", MR, "thalamus", "left"),
    ("the right hippocampal formation", MR, "hippocampus", "right"),
    ("caudate nucleus on both sides", MR, "caudate", "both"),
    ("the lateral ventricles", MR, "lateral_ventricles", None),
    ("the ventricles", MR, "ventricles", None),
    ("white matter", MR, "white_matter", None),
    ("gray matter", MR, "grey_matter", None),
    ("brain", MR, "brain", None),
    ("basal ganglia", MR, "basal_ganglia", None),
    ("lentiform nucleus", MR, "basal_ganglia", None),
    ("the brain stem", MR, "brainstem", None),
    ("the lesion", MR, "brain_lesion", None),
    ("the tumour", MR, "brain_lesion", None),
]


@pytest.mark.parametrize("text,context,concept,side", PARAPHRASES)
def test_paraphrases(grounder, text, context, concept, side):
    g = ground(text, grounder, *context)
    assert g.understood, g.message()
    assert g.concept.name == concept and g.status == "understood"
    assert g.qualifiers.side == side


def test_qualifiers(grounder):
    q = ground("the largest nodule in the upper left lung", grounder).qualifiers
    assert (q.side, q.rank, q.level) == ("left", "largest", "upper")
    q = ground("smallest lower lesion", grounder, "CT").qualifiers
    assert (q.rank, q.level) == ("smallest", "lower")


# the examples: each shares a word or an embedding neighbourhood with a supported concept
UNSUPPORTED = ["pneumothorax", "pleural effusion", "pulmonary embolism", "rib fracture", "the spinal cord",
               "thyroid nodule", "kidney stone", "liver lesion", "the pacemaker", "port catheter", "coronary stent",
               "ground glass opacity", "vertebral body L1", "what's the weather today", "asdfgh qwerty",
               "segment the liver", "the heart", "kidney stones", "the vessels", "", "please segment"]


@pytest.mark.parametrize("text", UNSUPPORTED)
def test_unsupported_text_is_not_understood(grounder, text):
    for context in (CT, (None, None)):
        g = ground(text, grounder, *context)
        assert not g.understood and g.status == "not_understood", (text, context, g.as_dict())
        msg = g.message()
        assert msg.startswith("not understood") and "nearest known concepts" in msg
        with pytest.raises(NotUnderstoodError, match="not understood"):
            g.require()
    assert len(g.nearest) == 3 or g.refusal == "no_content"


def test_a_refusal_names_the_word_no_concept_covers(grounder):
    assert "'pneumothorax'" in ground("pneumothorax", grounder, *CT).reason
    assert "'fracture'" in ground("rib fracture", grounder, *CT).reason
    assert ground("liver lesion", grounder).reason.startswith("'liver'")
    g = ground("mass in the left lung", grounder, *CT)
    assert g.concept.name == "nodule" and g.qualifiers.side == "left"


@pytest.mark.parametrize("text,context,other", [
    ("left thalamus", CT, "thalamus"), ("glioma", CT, "brain_lesion"), ("the hippocampus", CT, "hippocampus"),
    ("lung nodule", MR, "nodule"), ("the lungs", MR, "lungs"), ("the lungs", ("CT", "abdomen"), "lungs"),
])
def test_a_concept_of_another_modality_or_region_is_not_applicable(grounder, text, context, other):
    g = ground(text, grounder, *context)
    assert not g.understood and g.status == "not_applicable" and g.other == other
    assert g.message().startswith("not applicable") and f"this volume is {context[0]}" in g.message()
    with pytest.raises(NotApplicableError):
        g.require()


def test_context_decides_what_the_lesion_is(grounder):
    assert ground("the lesion", grounder, *CT).concept.name == "nodule"
    assert ground("the lesion", grounder, *MR).concept.name == "brain_lesion"
    assert ground("bone", grounder, "CT", "abdomen").concept.name == "bone"  # any CT region
    assert ground("left thalamus", grounder, "MR", "unknown").concept.name == "thalamus"  # unknown: not gated
    m = ground("left thalamus", grounder, *CT).message()
    assert m == "not applicable: 'left thalamus' is head MR anatomy; this volume is CT of the chest"


@pytest.mark.parametrize("text,context,concept", [
    ("the nodlue", CT, "nodule"), ("tumuor in the left lung", CT, "nodule"), ("lugns", CT, "lungs"),
    ("hipocampus", MR, "hippocampus"), ("cerebelum", MR, "cerebellum"), ("thalamos", MR, "thalamus"),
])
def test_misspellings(grounder, text, context, concept):
    g = ground(text, grounder, *context)
    assert g.understood and g.concept.name == concept, g.as_dict()
    assert g.corrections


def test_short_words_are_not_respelt_into_concepts(grounder):
    """'drain' is one letter from 'brain' but a different thing: under 6 letters only a swap counts."""
    g = ground("the drain", grounder, *MR)
    assert not g.understood and "drain" not in g.corrections
    assert ground("brian", grounder, *MR).concept.name == "brain"  # a swap of neighbours is a typo


def test_keywords_only_without_encoder():
    g = Grounder(encoder=None)
    assert g.ground("tumour", modality="CT").concept.name == "nodule"
    assert g.ground("left lung").concept.name == "left_lung"
    amb = g.ground("tumour")  # lung nodule or brain lesion: without context or encoder, refused
    assert not amb.understood and amb.refusal == "ambiguous"
    miss = g.ground("the breathing pipe thing")
    assert not miss.understood and "'pipe'" in miss.reason
    ctx = g.ground("the air in the chest", modality="CT")  # named by context words only: needs the encoder
    assert not ctx.understood and "encoder is off" in ctx.reason


def test_as_dict_is_json_ready_and_backward_compatible(grounder):
    d = json.loads(json.dumps(ground("the nodule on the right", grounder, *CT).as_dict()))
    assert d["concept"] == "nodule" and d["side"] == "right"
    old = {"text", "concept", "understood", "method", "score", "side", "rank", "level", "reason", "nearest"}
    assert old <= set(d) and {"status", "modality", "region", "refusal"} <= set(d)


def test_default_grounder_raises_when_the_encoder_cannot_load(monkeypatch):
    import medvl.language.encoder as encoder_module

    def broken():
        raise OSError("safetensors file truncated")

    monkeypatch.setattr(grounding_module, "_DEFAULT", {})
    monkeypatch.setattr(encoder_module, "default_encoder", broken)
    monkeypatch.delenv(grounding_module.KEYWORDS_ONLY_ENV, raising=False)
    with pytest.raises(EngineError, match="sentence encoder failed to load.*MEDVL_GROUNDING=keywords"):
        grounding_module.default_grounder()
    monkeypatch.setenv(grounding_module.KEYWORDS_ONLY_ENV, "keywords")  # the explicit opt-in
    g = grounding_module.default_grounder()
    assert g.encoder is None and g.ground("nodule").concept.name == "nodule"
