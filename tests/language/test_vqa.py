"""Questions answered from facts; unanswerable ones say so."""

from __future__ import annotations

import pytest

from medvl.language.vqa import answer, classify


@pytest.mark.parametrize("q,intent", [
    ("How large is the nodule?", "size"), ("What are its dimensions?", "size"),
    ("Which side?", "side"), ("Is it in the left or right lung?", "side"),
    ("How many lesions?", "count"), ("What is the mean HU?", "intensity"),
    ("What is the volume of the lungs?", "volume"), ("Where is the tumour?", "location"),
    ("Is there a nodule?", "presence"),
    ("Is it malignant?", None), ("How old is the patient?", None), ("Has it grown since the prior scan?", None),
])
def test_classify(grounder, q, intent):
    assert classify(q, grounder) == intent


def test_answers_with_mask(lung2, grounder):
    volume, label = lung2
    masks = {"tumour": label}
    a = answer(volume, "How large is the tumour?", masks, grounder=grounder)
    f = a.facts[0]
    assert a.answerable and a.intent == "size" and f"{f['long_axis_mm']:.1f} x {f['short_axis_mm']:.1f} mm" in a.text
    assert "left" in answer(volume, "Which side?", masks, grounder=grounder).text
    assert "1 object" in answer(volume, "How many lesions?", masks, grounder=grounder).text
    hu = answer(volume, "What is the mean HU?", masks, grounder=grounder)
    assert f"{f['mean']:.0f} HU" in hu.text


def test_answers_from_text_alone(lung2, grounder):
    volume, _ = lung2
    a = answer(volume, "How large is the nodule?", grounder=grounder)
    assert a.answerable and "lung mass measures" in a.text and a.objects == ["nodule"]
    c = answer(volume, "How many nodules are in the left lung?", grounder=grounder)
    assert c.text.startswith("1 lesion candidate in the left lung")
    v = answer(volume, "What is the volume of the lungs?", grounder=grounder)
    assert "lungs have a volume of" in v.text


def test_unanswerable(lung1, grounder):
    volume, label = lung1
    for q in ("Is it malignant?", "What is the weather?"):
        a = answer(volume, q, {"n": label}, grounder=grounder)
        assert not a.answerable and "cannot be answered" in a.text
    liver = answer(volume, "How big is the liver?", grounder=grounder)
    assert not liver.answerable and "liver" in liver.text


@pytest.mark.parametrize("with_mask", [False, True])
def test_side_questions_are_answered_about_that_side(lung1, grounder, with_mask):
    """lung1's nodule is in the right lung: a left-lung question must not get "Yes"."""
    volume, label = lung1
    masks = {"expert": label} if with_mask else None
    right = answer(volume, "Is there a nodule in the right lung?", masks, grounder=grounder)
    left = answer(volume, "Is there a nodule in the left lung?", masks, grounder=grounder)
    assert right.answerable and right.text.startswith("Yes") and "right lung" in right.text
    assert left.answerable and left.text.startswith("No") and "left lung" in left.text and "right lung" in left.text
    assert left.objects == []
    lower = answer(volume, "How large is the nodule in the lower lung?", masks, grounder=grounder)
    assert lower.text.startswith("No") and lower.objects == []


def test_anatomy_answers_have_no_recist(lung2, grounder):
    volume, _ = lung2
    a = answer(volume, "How large are the lungs?", grounder=grounder)
    assert a.answerable and "spans" in a.text and "longest diameter" not in a.text
    assert a.facts[0]["kind"] == "anatomy" and a.facts[0]["long_axis_mm"] is None
