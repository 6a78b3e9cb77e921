"""The vocabulary: every concept a text prompt can be grounded to, and how it is solved.

A concept has keywords (whole words or phrases that name it: a prompt needs one of them, or
the sentence encoder's confident vote, to be grounded to it), context words (words that may
accompany it without naming it: "lung" in "the nodule in the lung"), and example phrasings
(embedded once by the sentence encoder and compared with the prompt; their words are
context words too). `solver` names the function in `medvl.language.solvers.SOLVERS`; `kind`
tells the report whether the object is a finding ("lesion") or anatomy ("tissue");
`modalities` and `regions` say on which volumes it applies (`ANY_REGION`: every region of
that modality). `parent` marks a sided variant reached from its parent by a side word
("left" + lungs -> left_lung); the grounder never picks it directly.

Brain structures ("atlas" solver) take their side from the grounding's qualifiers
(left/right/both). "lentiform nucleus" (putamen + pallidum) maps to `basal_ganglia`, the
nearest group the atlas solver segments; a narrower lentiform mask is not offered.
"""

from __future__ import annotations

from dataclasses import dataclass

ANY_REGION = "any"
REGIONS = ("chest", "head", "abdomen")  # what medvl.region infers (or "unknown")


@dataclass(frozen=True)
class Concept:
    name: str  # stable id, also the object name in reports
    label: str  # how the user reads it
    kind: str  # "lesion" or "tissue"
    solver: str  # key of medvl.language.solvers.SOLVERS
    modalities: tuple[str, ...]  # volumes it can be solved on
    keywords: tuple[str, ...]  # whole words/phrases (lowercase, US spelling) that name it
    phrases: tuple[str, ...]  # example phrasings for the sentence encoder (their words are context)
    regions: tuple[str, ...] = (ANY_REGION,)  # body regions it applies to
    context: tuple[str, ...] = ()  # words allowed next to a keyword without naming the concept
    parent: str | None = None  # sided variant of this concept (reached by a side word only)

    def applies_to(self, modality: str | None = None, region: str | None = None) -> bool:
        """True when the concept can be solved on a `modality` volume of body `region`
        (None or "unknown": not gated)."""
        if modality and modality.upper() not in self.modalities:
            return False
        if region and region != "unknown" and ANY_REGION not in self.regions and region not in self.regions:
            return False
        return True

    def where(self) -> str:
        """'brain MR' / 'chest CT' / 'CT': where the concept applies, for refusals."""
        mods = "/".join(self.modalities)
        regs = [r for r in self.regions if r != ANY_REGION]
        return f"{'/'.join(regs)} {mods}".strip() if regs else mods


_CHEST_CT = dict(modalities=("CT",), regions=("chest",))
_ANY_CT = dict(modalities=("CT",), regions=(ANY_REGION,))
_HEAD_MR = dict(modalities=("MR",), regions=("head",))
_BRAIN_CONTEXT = ("brain", "cerebral", "nucleus", "nuclei", "gray", "grey", "cerebrum")


def _brain(name, label, keywords, phrases, context=()):
    return Concept(name, label, "tissue", "atlas", keywords=keywords, phrases=phrases,
                   context=_BRAIN_CONTEXT + tuple(context), **_HEAD_MR)


