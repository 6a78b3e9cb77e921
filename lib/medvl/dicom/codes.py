"""Coded segmented-property category and type (SNOMED CT) for the objects MedVLSlicer segments.

One table, keyed by the concept names of `medvl.language.concepts` (the names reports and text
prompts use): category (Tissue, Anatomical Structure, Morphologically Abnormal Structure), type,
an optional laterality modifier (left/right lung) and the anatomic region of a finding. Codes
are SNOMED CT ("SCT") as DICOM CID 7150/7151/7166 use them; every one is checked against
pydicom's code dictionary in tests/dicom/test_codes.py. `basal_ganglia` (caudate + putamen +
pallidum) is coded as the corpus striatum, the nearest structure with a code in that dictionary.

`segment_codes(name, kind, side, label)` also takes names outside the table: a label whose
words name a concept ("tumour", "left lung") gets that concept's codes; anything else is
"Tissue"/"Tissue" (anatomy, unknown) or "Morphologically Abnormal Structure"/"Lesion"
(kind "lesion"), and keeps its own text as the segment label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from highdicom.sr import CodedConcept

_SCT = "SCT"


def sct(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, _SCT, meaning)


TISSUE = sct("85756007", "Tissue")
ANATOMY = sct("123037004", "Anatomical Structure")
ABNORMAL = sct("49755003", "Morphologically Abnormal Structure")
LUNG = sct("39607008", "Lung")
BRAIN = sct("12738006", "Brain")
LESION = sct("52988006", "Lesion")
NODULE = sct("27925004", "Nodule")
MASS = sct("4147007", "Mass")
LEFT = sct("7771000", "Left")
RIGHT = sct("24028007", "Right")

# concept name -> (category, type, laterality modifier or None, anatomic region or None)
TABLE: dict[str, tuple] = {
    "nodule": (ABNORMAL, NODULE, None, LUNG),
    "lungs": (ANATOMY, LUNG, None, None),
    "left_lung": (ANATOMY, LUNG, LEFT, None),
    "right_lung": (ANATOMY, LUNG, RIGHT, None),
    "airway": (ANATOMY, sct("89187006", "Airway structure"), None, None),
    "bone": (TISSUE, sct("272673000", "Bone"), None, None),
    "fat": (TISSUE, sct("248300009", "Body fat"), None, None),
    "body": (ANATOMY, sct("38266002", "Entire body"), None, None),
    "brain": (ANATOMY, BRAIN, None, None),
    "white_matter": (ANATOMY, sct("389080008", "White Matter"), None, None),
    "grey_matter": (ANATOMY, sct("389081007", "Gray Matter"), None, None),
    "thalamus": (ANATOMY, sct("42695009", "Thalamus"), None, None),
    "caudate": (ANATOMY, sct("11000004", "Caudate nucleus"), None, None),
    "putamen": (ANATOMY, sct("89278009", "Putamen"), None, None),
    "pallidum": (ANATOMY, sct("14738005", "Globus pallidus"), None, None),
    "hippocampus": (ANATOMY, sct("5366008", "Hippocampus"), None, None),
    "amygdala": (ANATOMY, sct("4958002", "Amygdala"), None, None),
    "accumbens": (ANATOMY, sct("427667007", "Nucleus accumbens"), None, None),
    "lateral_ventricles": (ANATOMY, sct("66720007", "Lateral ventricle"), None, None),
    "ventricles": (ANATOMY, sct("35764002", "Brain ventricle"), None, None),
    "basal_ganglia": (ANATOMY, sct("31428008", "Corpus striatum"), None, None),
    "cerebellum": (ANATOMY, sct("113305005", "Cerebellum"), None, None),
    "brainstem": (ANATOMY, sct("119238007", "Brain stem"), None, None),
    "brain_lesion": (ABNORMAL, LESION, None, BRAIN),
}
_SIDED = {"hippocampus", "amygdala", "thalamus", "caudate", "putamen", "pallidum", "accumbens", "lateral_ventricles",
          "basal_ganglia", "cerebellum", "white_matter", "grey_matter"}


@dataclass(frozen=True)
class SegmentCodes:
    category: CodedConcept  # SegmentedPropertyCategoryCodeSequence
    type: CodedConcept  # SegmentedPropertyTypeCodeSequence
    modifier: CodedConcept | None  # SegmentedPropertyTypeModifierCodeSequence (laterality)
    region: CodedConcept | None  # AnatomicRegionSequence (where a finding is)
    concept: str | None  # the concept name it was coded as (None: generic code)


def concept_for(name: str, label: str = "", kind: str = "unknown") -> str | None:
    """The concept a report object or user label names: its name ("nodule", "nodule#2"), or a
    concept keyword among the label's words ("tumour" -> nodule, "left lung" -> left_lung; words are
    split at spaces, "_", "-", ":", so "lung2_label" names nothing). A "lesion" matches only
    lesion concepts, "anatomy" only tissue ones."""
    from medvl.language.concepts import CONCEPTS

    base = re.sub(r"#\d+$", "", str(name or "")).strip().lower()
    if base in TABLE:
        return base
    text = " " + re.sub(r"[\s_:,.#/-]+", " ", f"{label} {name}".lower().replace("tumour", "tumor")) + " "
    best = None  # the concept with the longest keyword found (so "left lung" beats "lung")
    for c in CONCEPTS:
        if c.name not in TABLE or (kind == "lesion") != (c.kind == "lesion") and kind != "unknown":
            continue
        for kw in c.keywords:
            if f" {kw} " in text and (best is None or len(kw) > best[0]):
                best = (len(kw), c.name)
    return best[1] if best else None


def segment_codes(name: str, kind: str = "unknown", side: str = "", label: str = "") -> SegmentCodes:
    """Codes of an object (see the module docstring). `kind`: "lesion", "anatomy" or "unknown";
    `side`: the report's side ("left"/"right" adds a laterality modifier to sided brain structures)."""
    concept = concept_for(name, label, kind)
    if concept is None:
        if kind == "lesion":
            return SegmentCodes(ABNORMAL, LESION, None, None, None)
        return SegmentCodes(TISSUE, TISSUE, None, None, None)
    category, type_, modifier, region = TABLE[concept]
    if concept == "nodule" and "mass" in str(label).lower():
        type_ = MASS
    if modifier is None and concept in _SIDED and side in ("left", "right"):
        modifier = LEFT if side == "left" else RIGHT
    return SegmentCodes(category, type_, modifier, region, concept)
