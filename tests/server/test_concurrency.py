"""Requests that do not block each other, over HTTP on the real server: a long propagation runs
while `/info/` and a click on another session are answered; progress, the partial mask, cancel.

The long request is a body-wide box on lung2: LiteMedSAM follows the body slice after slice
(tens of slices, seconds each on this machine), so it is still running when the checks run;
each check asserts that order (its answer came while the long request was still running).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from medvl.io import read_mask
from tests.server.conftest import requires_server

pytestmark = requires_server

BODY_BOX = [[40, 60, 30], [470, 440, 30]]  # ITK corners on lung2 slice k=30: the whole body


def _wait_for(predicate, timeout_s=300.0, every_s=0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError("timed out waiting")


def test_long_propagation_does_not_block_info_or_other_sessions_and_cancel_keeps_its_slices(client, lung2,
                                                                                          tmp_path):
    replies = {}
    long_request = threading.Thread(target=lambda: replies.setdefault("long", client.infer(
        "lung2_image", {"boxes": [BODY_BOX], "client_id": "long"}, request_id="body-1")))
    long_request.start()
    first = _wait_for(lambda: _progress(client, "body-1", at_least=2))  # seed + one propagated slice
    assert first["state"] == "running" and first["axis"] == "k" and 30 in first["slices"]

    info = client.get("/info/")
    assert info.status_code == 200 and _progress(client, "body-1")["state"] == "running"

    other = client.infer("brain1_image", {"foreground": [[128, 128, 12]], "client_id": "other",
                                          "propagate": False})
    assert other.status == 200 and other.mask is not None
    assert _progress(client, "body-1")["state"] == "running"  # answered while the long one still ran

    partial = client.get("/medvl/progress/body-1", mask=1)
    assert partial.status_code == 200
    path = tmp_path / "partial.nrrd"
    path.write_bytes(partial.content)
    drawn = read_mask(path)
    assert drawn.geometry.same_as(lung2["image"].geometry) and drawn.array[30].any()

    assert client.api.cancel("body-1")["cancelled"] is True
    long_request.join(300)
    stopped = replies["long"]
    assert stopped.status == 409 and "cancelled by the client" in stopped.detail and "kept slices" in stopped.detail
    kept = _progress(client, "body-1")
    assert kept["state"] == "cancelled"

    again = client.infer("lung2_image", {"boxes": [BODY_BOX], "client_id": "long"})  # same prompt set
    assert again.status == 200 and again.json["action"] == "none"
    ks = np.flatnonzero(again.mask.array.any(axis=(1, 2)))
    assert set(ks) <= set(kept["slices"]) and 30 in ks


def test_progress_and_cancel_of_unknown_requests_are_404_and_bad_ids_400(client):
    assert client.get("/medvl/progress/never-sent").status_code == 404
    assert client.api.http.post(client.url + "/medvl/cancel/never-sent").status_code == 404
    bad = client.infer("lung2_image", {"foreground": []}, request_id="../etc")
    assert bad.status == 400 and "request_id" in bad.detail


def test_a_finished_request_reports_done_with_its_slices(client, lung2):
    reply = client.infer("lung2_image", {"foreground": [lung2["point"]], "client_id": "done"}, request_id="done-1")
    assert reply.status == 200 and reply.json["request_id"] == "done-1"
    done = _progress(client, "done-1")
    assert done["state"] == "done" and done["slices_done"] == reply.json["slices"]


def _progress(client, request_id, at_least=0):
    r = client.get(f"/medvl/progress/{request_id}")
    if r.status_code != 200:
        return None
    body = r.json()
    return body if body["slices_done"] >= at_least else None
