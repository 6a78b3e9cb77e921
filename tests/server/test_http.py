"""The real MONAI Label server with the MedVLSlicer app, driven over HTTP (see conftest.server).

The first click on lung2 encodes its slices (tens of seconds on CPU); later requests on
the same session reuse the embeddings, which is itself one of the checks.
"""

from __future__ import annotations

import gzip
import threading

import numpy as np
import pytest

from medvl.geometry import Geometry
from medvl.io import read_mask, read_volume, write_mask
from medvl.volume import Volume
from tests.server.conftest import SAMPLE_DIR, dice, largest_slice_box, requires_server

pytestmark = [pytest.mark.server, requires_server]

CLIENT = "pytest-points"  # one session on lung2 shared by the tests below (its embeddings are cached)


def test_info_lists_the_interactive_model(client):
    info = client.get("/info/").json()
    model = info["models"]["medvl_interactive"]
    assert (model["type"], model["dimension"]) == ("deepgrow", 3)
    assert info["datastore"]["total"] == len(list(SAMPLE_DIR.glob("*_image.nii.gz")))


@pytest.fixture(scope="module")
def first_click(client, lung2):
    """The stock Slicer client's deepgrow request: one foreground point, label, client id."""
    return client.infer("lung2_image", {"foreground": [lung2["point"]], "background": [], "label": "lesion",
                                        "client_id": CLIENT, "result_extension": ".nrrd", "result_dtype": "uint8"})


@pytest.mark.slow
def test_point_on_lung2_gives_the_tumour_in_the_image_geometry(first_click, lung2):
    r = first_click
    assert r.status == 200, r.detail
    assert r.mask.array.shape == lung2["image"].array.shape
    assert r.mask.geometry.same_as(lung2["image"].geometry)
    assert dice(r.mask.array, lung2["label"]) >= 0.85
    assert r.json["voxels"] == np.count_nonzero(r.mask.array) and r.json["encoder_passes"] > 0
    assert r.json["label_names"] == {"lesion": 1} and r.json["slice_range"][0] <= lung2["point"][2]
    assert {"pre", "infer", "post", "write", "total"} <= r.json["latencies"].keys()


@pytest.mark.slow
def test_second_click_reencodes_nothing_and_crop_returns_the_changed_box(client, first_click, lung2):
    i, j, k = lung2["point"]
    params = {"foreground": [lung2["point"]], "background": [[i - 60, j - 60, k]], "label": "lesion",
              "client_id": CLIENT, "crop": True}
    r = client.infer("lung2_image", params)
    assert r.status == 200, r.detail
    assert r.json["action"] == "add"
    # slices encoded by the first click stay cached: only slices its propagation never reached
    # (beyond the old range plus the one slice where it stopped) may be encoded now
    (a, b), (c, d) = first_click.json["slice_range"], r.json["slice_range"]
    assert r.json["encoder_passes"] <= max(0, a - c) + max(0, d - b)
    assert "load" not in r.json["latencies"]["stages"]
    assert r.json["session"]["medvl_session"] == first_click.json["session"]["medvl_session"]
    if r.json["changed"]:
        offset, size = r.json["crop"]["offset_ijk"], r.json["crop"]["size_ijk"]
        assert r.mask.array.shape == tuple(reversed(size))
        assert np.allclose(r.mask.geometry.origin, lung2["image"].geometry.index_to_physical(offset))
    again = client.infer("lung2_image", params)
    assert (again.json["action"], again.json["changed"], again.mask) == ("none", False, None)


@pytest.mark.slow
def test_roi_on_lung2(client, first_click, lung2):
    roi = lung2["roi"]
    r = client.infer("lung2_image", {"roi": roi, "label": "tumour-roi", "client_id": CLIENT,
                                     "result_extension": ".nii.gz"})
    assert r.status == 200, r.detail
    assert r.mask.geometry.same_as(lung2["image"].geometry) and r.mask.array.shape == lung2["label"].shape
    assert dice(r.mask.array, lung2["label"]) >= 0.85
    assert roi[4] <= r.json["slice_range"][0] <= r.json["slice_range"][1] <= roi[5]
    assert r.json["obj_id"] == 2


def test_label_saved_atomically_and_downloaded_again(client, server):
    label_path = SAMPLE_DIR / "lung2_label.nii.gz"
    r = client.put_label("lung2_image", label_path)
    assert r.status_code == 200, r.text
    back = client.get("/datastore/label", label="lung2_image", tag="final")
    assert back.status_code == 200 and back.content == label_path.read_bytes()
    listing = client.get("/datastore/", output="all").json()
    assert "final" in listing["objects"]["lung2_image"]["labels"]
    final_dir = server.studies / "labels" / "final"
    assert sorted(p.name for p in final_dir.iterdir()) == ["lung2_image.nii.gz"]  # no temporary left behind
    saved = read_mask(final_dir / "lung2_image.nii.gz")
    assert saved.geometry.same_as(read_volume(SAMPLE_DIR / "lung2_image.nii.gz").geometry)


