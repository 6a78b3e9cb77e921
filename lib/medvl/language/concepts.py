"""The vocabulary: every concept a text prompt can be grounded to, and how it is solved.

A concept has example phrasings (embedded once by the sentence encoder and compared with
the prompt) and keywords (whole words that ground the prompt without the encoder).
`solver` names the function in `medvl.language.solvers.SOLVERS`; `kind` tells the report
whether the object is a finding ("lesion") or anatomy ("tissue").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Concept:
    name: str  # stable id, also the object name in reports
    label: str  # how the user reads it
    kind: str  # "lesion" or "tissue"
    solver: str  # key of medvl.language.solvers.SOLVERS
    modalities: tuple[str, ...]  # volumes it can be solved on
    keywords: tuple[str, ...]  # whole words/phrases (lowercase, US spelling) that ground directly
    phrases: tuple[str, ...]  # example phrasings for the sentence encoder


CONCEPTS: tuple[Concept, ...] = (
    Concept("nodule", "lung nodule or mass", "lesion", "nodule", ("CT",),
            ("nodule", "nodules", "tumor", "tumors", "mass", "masses", "lesion", "lesions", "cancer",
             "carcinoma", "neoplasm", "malignancy", "metastasis", "metastases", "growth", "opacity", "spot",
             "lump", "coin lesion"),
            ("lung nodule", "pulmonary nodule", "the tumor in the lung", "lung mass", "lung cancer",
             "the lesion", "a spot on the lung", "suspicious growth in the chest", "the tumour",
             "pulmonary mass", "solid nodule", "the cancer")),
    Concept("lungs", "lungs", "tissue", "lungs", ("CT",),
            ("lung", "lungs", "pulmonary parenchyma", "lung parenchyma"),
            ("the lungs", "both lungs", "lung fields", "pulmonary parenchyma", "the air in the chest",
             "lung tissue")),
    Concept("left_lung", "left lung", "tissue", "left_lung", ("CT",),
            ("left lung",), ("the left lung", "left pulmonary lobe", "left side lung")),
    Concept("right_lung", "right lung", "tissue", "right_lung", ("CT",),
            ("right lung",), ("the right lung", "right pulmonary lobe", "right side lung")),
    Concept("airway", "airway", "tissue", "airway", ("CT",),
            ("airway", "airways", "trachea", "windpipe", "bronchus", "bronchi", "bronchial tree"),
            ("the airway", "trachea", "windpipe", "the bronchi", "main bronchi", "bronchial tree",
             "breathing tube")),
    Concept("bone", "bone", "tissue", "bone", ("CT",),
            ("bone", "bones", "skeleton", "skeletal", "spine", "vertebra", "vertebrae", "ribs", "rib",
             "sternum", "osseous"),
            ("bones", "the skeleton", "spine and ribs", "the vertebrae", "bony structures",
             "osseous structures", "ribcage")),
    Concept("fat", "fat", "tissue", "fat", ("CT",),
            ("fat", "adipose", "fatty tissue", "subcutaneous fat", "visceral fat"),
            ("fat", "adipose tissue", "body fat", "subcutaneous fat", "fatty tissue")),
    Concept("body", "body outline", "tissue", "body", ("CT",),
            ("body", "patient", "body outline", "whole body", "skin", "torso", "silhouette"),
            ("the body", "the whole patient", "body outline", "body contour", "the patient's silhouette",
             "everything inside the skin", "the torso")),
)

BY_NAME: dict[str, Concept] = {c.name: c for c in CONCEPTS}

# Anatomy that the offline solvers do not know. A prompt naming one of these is answered
# "not understood" even if it also has a known word ("liver lesion" is not a lung nodule).
UNSUPPORTED_ANATOMY: tuple[str, ...] = (
    "liver", "hepatic", "kidney", "kidneys", "renal", "spleen", "pancreas", "stomach", "bowel", "colon",
    "intestine", "bladder", "prostate", "uterus", "ovary", "brain", "cerebral", "head", "skull", "heart",
    "cardiac", "aorta", "breast", "thyroid", "adrenal", "gallbladder", "esophagus", "muscle", "muscles",
    "eye", "knee", "hip", "pelvis", "abdomen", "abdominal", "vessel", "vessels", "artery", "vein", "pleura",
    "pleural", "mediastinum", "mediastinal", "lymph", "soft tissue", "effusion", "emphysema",
)
