"""Containment over HTTP: every traversal trick, on every route that takes an id, tag or file name.

The corpus (`traversal_corpus.TRICKS`, 77 values) goes to the live server as image ids,
label tags and upload names on PUT/DELETE/GET /datastore/image and /label, /infer's `image`,
`save_label` + `label_tag`, and `params` keys that would name a file. Checked: no request
succeeds or fails with 5xx; no file appears, changes or disappears anywhere next to or inside
the studies folder (a snapshot of the whole tree around it, sentinel images outside
included); a valid image outside the studies folder is never served or segmented.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from medvl.geometry import Geometry
from medvl.io import read_volume, write_mask, write_volume
from medvl.volume import Volume
from medvl.server.containment import NAME_RULE
from tests.server.conftest import empty_soon, requires_server
from tests.server.traversal_corpus import TRICKS

pytestmark = [requires_server, pytest.mark.server]

IMAGE = "lung2_image"


def _snapshot(root: Path, skip: set[Path]) -> dict[str, tuple[int, int]]:
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            if path not in skip and path.parent not in skip:
                stat = path.lstat()
                out[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def fenced(server, tmp_path_factory):
    """The tree around the studies folder, with valid sentinel images outside it."""
    studies = Path(server.studies)
    root = studies.parent
    tiny = Volume(np.arange(64, dtype=np.int16).reshape(4, 4, 4), Geometry(spacing=(1.0, 1.0, 1.0)), "CT")
    sentinels = [root / "outside" / "x.nii.gz", root / "outside" / "t.nii.gz", root / "x.nii.gz",
                 studies / "labels" / "outside.nii.gz"]
    for path in sentinels:
        write_volume(path, tiny)
    files = tmp_path_factory.mktemp("containment-files")
    image_file = write_volume(files / "tiny.nii.gz", tiny)
    label_file = write_mask(files / "label.nii.gz", np.zeros(read_volume(studies / f"{IMAGE}.nii.gz").array.shape,
                                                               np.uint8), read_volume(studies / f"{IMAGE}.nii.gz"))
    skip = {Path(server.log_path), Path(server.log_path).parent, files,
            studies / "datastore_v2.json", studies / ".lock"}  # the datastore's own records may be rewritten
    return {"studies": studies, "root": root, "sentinels": sentinels, "image": image_file, "label": label_file,
            "skip": skip}


def _requests(trick: str, fenced) -> list[tuple[str, str, dict]]:
    """(method, path, requests kwargs) for every way `trick` can reach the datastore."""
    image, label = fenced["image"].read_bytes(), fenced["label"].read_bytes()
    fg = {"foreground": [[358, 363, 22]]}
    tags = [] if trick == "" else [  # an empty tag means the default tag (MONAI Label's contract)
        ("PUT", "/datastore/label", dict(params={"image": IMAGE, "tag": trick}, files={"label": ("l.nii.gz", label)})),
        ("POST", "/infer/medvl_interactive", dict(params={"image": IMAGE}, files={"params": (None, json.dumps(
            dict(fg, save_label=True, label_tag=trick)))})),
    ]
    return tags + [
        ("PUT", "/datastore/image", dict(params={"image": trick}, files={"file": ("a.nii.gz", image)})),
        ("PUT", "/datastore/image", dict(files={"file": (trick + ".nii.gz", image)})),
        ("PUT", "/datastore/", dict(params={"image": trick}, files={"file": ("a.nii.gz", image)})),
        ("PUT", "/datastore/label", dict(params={"image": trick, "tag": "final"}, files={"label": ("l.nii.gz", label)})),
        ("DELETE", "/datastore/image", dict(params={"id": trick})),
        ("DELETE", "/datastore/label", dict(params={"id": IMAGE, "tag": trick})),
        ("DELETE", "/datastore/label", dict(params={"id": trick, "tag": "final"})),
        ("GET", "/datastore/image", dict(params={"image": trick})),
        ("HEAD", "/datastore/image", dict(params={"image": trick})),
        ("GET", "/datastore/label", dict(params={"label": IMAGE, "tag": trick})),
        ("GET", "/datastore/label", dict(params={"label": trick, "tag": "final"})),
        ("GET", "/datastore/image/info", dict(params={"image": trick})),
        ("POST", "/infer/medvl_interactive", dict(params={"image": trick}, files={"params": (None, json.dumps(fg))})),
        ("POST", "/infer/medvl_interactive", dict(files={"params": (None, json.dumps(
            dict(fg, image=trick, image_path=trick, session=True, _medvl_upload=trick)))})),
    ]


def test_no_trick_escapes(server, client, fenced):
    before = _snapshot(fenced["root"], fenced["skip"])
    statuses: dict[int, int] = {}
    slow = []
    for trick in TRICKS:
        for method, path, kwargs in _requests(trick, fenced):
            t0 = time.monotonic()
            r = client.api.http.request(method, server.url + path, timeout=60, **kwargs)
            seconds = time.monotonic() - t0
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 200 and method == "PUT" and "file" in kwargs["files"]:
                # an empty id falls back to the file name, and the multipart parser keeps only the last part
                # of a Windows-style path as the file name: a plain name stored inside the studies folder
                stored = r.json()["image"]
                assert NAME_RULE.fullmatch(stored) and (fenced["studies"] / f"{stored}.nii.gz").is_file(), stored
                assert client.api.http.delete(server.url + "/datastore/image", params={"id": stored}).status_code == 200
                continue
            assert 400 <= r.status_code < 500, f"{method} {path} {kwargs.get('params')} with {trick!r}: " \
                                               f"{r.status_code} {r.text[:200]}"
            if method != "HEAD":
                detail = r.json()["detail"]
                assert isinstance(detail, str) and "\n" not in detail
            if seconds > 5:
                slow.append((method, path, trick, round(seconds, 1)))
    assert not slow, f"refusals must be immediate (no file read): {slow}"
    assert sum(statuses.values()) >= 50 * 10
    after = _snapshot(fenced["root"], fenced["skip"])
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))[:10]}"
    assert all(path.is_file() for path in fenced["sentinels"])
    assert server.alive() and client.get("/info/").status_code == 200


@pytest.mark.parametrize("image", ["{root}/outside/x.nii.gz", "{root}/x.nii.gz", "{studies}/labels/outside.nii.gz",
                                   "{studies}/lung2_image.nii.gz", "/dev/zero", "/proc/self/environ", "{studies}",
                                   "{studies}/labels", "labels/outside.nii.gz", "./lung2_image.nii.gz"])
def test_server_paths_are_never_images(server, client, fenced, image):
    image = image.format(root=fenced["root"], studies=fenced["studies"])
    reply = client.infer(image, {"foreground": [[1, 1, 1]], "propagate": False})
    assert reply.status == 404 and "unknown image" in reply.detail, (reply.status, reply.detail)
    assert client.get("/datastore/image", image=image).status_code == 404


def test_a_datastore_id_still_works_and_save_label_stays_inside(server, client, lung2):
    reply = client.infer(IMAGE, {"foreground": [lung2["point"]], "propagate": False, "save_label": True,
                                 "label_tag": "containment_check", "client_id": "containment"})
    assert reply.status == 200, reply.detail
    saved = Path(server.studies) / "labels" / "containment_check" / f"{IMAGE}.nrrd"
    assert saved.is_file()
    listing = client.get("/datastore/", output="all").json()
    assert "containment_check" in listing["objects"][IMAGE]["labels"]
    assert not [p for p in Path(server.studies).rglob("*.part")]


@pytest.mark.parametrize("session_id", ["%2e%2e", "..%2f..", "%2e%2e%2f%2e%2e", "x%00y", "%2fetc"])
def test_session_ids_are_checked(server, client, session_id):
    for method in ("GET", "DELETE"):
        r = client.api.http.request(method, f"{server.url}/session/{session_id}", timeout=60)
        assert r.status_code in (400, 404), (method, session_id, r.status_code, r.text[:200])
    reply = client.api.http.post(f"{server.url}/infer/medvl_interactive", params={"session_id": "../x"},
                                 files={"params": (None, "{}")}, timeout=60)
    assert reply.status_code == 400 and "session_id" in reply.json()["detail"]


def test_a_session_takes_one_checked_image(server, client, fenced):
    url = f"{server.url}/session/"
    data = fenced["image"].read_bytes()
    r = client.api.http.put(url, params={"uncompress": "true"}, files={"files": ("a.zip", data)}, timeout=60)
    assert r.status_code == 400 and "uncompress" in r.json()["detail"]
    r = client.api.http.put(url, files=[("files", ("a.nii.gz", data)), ("files", ("b.nii.gz", data))], timeout=60)
    assert r.status_code == 400 and "one image file" in r.json()["detail"]
    r = client.api.http.put(url, files={"files": ("a.nii.gz", data[:100])}, timeout=60)
    assert r.status_code == 400
    r = client.api.http.put(url, files={"files": ("a.nii.gz", data)}, timeout=60)
    assert r.status_code == 200, r.text[:200]
    session_id = r.json()["session_id"]
    reply = client.api.http.post(f"{server.url}/infer/medvl_interactive", params={"session_id": session_id},
                                 files={"params": (None, json.dumps({"foreground": [[1, 1, 1]], "propagate": False}))},
                                 timeout=120)
    assert reply.status_code == 200, reply.text[:200]
    assert client.api.http.delete(f"{server.url}/session/{session_id}", timeout=60).status_code == 200
    empty_soon(fenced["studies"] / ".medvl-tmp")  # the answer's result file goes just after it is sent
