"""The real MONAI Label server with `--conf engine sam3`: text goes to SAM 3's concept model.

No SAM 3 checkpoint can exist here, so the module writes the tiny RANDOM-weight folder
(medvl.bench.sam3_tiny_random; tests only). What is checked is the serving path: a
`medvl_text` request returns every instance as its own object, in the image's geometry,
named in `label_names`, and a click on the same session reuses the slices the concept
run encoded. Random weights cannot segment: no mask quality is checked.
"""

from __future__ import annotations

import numpy as np
import pytest

from medvl.errors import EngineError
from medvl.geometry import Geometry
from medvl.io import write_volume
from medvl.server.interactive import InteractiveService
from medvl.server.settings import ServerSettings
from tests.conftest import make_synthetic_volume
from tests.server.conftest import Client, requires_server
from tests.session.conftest import tiny_random_sam3_checkpoint

pytestmark = [pytest.mark.server]

GEOMETRY = Geometry(origin=(12.5, -40.0, 7.0), spacing=(0.9, 0.8, 2.5),
                    direction=(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
SHAPE = (8, 48, 40)  # (k, j, i)


@pytest.fixture(scope="module")
def sam3_server(tmp_path_factory):
    from medvl.server.launch import ServerProcess

    studies = tmp_path_factory.mktemp("sam3_studies")
    volume = make_synthetic_volume(shape_kji=SHAPE, geometry=GEOMETRY)
    write_volume(studies / "ball.nii.gz", volume)
    conf = [("engine", "sam3"), ("checkpoint", tiny_random_sam3_checkpoint()), ("threads", "1")]
    process = ServerProcess(studies, conf=conf, log_path=tmp_path_factory.mktemp("sam3_log") / "server.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@requires_server
def test_text_returns_each_instance_as_an_object_then_a_click_reuses_the_slices(sam3_server, tmp_path):
    client = Client(sam3_server.url, tmp_path)
    r = client.infer("ball", {"text": "nodule", "client_id": "pytest-sam3"}, model="medvl_text")
    assert r.status == 200, r.detail
    assert r.json["engine"]["name"] == "sam3" and "sam3_video" in r.json["engine"]["model"]
    assert r.json["language"]["backend"] == "sam3"
    instances = r.json["instances"]
    assert 1 <= len(instances) <= 3
    ids = [i["obj_id"] for i in instances]
    assert len(set(ids)) == len(ids)
    names = r.json["label_names"]
    assert names["nodule"] == ids[0] and all(names[f"nodule {n}"] == oid for n, oid in enumerate(ids[1:], 2))
    assert r.mask.array.shape == SHAPE and r.mask.geometry.same_as(GEOMETRY)
    assert set(np.unique(r.mask.array)) - {0} == set(ids), "the file holds every instance by its id"
    assert r.json["encoder_passes"] == 2 * SHAPE[0], "one forward and one backward pass"
    click = client.infer("ball", {"foreground": [[20, 24, 4]], "label": "lesion", "client_id": "pytest-sam3"})
    assert click.status == 200, click.detail
    assert click.json["session"]["medvl_session"] == r.json["session"]["medvl_session"]
    assert click.json["encoder_passes"] == 0, "the concept run's slice features are reused"
    assert click.mask.geometry.same_as(GEOMETRY)
    assert sam3_server.alive()


def test_a_bad_sam3_folder_is_named_by_the_service(tmp_path):
    settings = ServerSettings.from_conf({"engine": "sam3", "checkpoint": str(tmp_path)})
    with pytest.raises(EngineError, match=f"{tmp_path} has no config.json"):
        InteractiveService(settings).engine()


def test_sam3_conf_keys_are_its_own():
    from medvl.server.settings import ConfigError

    s = ServerSettings.from_conf({"engine": "sam3", "sam3_cache_mb": "64", "sam3_device": "cpu"})
    assert s.engine_options()["settings"].cache_bytes == 64 * 2**20
    with pytest.raises(ConfigError, match="--conf sam3_size is not a sam3 setting"):
        ServerSettings.from_conf({"engine": "sam3", "sam3_size": "1"})


def test_medvl_serve_refuses_a_bad_sam3_folder_before_starting(tmp_path, capsys):
    from medvl.cli import main

    code = main(["serve", "--studies", str(tmp_path), "--conf", "engine", "sam3", "--conf", "checkpoint",
                 str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and f"{tmp_path} has no config.json" in err[0]
