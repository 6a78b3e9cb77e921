"""The status line the module shows for an answer's quality signal (torch-free)."""

from MedVLSlicerLib.state import quality_summary


def test_quality_line_names_the_warnings():
    answer = {"quality": {"estimate": 0.42, "warnings": [{"name": "leak_suspected", "message": "m"},
                                                         {"name": "touches_edge", "message": "n"}]}}
    assert quality_summary(answer) == "quality 0.42 - check: leak suspected, touches edge"
    assert quality_summary({"quality": {"estimate": 0.9, "warnings": []}}) == "quality 0.90"
    assert quality_summary({"quality": {"estimate": None, "warnings": []}}) == "quality ?"
    assert quality_summary({}) == ""
