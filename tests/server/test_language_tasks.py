"""The language tasks over HTTP: `medvl_text`, `medvl_report`, `medvl_vqa`, and batch inference.

All on the shared real server (conftest.server). `refine: "hu"` keeps them to the Hounsfield
solvers (seconds, no engine); the engine refinement is the language layer's own tests'.
One client session on lung2 holds the text result that the report and the question use.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.server.conftest import dice, requires_server

pytestmark = [pytest.mark.server, requires_server]

CLIENT = "pytest-language"  # one session on lung2: text result -> report -> question
LANGUAGE_TASKS = ("medvl_text", "medvl_report", "medvl_vqa")


@pytest.fixture(scope="module")
def nodule(client):
    """`medvl_text` "nodule" on lung2; the mask becomes object "nodule" of the CLIENT session."""
    return client.infer("lung2_image", {"text": "nodule", "refine": "hu", "client_id": CLIENT}, model="medvl_text")


def test_info_lists_the_language_tasks(client):
    models = client.get("/info/").json()["models"]
    assert set(LANGUAGE_TASKS) <= models.keys()
    assert (models["medvl_text"]["type"], models["medvl_text"]["dimension"]) == ("segmentation", 3)


def test_text_nodule_on_lung2_matches_the_expert_label_in_the_image_geometry(nodule, lung2):
    r = nodule
    assert r.status == 200, r.detail
    assert r.mask.array.shape == lung2["image"].array.shape
    assert r.mask.geometry.same_as(lung2["image"].geometry)
    assert dice(r.mask.array, lung2["label"]) >= 0.70
    assert r.json["grounding"]["concept"] == "nodule" and r.json["understood_as"].startswith("understood as")
    assert r.json["label"] == "nodule" and r.json["solver"]["method"] == "hu"
    assert r.json["voxels"] == np.count_nonzero(r.mask.array)
    spacing = np.prod(lung2["image"].geometry.spacing)
    assert r.json["volume_ml"] == pytest.approx(r.json["voxels"] * spacing / 1000, abs=1e-3)
    assert {"pre", "infer", "post", "write", "total"} <= r.json["latencies"].keys()
    assert r.json["latencies"]["stages"]["solve"] > 0


def test_text_again_on_the_session_reuses_the_language_caches(client, nodule):
    r = client.infer("lung2_image", {"text": "the nodule", "refine": "hu", "client_id": CLIENT, "crop": True},
                     model="medvl_text")
    assert r.status == 200, r.detail
    assert r.json["changed"] is False and r.mask is None  # same object, same mask: nothing to send
    assert r.json["latencies"]["stages"]["solve"] < nodule.json["latencies"]["stages"]["solve"]


def test_report_on_the_session_quotes_the_text_result(client, nodule):
    r = client.infer("lung2_image", {"label": "nodule", "refine": "hu", "client_id": CLIENT}, model="medvl_report")
    assert r.status == 200, r.detail
    assert r.mask is None
    (facts,) = r.json["report_json"]["objects"]
    assert facts["name"] == "nodule" and facts["voxels"] == nodule.json["voxels"]
    assert facts["volume_ml"] == pytest.approx(nodule.json["volume_ml"], abs=1e-3)
    assert r.json["report"].startswith("# Report") and f"{facts['volume_ml']:.1f}" in r.json["report"]
    overview = client.get(r.json["files"]["overview"])
    assert overview.status_code == 200 and overview.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(r.json["files"]["json"]).json()["objects"][0]["voxels"] == facts["voxels"]
    assert client.get("/medvl/report/000000000000/overview.png").status_code == 404


def test_vqa_answers_the_size_from_the_facts(client, nodule):
    r = client.infer("lung2_image", {"question": "How large is the nodule?", "label": "nodule", "client_id": CLIENT},
                     model="medvl_vqa")
    assert r.status == 200, r.detail
    assert r.json["answerable"] and r.json["intent"] == "size"
    (facts,) = r.json["facts"]
    numbers = {float(n) for n in re.findall(r"\d+\.\d+", r.json["answer"])}
    assert round(facts["long_axis_mm"], 1) in numbers and round(facts["volume_ml"], 1) in numbers
    assert facts["voxels"] == nodule.json["voxels"]


def test_vqa_without_masks_and_an_unanswerable_question(client):
    r = client.infer("lung2_image", {"question": "Which side is the nodule on?", "refine": "hu"}, model="medvl_vqa")
    assert r.status == 200 and r.json["intent"] == "side" and "side" in r.json["answer"], r.detail or r.json
    r = client.infer("lung2_image", {"question": "Is it malignant?"}, model="medvl_vqa")
    assert r.status == 200 and r.json["answerable"] is False


def test_modality_override_gates_the_concepts_and_a_bad_value_is_named(client):
    """`modality` "MR" on the lung2 CT: the chest-CT nodule is not applicable (400); "XR" is refused by name."""
    r = client.infer("lung2_image", {"text": "nodule", "modality": "MR", "client_id": "pytest-modality"},
                     model="medvl_text")
    assert r.status == 400 and "not applicable" in r.detail and "this volume is MR" in r.detail, (r.status, r.detail)
    r = client.infer("lung2_image", {"question": "How large is the nodule?", "modality": "XR"}, model="medvl_vqa")
    assert r.status == 400 and "modality 'XR' is not one of CT, MR" in r.detail, (r.status, r.detail)


@pytest.mark.parametrize("model, params", [
    ("medvl_text", {"text": "segment the liver"}),
    ("medvl_text", {"text": "xyzzy quux"}),
    ("medvl_text", {}),
    ("medvl_text", {"text": "nodule", "refine": "magic"}),
    ("medvl_vqa", {"question": ""}),
    ("medvl_report", {"obj_id": 99, "client_id": "pytest-language-empty"}),
])
def test_bad_language_requests_get_4xx_and_the_server_stays_up(client, server, model, params):
    r = client.infer("lung2_image", params, model=model)
    assert 400 <= r.status < 500, (r.status, r.json)
    assert "\n" not in r.detail and r.detail
    if params.get("text") in ("segment the liver", "xyzzy quux"):
        assert "not understood" in r.detail and "nearest known concepts" in r.detail
    assert server.alive() and client.get("/info/").status_code == 200


def test_batch_infer_runs_the_text_task_over_the_studies(client, server):
    params = {"text": "nodule", "refine": "hu", "label_tag": "medvl_text", "max_workers": 1}
    r = client.api.http.post(f"{server.url}/batch/infer/medvl_text", params={"run_sync": "true"}, json=params,
                             timeout=600)
    assert r.status_code == 200, r.text
    results = r.json()
    assert {"lung1_image", "lung2_image"} <= results.keys()
    for image in ("lung1_image", "lung2_image"):
        assert results[image]["label"] == image and results[image]["params"]["voxels"] > 0
    brain = results.get("brain1_image")
    if brain is not None:  # an MR: "nodule" is a CT concept -> that image's error, the batch goes on
        assert brain["label"] is None and 400 <= brain["status"] < 500
    saved = client.get("/datastore/label", label="lung2_image", tag="medvl_text")
    assert saved.status_code == 200 and saved.content
    assert server.alive()
    # the same runner as `medvl annotate`: per-image folders, a summary, and a repeat resumes
    out = server.studies / ".medvl-batch" / "medvl_text-medvl_text"
    first = json.loads((out / "lung2_image" / "status.json").read_text())
    assert first["status"] == "ok" and (out / "summary.csv").exists()
    again = client.api.http.post(f"{server.url}/batch/infer/medvl_text", params={"run_sync": "true"}, json=params,
                                 timeout=600)
    assert again.status_code == 200 and again.json()["lung2_image"]["label"] == "lung2_image"
    assert json.loads((out / "lung2_image" / "status.json").read_text())["attempt"] == first["attempt"]
    bad = client.api.http.post(f"{server.url}/batch/infer/medvl_text", params={"run_sync": "true"},
                               json={"text": "nodule", "refine": "magic"}, timeout=60)
    assert bad.status_code == 400 and "refine 'magic' must be hu, engine or auto" in bad.text


def test_interactive_reset_clears_a_text_result(client):
    who = {"client_id": "pytest-language-reset"}
    r = client.infer("lung2_image", dict(who, text="nodule", refine="hu", output_labels="all"), model="medvl_text")
    assert r.status == 200 and r.json["label_names"] == {"nodule": r.json["obj_id"]}, r.detail
    r = client.infer("lung2_image", dict(who, label="nodule", reset_state=True))
    assert r.status == 200 and r.json["action"] == "replay" and r.json["voxels"] == 0, r.detail
