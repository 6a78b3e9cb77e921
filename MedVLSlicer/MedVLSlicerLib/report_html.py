"""The server's report (report.json facts, report.md text, overview PNGs) as HTML for
Slicer's QTextBrowser, built without Qt.

Findings are a table; each finding's name is a link `finding:<index>` (index into
`report["objects"]`) that the module turns into "jump the slice views to the finding's axis
slice, select its segment, show its long/short axis as line markups". Images are inline
`data:` URIs, so the same HTML is complete when saved to a file.
"""

from __future__ import annotations

import base64
import html
from typing import Optional

FINDING_SCHEME = "finding"  # href="finding:<index>"


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def image_uri(png: bytes) -> str:
    """A PNG as a data: URI."""
    if not png.startswith(b"\x89PNG"):
        raise ValueError(f"not a PNG (starts with {png[:8]!r}); pass the overview.png bytes of the report")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def finding_link(index: int) -> str:
    return f"{FINDING_SCHEME}:{index}"


def parse_finding_link(url: str) -> Optional[int]:
    """The finding index of a `finding:<index>` link, None for any other link."""
    scheme, _, rest = (url or "").partition(":")
    if scheme != FINDING_SCHEME or not rest.isdigit():
        return None
    return int(rest)


def report_html(report: dict, images: Optional[list] = None, markdown: str = "", tr=lambda s: s,
                title: str = "") -> str:
    """HTML of a report answer. `report`: its `report_json`; `images`: overview PNG bytes (or
    ready URIs); `markdown`: shown as text when `report` has no facts; `tr`: translation;
    `title`: the image's name as the user knows it (default: the name the server gives)."""
    if not report or "objects" not in report:
        body = html.escape(markdown or tr("The server sent no report.")).replace("\n", "<br>")
        return f"<html><body><p>{body}</p></body></html>"
    image = report.get("image") or {}
    name = html.escape(str(title or image.get("name") or tr("image")))
    size = " x ".join(str(v) for v in image.get("size_ijk") or [])
    spacing = " x ".join(_fmt(v, 3) for v in image.get("spacing_mm") or [])
    out = ["<html><body>", f"<h3>{tr('Report')}: {name}</h3>",
           f"<p>{html.escape(str(image.get('modality') or ''))} {size} {tr('voxels')}, "
           f"{tr('spacing')} {spacing} mm</p>", f"<h4>{tr('Findings')}</h4>"]
    objects = report.get("objects") or []
    if objects:
        heads = [tr("finding"), tr("location"), tr("slices (k)"), tr("mL"),
                 tr("long x short (mm)"), tr("axis slice"), tr("mean +- SD")]
        out.append('<table border="1" cellspacing="0" cellpadding="2" style="font-size: small">')
        out.append("<tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")
        for index, o in enumerate(objects):
            first, last = (o.get("slice_range_k") or [None, None])[:2]
            axes = (f"{_fmt(o.get('long_axis_mm'))} x {_fmt(o.get('short_axis_mm'))}"
                    if o.get("long_axis_mm") is not None else "-")
            cells = [f'<a href="{finding_link(index)}">{html.escape(str(o.get("label") or o.get("name")))}</a>',
                     html.escape(str(o.get("location") or "-")), f"{first}-{last}", _fmt(o.get("volume_ml")), axes,
                     "-" if o.get("axis_slice_k") is None else str(o["axis_slice_k"]),
                     f"{_fmt(o.get('mean'), 0)} +- {_fmt(o.get('sd'), 0)} {html.escape(str(o.get('unit') or ''))}"]
            out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out.append("</table>")
    else:
        out.append(f"<p>{tr('No findings.')}</p>")
    for item in images or []:
        src = item if isinstance(item, str) else image_uri(item)
        out.append(f'<p><img src="{src}" width="320"></p>')
    out += [f"<h4>{tr('Impression')}</h4>", f"<p>{html.escape(str(report.get('impression') or '-'))}</p>"]
    narrator = html.escape(str(report.get("narrator") or ""))
    out += [f"<h4>{tr('Narrative')} ({narrator})</h4>", f"<p>{html.escape(str(report.get('narrative') or '-'))}</p>"]
    notes = report.get("notes") or []
    if notes:
        out.append(f"<h4>{tr('Notes')}</h4><ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def finding(report: dict, index: int) -> dict:
    """The facts of finding `index`, with `key_slice_k` (the axis slice, else the middle slice)."""
    objects = (report or {}).get("objects") or []
    if not 0 <= index < len(objects):
        raise IndexError(f"finding {index} is not in the report (it has {len(objects)})")
    o = dict(objects[index])
    first, last = (o.get("slice_range_k") or [0, 0])[:2]
    o["key_slice_k"] = o["axis_slice_k"] if o.get("axis_slice_k") is not None else (first + last) // 2
    return o