CONCEPTS: tuple[Concept, ...] = (
    Concept("nodule", "lung nodule or mass", "lesion", "nodule",
            keywords=("nodule", "nodules", "tumor", "tumors", "mass", "masses", "lesion", "lesions", "cancer",
                      "carcinoma", "neoplasm", "malignancy", "metastasis", "metastases", "growth", "spot",
                      "lump", "coin lesion"),
            phrases=("lung nodule", "pulmonary nodule", "the tumor in the lung", "lung mass", "lung cancer",
                     "the lesion", "a spot on the lung", "suspicious growth in the chest", "the tumour",
                     "pulmonary mass", "solid nodule", "the cancer"),
            context=("lung", "lungs", "pulmonary", "chest", "lobe", "thoracic", "intrapulmonary"),
            **_CHEST_CT),
    Concept("lungs", "lungs", "tissue", "lungs",
            keywords=("lung", "lungs", "pulmonary parenchyma", "lung parenchyma"),
            phrases=("the lungs", "both lungs", "lung fields", "pulmonary parenchyma", "the air in the chest",
                     "lung tissue"),
            context=("pulmonary", "parenchyma", "field", "fields", "aerated"), **_CHEST_CT),
    Concept("left_lung", "left lung", "tissue", "left_lung", keywords=("left lung",),
            phrases=("the left lung", "left pulmonary lobe", "left side lung"), parent="lungs", **_CHEST_CT),
    Concept("right_lung", "right lung", "tissue", "right_lung", keywords=("right lung",),
            phrases=("the right lung", "right pulmonary lobe", "right side lung"), parent="lungs", **_CHEST_CT),
    Concept("airway", "airway", "tissue", "airway",
            keywords=("airway", "airways", "trachea", "windpipe", "bronchus", "bronchi", "bronchial tree",
                      "tracheobronchial tree"),
            phrases=("the airway", "trachea", "windpipe", "the bronchi", "main bronchi", "bronchial tree",
                     "breathing tube"),
            context=("main", "bronchial", "tree", "central", "large"), **_CHEST_CT),
    Concept("bone", "bone", "tissue", "bone",
            keywords=("bone", "bones", "skeleton", "skeletal", "spine", "vertebra", "vertebrae", "ribs", "rib",
                      "sternum", "osseous", "ribcage", "bony"),
            phrases=("bones", "the skeleton", "spine and ribs", "the vertebrae", "bony structures",
                     "osseous structures", "ribcage"),
            context=("cage", "column", "structures"), **_ANY_CT),
    Concept("fat", "fat", "tissue", "fat",
            keywords=("fat", "adipose", "fatty tissue", "subcutaneous fat", "visceral fat"),
            phrases=("fat", "adipose tissue", "body fat", "subcutaneous fat", "fatty tissue"),
            context=("subcutaneous", "visceral", "fatty", "body"), **_ANY_CT),
    Concept("body", "body outline", "tissue", "body",
            keywords=("body", "patient", "body outline", "whole body", "skin", "torso", "silhouette",
                      "body contour"),
            phrases=("the body", "the whole patient", "body outline", "body contour", "the patient's silhouette",
                     "everything inside the skin", "the torso"),
            context=("whole", "entire", "everything", "inside", "outline", "contour", "surface"), **_ANY_CT),
    # ---- brain MR (atlas solver; side from the qualifiers) ----
    _brain("brain", "brain", ("brain", "brain mask", "intracranial", "cerebrum", "encephalon"),
           ("the brain", "whole brain", "brain mask", "brain tissue", "intracranial contents"),
           ("whole", "entire", "mask", "parenchyma", "intracranial", "contents")),
    _brain("white_matter", "white matter", ("white matter", "cerebral white matter"),
           ("white matter", "the cerebral white matter", "brain white matter"), ("white", "matter")),
    _brain("grey_matter", "grey matter", ("grey matter", "gray matter", "cortex", "cortical", "cerebral cortex"),
           ("grey matter", "gray matter", "the cortex", "cortical grey matter"), ("matter", "cortex", "cortical")),
    _brain("thalamus", "thalamus", ("thalamus", "thalami", "thalamic"),
           ("thalamus", "the thalami", "thalamic nuclei")),
    _brain("caudate", "caudate", ("caudate", "caudate nucleus", "caudate nuclei"),
           ("caudate nucleus", "the caudate", "head of the caudate"), ("head",)),
    _brain("putamen", "putamen", ("putamen", "putamina"), ("putamen", "the putamen")),
    _brain("pallidum", "pallidum", ("pallidum", "globus pallidus", "pallidal"),
           ("globus pallidus", "pallidum"), ("globus", "pallidus")),
    _brain("hippocampus", "hippocampus", ("hippocampus", "hippocampi", "hippocampal", "hippocampal formation"),
           ("hippocampus", "hippocampal formation", "the hippocampi"), ("formation",)),
    _brain("amygdala", "amygdala", ("amygdala", "amygdalae", "amygdaloid"),
           ("amygdala", "amygdaloid nucleus", "the amygdalae"), ("amygdaloid", "body")),
    _brain("accumbens", "nucleus accumbens", ("accumbens", "nucleus accumbens"),
           ("nucleus accumbens", "accumbens area")),
    _brain("lateral_ventricles", "lateral ventricles",
           ("lateral ventricle", "lateral ventricles"),
           ("lateral ventricles", "the lateral ventricle"), ("lateral", "ventricle", "ventricles")),
    _brain("ventricles", "ventricles", ("ventricle", "ventricles", "ventricular system"),
           ("the ventricles", "ventricular system", "brain ventricles", "cerebrospinal fluid spaces",
            "csf spaces"),
           ("system", "ventricular", "csf", "cerebrospinal", "fluid", "spaces")),
    _brain("basal_ganglia", "basal ganglia", ("basal ganglia", "lentiform nucleus", "lenticular nucleus",
                                              "striatum", "corpus striatum"),
           ("basal ganglia", "the deep grey nuclei", "lentiform nucleus", "striatum"),
           ("ganglia", "lentiform", "lenticular", "corpus", "deep")),
    _brain("cerebellum", "cerebellum", ("cerebellum", "cerebellar"),
           ("cerebellum", "the cerebellar hemispheres"), ("hemisphere", "hemispheres")),
    _brain("brainstem", "brainstem", ("brainstem", "brain stem"),
           ("brainstem", "the brain stem"), ("stem",)),
    Concept("brain_lesion", "brain lesion", "lesion", "mr_lesion",
            keywords=("tumor", "tumors", "lesion", "lesions", "mass", "masses", "glioma", "glioblastoma",
                      "neoplasm", "metastasis", "metastases", "cancer", "growth", "abnormality", "meningioma"),
            phrases=("brain tumor", "the lesion in the brain", "brain lesion", "intracranial mass", "the glioma",
                     "brain metastasis", "abnormal region in the brain"),
            context=("brain", "cerebral", "intracranial", "abnormal", "enhancing", "region", "hemisphere"),
            **_HEAD_MR),
)

BY_NAME: dict[str, Concept] = {c.name: c for c in CONCEPTS}
