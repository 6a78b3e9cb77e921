"""The real MONAI Label server started with `--conf vlm <tiny RANDOM [SEG]-model>` (Sa2VA-Qwen2.5-VL
layout, `medvl.bench.segtoken_tiny`): /info names the segtoken backend, and a text request is answered by
[SEG] -> the checkpoint's SAM 2 on the key slice -> propagation, the same mask as in process. Random
weights: mechanics only. Its own module-scoped server, on the 2-slice crop of the sample lung2 CT."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("sam2")

from medvl.bench.segtoken_tiny import write_segtoken_checkpoint  # noqa: E402
from medvl.io import read_volume, write_volume  # noqa: E402
from medvl.language import SolveSettings, ground_for_volume, solve  # noqa: E402
from medvl.language.vlm.backend import VLMConfig  # noqa: E402
from tests.language.test_vlm_tasks import WINDOW, _crop  # noqa: E402
from tests.server.conftest import SAMPLE_DIR, Client, requires_server  # noqa: E402

pytestmark = [pytest.mark.server, requires_server]
MODEL = "tiny-sa2va"


@pytest.fixture(scope="module")
def seg_server(tmp_path_factory):
    from medvl.server.launch import ServerProcess

    studies = tmp_path_factory.mktemp("seg-studies")
    volume = _crop(read_volume(SAMPLE_DIR / "lung2_image.nii.gz"), *WINDOW)
    write_volume(studies / "lung2crop.nii.gz", volume)
    ckpt = write_segtoken_checkpoint(tmp_path_factory.mktemp("ckpt") / MODEL, "sa2va_chat")
    process = ServerProcess(studies, conf=[("vlm", str(ckpt))], log_path=tmp_path_factory.mktemp("log") / "seg.log")
    process.start()
    try:
        yield process, Client(process.url, tmp_path_factory.mktemp("seg-replies")), ckpt, volume
    finally:
        process.stop()


def test_text_request_is_segmented_by_the_seg_token_model(seg_server):
    _, client, ckpt, volume = seg_server
    language = client.get("/info/").json()["medvl"]["language"]
    assert language["backend"] == "vlm" and language["family"] == "segtoken" and language["model"] == MODEL
    r = client.infer("lung2crop", {"text": "the tumour", "client_id": "pytest-seg"}, model="medvl_text")
    assert r.status == 200, r.detail
    assert r.json["language"]["family"] == "segtoken" and r.json["solver"]["method"] == "segtoken+sam2"
    assert r.json["solver"]["seg_tokens"] == 1
    # the reply's mask is the one the same checkpoint gives in process (written into the image's grid)
    expected, _ = solve(volume, ground_for_volume("the tumour", volume), None,
                        SolveSettings(vlm=VLMConfig.from_path(ckpt)))
    got = r.mask.array > 0
    assert expected.any() and np.array_equal(got, expected)