@pytest.mark.slow
def test_two_clients_on_two_images_in_parallel(client):
    cases = {"lung1": "pytest-par-a", "brain1": "pytest-par-b"}
    replies, errors = {}, []

    def one(case):
        try:
            label = read_mask(SAMPLE_DIR / f"{case}_label.nii.gz").array
            box = largest_slice_box(label)
            replies[case] = (client.infer(f"{case}_image", {"boxes": [box], "client_id": cases[case]}), label, box)
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=one, args=(case,)) for case in cases]
    [t.start() for t in threads]
    [t.join(900) for t in threads]
    assert not errors
    for case, (r, label, box) in replies.items():
        image = read_volume(SAMPLE_DIR / f"{case}_image.nii.gz")
        assert r.status == 200, r.detail
        assert r.mask.array.shape == image.array.shape and r.mask.geometry.same_as(image.geometry), case
        k = box[0][2]
        assert dice(r.mask.array[k], label[k]) >= 0.7, case  # the boxed slice: its own image's lesion
        assert r.json["session"]["key"] == f"{case}_image@{cases[case]}"


def _bad_requests(client, tmp_path):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(gzip.compress(b"not an image at all"))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    small = tmp_path / "small.nii.gz"
    write_mask(small, np.ones((4, 4, 4), np.uint8), like=Volume(np.zeros((4, 4, 4)), Geometry()))
    lung2 = "lung2_image"
    return {
        "unknown image": lambda: client.infer("no_such_image", {"foreground": [[1, 1, 1]]}),
        "unknown model": lambda: client.infer(lung2, {}, model="no_such_model"),
        "malformed params JSON": lambda: client.infer(lung2, None, raw_params='{"foreground": [[1, 2, 3]'),
        "point outside the volume": lambda: client.infer(lung2, {"foreground": [[600, 10, 10]]}),
        "ROI outside the volume": lambda: client.infer(lung2, {"roi": [600, 700, 10, 20, 3, 5]}),
        "empty ROI": lambda: client.infer(lung2, {"roi": [0, 0, 0, 0, 0, 0]}),
        "non-image upload": lambda: client.infer(None, {"foreground": [[1, 1, 1]]}, upload=text),
        "corrupt NIfTI upload": lambda: client.infer(None, {"foreground": [[1, 1, 1]]}, upload=junk),
        "corrupt label upload": lambda: client.put_label(lung2, junk),
        "label of another grid": lambda: client.put_label(lung2, small),
        "gone session": lambda: client.infer(lung2, {"foreground": [[1, 1, 1]], "medvl_session": "0123456789ab"}),
    }


@pytest.mark.parametrize("case", ["unknown image", "unknown model", "malformed params JSON",
                                  "point outside the volume", "ROI outside the volume", "empty ROI",
                                  "non-image upload", "corrupt NIfTI upload", "corrupt label upload",
                                  "label of another grid", "gone session"])
def test_bad_request_gets_4xx_with_one_line_reason_and_server_stays_up(client, server, tmp_path, case):
    reply = _bad_requests(client, tmp_path)[case]()
    status = getattr(reply, "status", None) or reply.status_code
    detail = reply.detail if hasattr(reply, "detail") else reply.json()["detail"]
    assert 400 <= status < 500, (case, status, detail)
    assert detail and "\n" not in detail and "/tmp/" not in detail, detail
    assert server.alive() and client.get("/info/").status_code == 200


@pytest.mark.slow
def test_stock_client_roi_with_clicks_is_never_refused(client):
    """The interactive protocol through HTTP with the stock client's parameters (ROI + every
    click so far in each request): no step refused, geometry exact, Dice kept."""
    from medvl.bench.devset import SPECS, load_target
    from medvl.bench.via_server import run_target
    from medvl.server.client import ServerClient

    target = load_target(next(s for s in SPECS if s.name == "sample:lung1"), "axial")
    row = run_target(ServerClient(client.url, client_id="pytest-roi-clicks"), "lung1_image", target, clicks=3)
    assert row["refused"] == [], row["refused"]
    assert row["dice"][0] >= 0.85
    kinds = {bool(s["quality"]) for s in row["steps"]}
    assert kinds == {True}  # every reply carries the quality signal
    assert min(row["dice"]) >= row["dice"][0] - 0.1
