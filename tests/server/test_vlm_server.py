"""The real MONAI Label server started with `--conf vlm <tiny forced Qwen2.5-VL checkpoint>`: /info names
the VLM; text grounding (the VLM's box, propagated by the engine), VQA and report replies name the
backend and the model. Its own module-scoped server (the shared one runs offline), on a 2-slice crop
of the sample lung2 CT so the engine's propagation stays short."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from medvl.bench import vlm_tiny  # noqa: E402
from medvl.io import read_mask, read_volume, write_volume  # noqa: E402
from tests.language.test_vlm import box_reply  # noqa: E402
from tests.language.test_vlm_tasks import WINDOW, _crop  # noqa: E402
from tests.server.conftest import SAMPLE_DIR, Client, requires_server  # noqa: E402

pytestmark = [pytest.mark.server, requires_server]
CLIENT = "pytest-vlm"
MODEL = "tiny-qwen25vl"


@pytest.fixture(scope="module")
def vlm_server(tmp_path_factory):
    from medvl.server.launch import ServerProcess

    studies = tmp_path_factory.mktemp("vlm-studies")
    write_volume(studies / "lung2crop.nii.gz", _crop(read_volume(SAMPLE_DIR / "lung2_image.nii.gz"), *WINDOW))
    ckpt = vlm_tiny.write_checkpoint("qwen2_5_vl", tmp_path_factory.mktemp("ckpt") / MODEL,
                                     reply=box_reply("qwen2_5_vl", (112, 84)))
    process = ServerProcess(studies, conf=[("vlm", str(ckpt))], log_path=tmp_path_factory.mktemp("log") / "vlm.log")
    process.start()
    try:
        yield process, Client(process.url, tmp_path_factory.mktemp("vlm-replies"))
    finally:
        process.stop()


@pytest.fixture(scope="module")
def text_reply(vlm_server):
    _, client = vlm_server
    return client.infer("lung2crop", {"text": "the tumour", "client_id": CLIENT}, model="medvl_text")


def _names_the_vlm(language: dict) -> None:
    assert language["backend"] == "vlm" and language["family"] == "qwen2_5_vl" and language["model"] == MODEL
    assert language["device"] == "cpu"


def test_info_names_the_vlm(vlm_server):
    _, client = vlm_server
    info = client.get("/info/").json()
    _names_the_vlm(info["medvl"]["language"])
    for task in ("medvl_text", "medvl_report", "medvl_vqa"):
        assert f"language VLM {MODEL} (qwen2_5_vl, cpu)" in info["models"][task]["description"]
    assert info["models"]["medvl_report"]["config"]["narrator"] == "vlm"


def test_text_is_grounded_by_the_vlm_box_and_propagated(text_reply):
    r = text_reply
    assert r.status == 200, r.detail
    _names_the_vlm(r.json["language"])
    assert r.json["solver"]["method"] == "vlm+engine"
    assert r.json["solver"]["box_ijk"] == [[16, 28, 0], [96, 84, 0]]
    m = r.mask.array > 0
    assert m[0].any() and r.json["voxels"] == int(m.sum())
    assert m[0, 28 - 3:84 + 4, 16 - 3:96 + 4].sum() >= 0.98 * m[0].sum()  # inside the VLM's box
    label = read_mask(SAMPLE_DIR / "lung2_label.nii.gz").array[WINDOW[0]:WINDOW[1], WINDOW[2]:WINDOW[3],
                                                                WINDOW[4]:WINDOW[5]] > 0
    assert 2 * (m & label).sum() / (m.sum() + label.sum()) >= 0.6


def test_vqa_and_report_replies_name_the_vlm_and_apply_the_number_check(vlm_server, text_reply):
    _, client = vlm_server
    label = text_reply.json["label"]
    q = client.infer("lung2crop", {"question": "How large is the tumour?", "label": label, "client_id": CLIENT},
                     model="medvl_vqa")
    assert q.status == 200, q.detail
    _names_the_vlm(q.json["language"])
    check = q.json["answer_check"]
    assert check["model"] == f"{MODEL} (qwen2_5_vl)" and check["fallback"]  # its box JSON is no answer: rejected
    assert check["rejected"][0]["text"].startswith('```json') and q.json["answer"].startswith("The ")
    rep = client.infer("lung2crop", {"label": label, "client_id": CLIENT}, model="medvl_report")
    assert rep.status == 200, rep.detail
    _names_the_vlm(rep.json["language"])
    nc = rep.json["report_json"]["narrative_check"]
    assert nc["requested"] == "vlm" and nc["model"] == f"{MODEL} (qwen2_5_vl)" and nc["fallback"]
    assert rep.json["report_json"]["narrator"] == "deterministic" and nc["unchecked"] == []
    assert nc["rejected"][0]["text"] == check["rejected"][0]["text"] and nc["rejected"][0]["unchecked"]


def test_a_bad_vlm_folder_stops_the_server_before_it_starts(tmp_path, capsys):
    from medvl.cli import main

    assert main(["serve", "--studies", str(tmp_path), "--conf", "vlm", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: --conf vlm: VLM checkpoint")
    assert "folder not found" in err and "family detected: none" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    assert main(["serve", "--studies", str(tmp_path), "--conf", "vlm", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert "tokenizer files missing" in err and "family detected: qwen2_5_vl" in err and err.count("\n") == 0
