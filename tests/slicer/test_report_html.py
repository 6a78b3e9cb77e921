"""report_html without Qt: a two-finding report renders as a table with links and both
overview images; finding links parse back; bad input is named."""

from __future__ import annotations

import re
import struct
import zlib

import pytest

from MedVLSlicerLib import report_html


def png(width: int, height: int, rgb=(200, 30, 30)) -> bytes:
    """A tiny real PNG (one colour)."""
    row = b"\x00" + bytes(rgb) * width
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


def facts(name, label, k0, k1, axis_k=None, long_mm=None):
    return {"name": name, "label": label, "kind": "lesion" if long_mm else "anatomy", "source": f"mask: {name}",
            "location": "upper zone of the right lung", "slice_range_k": [k0, k1], "volume_ml": 12.345,
            "long_axis_mm": long_mm, "short_axis_mm": long_mm and long_mm / 2, "axis_slice_k": axis_k,
            "long_axis_ijk": [[1, 2, axis_k], [5, 6, axis_k]] if long_mm else None, "mean": -20.4, "sd": 35.2,
            "unit": "HU"}


REPORT = {"image": {"name": "lung2", "modality": "CT", "size_ijk": [512, 512, 61], "spacing_mm": [0.6, 0.6, 5.0]},
          "objects": [facts("tumour", "lung mass", 15, 25, 21, 41.25), facts("lung<L>", "left lung", 3, 58)],
          "impression": "A 41.3 mm mass.", "narrative": "One mass & one lung.", "narrator": "deterministic",
          "notes": ["prompt 'liver' found nothing"]}


def test_two_findings_render_as_a_table_with_links_and_both_images():
    html = report_html.report_html(REPORT, [png(4, 3), png(2, 2, (0, 0, 255))], markdown="| raw |")
    rows = re.findall(r"<tr>.*?</tr>", html)
    assert len(rows) == 3  # header + two findings
    assert '<a href="finding:0">lung mass</a>' in rows[1] and '<a href="finding:1">left lung</a>' in rows[2]
    assert "15-25" in rows[1] and "41.2 x 20.6" in rows[1] and "<td>21</td>" in rows[1]
    assert "<td>-</td>" in rows[2]  # no axes for anatomy
    assert html.count('<img src="data:image/png;base64,') == 2
    assert "lung&lt;L&gt;" not in html and "left lung" in html and "One mass &amp; one lung." in html
    assert "| raw |" not in html  # the markdown is a fallback only
    assert "<li>prompt &#x27;liver&#x27; found nothing</li>" in html


def test_markdown_fallback_and_translation():
    html = report_html.report_html({}, markdown="# x\n| a |")
    assert "<br>" in html and "| a |" in html
    assert "<h4>Befund</h4>" not in report_html.report_html(REPORT)
    assert "<h4>Befunde</h4>" in report_html.report_html(REPORT, tr=lambda s: {"Findings": "Befunde"}.get(s, s))


def test_finding_links_and_facts():
    assert report_html.parse_finding_link(report_html.finding_link(1)) == 1
    assert report_html.parse_finding_link("https://example.org") is None
    assert report_html.parse_finding_link("finding:x") is None
    assert report_html.finding(REPORT, 0)["key_slice_k"] == 21
    assert report_html.finding(REPORT, 1)["key_slice_k"] == 30  # middle of 3-58
    with pytest.raises(IndexError, match="finding 2 is not in the report"):
        report_html.finding(REPORT, 2)
    with pytest.raises(ValueError, match="not a PNG"):
        report_html.image_uri(b"GIF89a")
