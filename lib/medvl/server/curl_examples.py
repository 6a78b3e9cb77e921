"""One curl call per server task, built from `medvl.server.protocol`'s names, for monailabel_app/README.md.

The README's block between `<!-- curl:begin -->` and `<!-- curl:end -->` is `render()`'s
text (tests/server/test_curl_examples.py checks it, and that every example's params parse
with the protocol's own parser). Regenerate it after changing the protocol:

    PYTHONPATH=lib python -m medvl.server.curl_examples --write monailabel_app/README.md
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from medvl.server import protocol as p

BEGIN, END = "<!-- curl:begin -->", "<!-- curl:end -->"
IMAGE = "lung2_image"  # a sample_data image


@dataclass(frozen=True)
class Example:
    title: str
    method: str
    path: str
    query: dict = field(default_factory=dict)
    params: dict | None = None  # the `params` form field (JSON)
    task: str = ""  # "interactive", "text", "report", "vqa": which protocol parser reads `params`
    file: tuple[str, str] | None = None  # (form field, local file) uploaded with -F field=@file
    body: dict | None = None  # a JSON body instead of a form (batch)
    output: str = ""  # -o file for a file answer
    admin: bool = False  # needs the admin token (medvl.server.auth.ADMIN_ROUTES, save_label)

    def curl(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.query.items())
        token = "$MEDVL_ADMIN_TOKEN" if self.admin else "$MEDVL_TOKEN"
        lines = [f'curl -s -X {self.method} "$MEDVL_URL{self.path}{"?" + query if query else ""}"',
                 f'-H "Authorization: Bearer {token}"']
        if self.params is not None:
            lines.append(f"-F 'params={json.dumps(self.params)}'")
        if self.file:
            lines.append(f"-F {self.file[0]}=@{self.file[1]}")
        if self.body is not None:
            lines += ['-H "Content-Type: application/json"', f"-d '{json.dumps(self.body)}'"]
        if self.output:
            lines.append(f"-o {self.output}")
        return " \\\n  ".join(lines)


INTERACTIVE = "/infer/" + "medvl_interactive"
EXAMPLES: tuple[Example, ...] = (
    Example("Interactive, clicks (the stock Slicer client's form): mask file of the object", "POST", INTERACTIVE,
            {"image": IMAGE, "output": "image"},
            {p.FOREGROUND: [[358, 363, 22]], p.BACKGROUND: [], p.LABEL: "lesion", p.CLIENT_ID: "curl",
             p.RESULT_EXTENSION: ".nrrd"}, "interactive", output="mask.nrrd"),
    Example("Interactive, a box on slice k=22 as object 2, no propagation, answer cropped to the change (JSON "
            "part and file: output=all, multipart)", "POST", INTERACTIVE, {"image": IMAGE, "output": "all"},
            {p.BOXES: [[[330, 340, 22], [390, 390, 22]]], p.OBJ_ID: 2, p.AXIS: "k", p.PROPAGATE: False, p.CROP: True,
             p.CLIENT_ID: "curl"}, "interactive", output="answer.multipart"),
    Example("Interactive, undo the object's last prompt", "POST", INTERACTIVE, {"image": IMAGE, "output": "json"},
            {p.OBJ_ID: 2, p.UNDO: 1, p.CLIENT_ID: "curl"}, "interactive"),
    Example("Text: free text to a mask (JSON: grounding, understood_as, volume_ml)", "POST", "/infer/medvl_text",
            {"image": IMAGE, "output": "all"},
            {p.TEXT: "the nodule in the right lung", p.REFINE: "auto", p.CLIENT_ID: "curl"}, "text",
            output="answer.multipart"),
    Example("Report on the session's objects and a text prompt (JSON: report, report_json, files)", "POST",
            "/infer/medvl_report", {"image": IMAGE, "output": "json"},
            {p.OBJ_ID: [1], p.TEXT: ["the nodule in the right lung"], p.NARRATOR: "deterministic",
             p.CLIENT_ID: "curl"}, "report"),
    Example("VQA: a question about object 1 (JSON: answer, answerable, facts)", "POST", "/infer/medvl_vqa",
            {"image": IMAGE, "output": "json"}, {p.QUESTION: "How large is the nodule?", p.OBJ_ID: 1,
                                                  p.CLIENT_ID: "curl"}, "vqa"),
    Example("Label save: store a finished label (overwriting an existing final label needs the admin token)",
            "PUT", "/datastore/label", {"image": IMAGE, "tag": "final"}, {}, file=("label", "mask.nrrd")),
    Example("Label save from the infer answer itself (save_label: admin token)", "POST", INTERACTIVE,
            {"image": IMAGE, "output": "json"},
            {p.FOREGROUND: [[358, 363, 22]], p.CLIENT_ID: "curl", "save_label": True, "label_tag": "final"},
            "interactive", admin=True),
    Example("Batch: the text task over every image, labels saved as tag `original` (admin token)", "POST",
            "/batch/infer/medvl_text", {"images": "all", "run_sync": "true"},
            body={p.TEXT: "the nodule in the right lung", "device": "cpu", "save_label": True,
                  "label_tag": "original"}, task="text", admin=True),
)


def render() -> str:
    """The README block (without the markers)."""
    out = ["```sh", 'MEDVL_URL=http://127.0.0.1:8000  # MEDVL_TOKEN / MEDVL_ADMIN_TOKEN: printed by medvl serve '
           "off loopback; on loopback without --token the header is ignored"]
    for example in EXAMPLES:
        out += ["", f"# {example.title}", example.curl()]
    out.append("```")
    return "\n".join(out) + "\n"


def replace_block(text: str, block: str) -> str:
    """`text` with the part between BEGIN and END replaced by `block`."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"no {BEGIN} ... {END} markers: add them where the curl calls go")
    head, rest = text.split(BEGIN, 1)
    return head + BEGIN + "\n" + block + END + rest.split(END, 1)[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="README", help="rewrite the block in this file (default: print it)")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(render())
        return 0
    path = Path(args.write)
    path.write_text(replace_block(path.read_text(), render()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
