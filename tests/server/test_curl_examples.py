"""The README's curl calls (medvl.server.curl_examples): equal to the generated text, valid for the
protocol's parsers and the access rules, and the cheap ones answered by the real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from medvl.server import auth, curl_examples, protocol
from tests.server.conftest import requires_server

README = Path(__file__).resolve().parents[2] / "monailabel_app" / "README.md"
PARSERS = {"interactive": protocol.parse_request,
           "text": lambda params: protocol.parse_language_request(params, "text"),
           "report": lambda params: protocol.parse_language_request(params, "report"),
           "vqa": lambda params: protocol.parse_language_request(params, "vqa")}


def test_the_readme_block_is_the_generated_one():
    text = README.read_text()
    block = text.split(curl_examples.BEGIN, 1)[1].split(curl_examples.END, 1)[0]
    assert block == "\n" + curl_examples.render(), ("monailabel_app/README.md is stale: run PYTHONPATH=lib python -m "
                                                    "medvl.server.curl_examples --write monailabel_app/README.md")


def test_every_task_has_a_call():
    paths = {e.path for e in curl_examples.EXAMPLES}
    for task in ("medvl_interactive", "medvl_text", "medvl_report", "medvl_vqa"):
        assert f"/infer/{task}" in paths
    assert "/datastore/label" in paths and any(p.startswith("/batch/infer/") for p in paths)
    assert any((e.params or {}).get("save_label") for e in curl_examples.EXAMPLES)


@pytest.mark.parametrize("example", curl_examples.EXAMPLES, ids=lambda e: e.title[:40])
def test_every_call_parses_with_the_protocol_and_names_the_right_token(example):
    params = example.params if example.params is not None else example.body
    if example.task:
        parsed = PARSERS[example.task](params)
        assert parsed.ignored == (), f"{example.title}: keys the server ignores: {parsed.ignored}"
    policy = auth.Policy(token="user", admin_token="admin")
    status, detail, role = policy.decide(example.method, example.path, "user", final_exists=lambda: False)
    needs_admin = status == 403 or bool(policy.refuse_admin("user", "x", "y") and (params or {}).get("save_label"))
    assert needs_admin == example.admin, (example.title, detail)
    assert ("$MEDVL_ADMIN_TOKEN" in example.curl()) == example.admin


def as_request(example: curl_examples.Example, url: str) -> requests.Request:
    """The curl call as a `requests` request (the same method, query, form or body)."""
    files = {"params": (None, json.dumps(example.params))} if example.params is not None else None
    return requests.Request(example.method, url + example.path, params=example.query, files=files,
                            json=example.body)


@pytest.mark.server
@requires_server
def test_the_box_and_undo_calls_work_on_the_real_server(server):
    session = requests.Session()
    models = session.get(server.url + "/info/", timeout=60).json()["models"]
    for example in curl_examples.EXAMPLES:
        if example.path.startswith("/infer/"):
            assert example.path.split("/")[-1] in models
    box, undo = (e for e in curl_examples.EXAMPLES if e.task == "interactive" and e.params.get(protocol.OBJ_ID) == 2)
    r = session.send(as_request(box, server.url).prepare(), timeout=600)
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/"), r.text[:300]
    r = session.send(as_request(undo, server.url).prepare(), timeout=600)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["action"] == "undo" and r.json()["voxels"] == 0
