"""medvl.dicom.codes: every code is a real SNOMED CT code (in pydicom's dictionary, same meaning), every
concept the grounding can segment has one, and unknown labels get the generic code with their own text."""

from __future__ import annotations

import pytest
from pydicom.sr._concepts_dict import concepts

from medvl.dicom.codes import TABLE, concept_for, segment_codes
from medvl.language.concepts import CONCEPTS


def _all_codes():
    for name, row in TABLE.items():
        for code in row:
            if code is not None:
                yield name, code


@pytest.mark.parametrize("name, code", list(_all_codes()), ids=lambda v: getattr(v, "meaning", v))
def test_codes_are_in_pydicoms_snomed_dictionary(name, code):
    assert code.scheme_designator == "SCT"
    meanings = {m.lower() for entry in concepts["SCT"].values() for value, (m, _) in entry.items()
                if value == code.value}
    assert code.meaning.lower() in meanings, f"{name}: {code.value} is {meanings or 'not in the dictionary'}"


def test_every_grounded_concept_has_codes():
    assert {c.name for c in CONCEPTS} <= set(TABLE)


@pytest.mark.parametrize("name, label, kind, side, want", [
    ("nodule#2", "lung nodule", "lesion", "left", ("nodule", "Nodule", None)),
    ("nodule", "lung mass", "lesion", "left", ("nodule", "Mass", None)),
    ("tumour", "tumour", "lesion", "", ("nodule", "Nodule", None)),
    ("object 1", "right lung", "anatomy", "", ("right_lung", "Lung", "Right")),
    ("hippocampus", "hippocampus", "anatomy", "left", ("hippocampus", "Hippocampus", "Left")),
    ("lung2_label:3", "region lung2_label:3", "unknown", "", (None, "Tissue", None)),
    ("thing", "thing", "lesion", "", (None, "Lesion", None)),
    ("lung2_label", "lung mass", "lesion", "left", ("nodule", "Mass", None)),
])
def test_segment_codes(name, label, kind, side, want):
    codes = segment_codes(name, kind, side, label)
    got = (codes.concept, codes.type.meaning, codes.modifier.meaning if codes.modifier else None)
    assert got == want
    assert concept_for(name, label, kind) == want[0]
