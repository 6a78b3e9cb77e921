"""Each volume's folder appears once and whole; resume hashes follow the input's bytes."""

from __future__ import annotations

import json
import os
import threading

from medvl.batch.fingerprint import input_fingerprint, job_hash
from medvl.batch.publish import clean_partial, partial_dir, publish, read_status


def _attempt(out, case, h, status="ok", payload="x"):
    tmp = partial_dir(out) / f"{case}.{threading.get_ident()}-{payload}"
    tmp.mkdir(parents=True)
    (tmp / "labels.bin").write_text(payload * 1000)
    (tmp / "status.json").write_text(json.dumps({"hash": h, "status": status, "payload": payload}))
    return tmp


def test_first_publishes_same_hash_is_kept_new_hash_replaces(tmp_path):
    final = tmp_path / "case"
    assert publish(_attempt(tmp_path, "case", "h1", payload="a"), final, "h1") == "published"
    assert publish(_attempt(tmp_path, "case", "h1", payload="b"), final, "h1") == "kept"
    assert read_status(final)["payload"] == "a"  # the first whole result stays
    assert publish(_attempt(tmp_path, "case", "h2", payload="c"), final, "h2") == "replaced"
    assert read_status(final)["payload"] == "c"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial", "case"]
    assert list(partial_dir(tmp_path).iterdir()) == []  # the old result and the discarded one are gone


def test_a_failed_result_is_replaced_by_a_retry(tmp_path):
    final = tmp_path / "case"
    publish(_attempt(tmp_path, "case", "h1", status="failed", payload="a"), final, "h1")
    assert publish(_attempt(tmp_path, "case", "h1", payload="b"), final, "h1") == "replaced"
    assert read_status(final)["status"] == "ok"


def test_concurrent_attempts_leave_exactly_one_whole_result(tmp_path):
    final, results = tmp_path / "case", []
    tmps = [_attempt(tmp_path, "case", "h", payload=str(n)) for n in range(8)]
    threads = [threading.Thread(target=lambda t=t: results.append(publish(t, final, "h"))) for t in tmps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["kept"] * 7 + ["published"]
    payload = read_status(final)["payload"]
    assert (final / "labels.bin").read_text() == payload * 1000  # labels and status of the same attempt
    assert list(partial_dir(tmp_path).iterdir()) == []


def test_clean_partial_removes_abandoned_attempts(tmp_path):
    _attempt(tmp_path, "a", "h")
    (partial_dir(tmp_path) / "stray.tmp").write_text("x")
    assert clean_partial(tmp_path) == 2
    assert clean_partial(tmp_path / "missing") == 0


def test_fingerprint_reuses_the_hash_only_while_size_and_mtime_hold(tmp_path):
    f = tmp_path / "a.nii.gz"
    f.write_bytes(b"one")
    first = input_fingerprint(str(f))
    fake = dict(first, sha256="recorded")
    assert input_fingerprint(str(f), fake)["sha256"] == "recorded"  # stat unchanged: no re-read
    f.write_bytes(b"two")
    os.utime(f, ns=(first["files"][0][2] + 10**9,) * 2)
    again = input_fingerprint(str(f), fake)
    assert again["sha256"] not in ("recorded", first["sha256"])


def test_job_hash_changes_with_prompts_and_settings_not_with_the_path():
    job = {"case_id": "a", "source": "/x/a.nii.gz", "objects": [{"text": "lungs"}], "modality": None}
    h = job_hash("sha", job, {"engine": "litemedsam"})
    assert job_hash("sha", dict(job, source="/moved/a.nii.gz"), {"engine": "litemedsam"}) == h
    assert job_hash("sha", dict(job, objects=[{"text": "bone"}]), {"engine": "litemedsam"}) != h
    assert job_hash("sha", job, {"engine": "sam2"}) != h
    assert job_hash("sha2", job, {"engine": "litemedsam"}) != h
