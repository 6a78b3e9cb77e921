"""The grounding benchmark: its prompt sets are well formed and `run()` reports both splits."""

from __future__ import annotations

from medvl.bench import language_grounding as bench
from medvl.language.concepts import BY_NAME


def test_prompt_sets_are_labelled_and_split():
    tune, held = bench.load("tune"), bench.load("heldout")
    assert len(tune) + len(held) >= 150 and len(held) >= 50
    for p in tune + held:
        assert p["expected"] is None or p["expected"] in BY_NAME, p
        assert p["modality"] in (None, "CT", "MR") and p["region"] in (None, "chest", "head", "abdomen")
    assert not {p["text"] for p in held if p["modality"] is None} & {p["text"] for p in tune if p["modality"] is None}
    assert sum(p["expected"] is None for p in held) >= 25  # many unsupported findings and structures


def test_run_reports_precision_recall_per_split():
    out = bench.run()  # the packaged MiniLM: a load failure fails this test
    for split in ("tune", "heldout"):
        s = out[split]
        assert {"acceptance_precision", "acceptance_recall", "concept_accuracy", "errors"} <= set(s)
        assert 0 <= s["acceptance_precision"] <= 1 and 0 <= s["acceptance_recall"] <= 1
    assert out["masks_for_unsupported_heldout"] == out["heldout"]["false_accepts"]
    assert out["tune"]["false_accepts"] == 0  # the thresholds were chosen so on the tune split
