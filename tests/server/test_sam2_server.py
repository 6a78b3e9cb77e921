"""The real MONAI Label server serving the `sam2` engine from a checkpoint given in `--conf`.

No SAM 2 checkpoint can exist here, so the test writes one: the tiny RANDOM-weight SAM 2.1
config as a .pt plus its .yaml (tests only). Its file name implies no config, so the
server must take `sam2_config` and `sam2_image_size` from its `--conf` - the path a user
with a renamed MedSAM2 checkpoint takes. What is checked is the serving path (geometry,
sessions, nothing encoded twice, errors), not mask quality: random weights cannot segment.
"""

from __future__ import annotations

import pytest

pytest.importorskip("sam2.sam2_video_predictor", reason="sam2 is not installed (make installs it; docs/sam2.md)")

from medvl.engines.sam2.model import RANDOM_TINY, write_config_yaml, write_random_checkpoint  # noqa: E402
from medvl.errors import EngineError  # noqa: E402
from medvl.geometry import Geometry  # noqa: E402
from medvl.io import write_volume  # noqa: E402
from medvl.server.interactive import InteractiveService  # noqa: E402
from medvl.server.settings import ServerSettings  # noqa: E402
from tests.conftest import make_synthetic_volume  # noqa: E402
from tests.server.conftest import Client, requires_server  # noqa: E402

pytestmark = [pytest.mark.server]

# oblique, flipped, anisotropic: the mask must come back with exactly this geometry
GEOMETRY = Geometry(origin=(12.5, -40.0, 7.0), spacing=(0.9, 0.8, 2.5),
                    direction=(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
SHAPE = (9, 48, 40)  # (k, j, i)


@pytest.fixture(scope="module")
def sam2_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sam2_model")
    return (write_random_checkpoint(folder / "my_model.pt", RANDOM_TINY, 64),
            write_config_yaml(folder / "my_model.yaml", RANDOM_TINY, 64))


@pytest.fixture(scope="module")
def sam2_server(sam2_files, tmp_path_factory):
    from medvl.server.launch import ServerProcess

    checkpoint, config = sam2_files
    studies = tmp_path_factory.mktemp("sam2_studies")
    volume = make_synthetic_volume(shape_kji=SHAPE, geometry=GEOMETRY)
    write_volume(studies / "ball.nii.gz", volume)
    conf = [("engine", "sam2"), ("sam2_checkpoint", str(checkpoint)), ("sam2_config", str(config)),
            ("sam2_image_size", "64"), ("threads", "1")]
    process = ServerProcess(studies, conf=conf, log_path=tmp_path_factory.mktemp("sam2_log") / "server.log")
    process.start()
    try:
        yield process, volume
    finally:
        process.stop()


@requires_server
def test_click_then_correction_come_back_in_the_image_geometry(sam2_server, tmp_path):
    server, volume = sam2_server
    client = Client(server.url, tmp_path)
    info = client.get("/info/").json()
    assert "engine sam2" in info["models"]["medvl_interactive"]["description"]
    params = {"foreground": [[20, 24, 4]], "background": [], "label": "lesion", "client_id": "pytest-sam2"}
    first = client.infer("ball", params)
    assert first.status == 200, first.detail
    assert first.json["engine"]["name"] == "sam2" and "my_model.pt" in first.json["engine"]["model"]
    assert "RANDOM" not in first.json["engine"]["model"], "a checkpoint from a path is not the test model"
    assert first.mask.array.shape == SHAPE and first.mask.geometry.same_as(GEOMETRY)
    assert 1 <= first.json["encoder_passes"] <= SHAPE[0]
    fix = client.infer("ball", dict(params, background=[[30, 30, 6]]))
    assert fix.status == 200, fix.detail
    assert fix.json["session"]["medvl_session"] == first.json["session"]["medvl_session"]
    assert fix.json["encoder_passes_total"] <= SHAPE[0], "no slice is encoded twice in a session"
    assert fix.mask.geometry.same_as(GEOMETRY)
    assert server.alive()


@requires_server
def test_bad_prompt_is_a_4xx_and_the_server_stays_up(sam2_server, tmp_path):
    server, _ = sam2_server
    client = Client(server.url, tmp_path)
    r = client.infer("ball", {"foreground": [[400, 24, 4]], "label": "lesion", "client_id": "pytest-sam2-bad"})
    assert 400 <= r.status < 500 and "outside" in r.detail
    assert server.alive()


def test_missing_checkpoint_is_named_by_the_service(tmp_path):
    missing = tmp_path / "MedSAM2_latest.pt"
    settings = ServerSettings.from_conf({"engine": "sam2", "sam2_checkpoint": str(missing)})
    with pytest.raises(EngineError, match=f"{missing} .*does not exist"):
        InteractiveService(settings).engine()


@pytest.mark.parametrize("conf, words", [
    ({"engine": "sam2", "sam2_size": "64"}, "--conf sam2_size is not a sam2 setting"),
    ({"engine": "sam2", "sam2_image_size": "big"}, "sam2_image_size='big'"),
    ({"engine": "sam9"}, "engine 'sam9' is not one of litemedsam, sam2, sam3"),
    ({"engine": "litemedsam", "litemedsam_size": "1"}, "takes no --conf keys of its own"),
])
def test_bad_engine_settings_are_named_before_start(conf, words):
    from medvl.server.settings import ConfigError

    with pytest.raises(ConfigError) as caught:
        ServerSettings.from_conf(conf)
    assert words in str(caught.value)


def test_engine_keys_go_to_their_engine_only():
    s = ServerSettings.from_conf({"engine": "litemedsam", "sam2_config": "x.yaml"})
    assert s.engine_conf == () and s.engine_options() == {}
    s = ServerSettings.from_conf({"engine": "sam2", "sam2_config": "x.yaml", "cache_mb": "64"})
    assert s.engine_conf == (("sam2_config", "x.yaml"),)
    assert s.engine_options()["settings"].config == "x.yaml"
