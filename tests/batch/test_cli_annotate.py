"""`medvl annotate` as a user runs it: one-line errors, JSON progress, Ctrl-C once (finish the volume in
progress, then stop) and twice (abandon it, nothing half-written)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from medvl.batch.publish import read_status
from tests.batch.local_cases import make_cases

ROOT = Path(__file__).resolve().parents[2]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT / "lib"), PYTHONUNBUFFERED="1")


def _medvl(*args, **kw):
    return subprocess.run([sys.executable, "-m", "medvl.cli", *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=300, **kw)


@pytest.mark.parametrize("args, message", [
    (["{in}", "--out", "{out}"], "nothing to do: give --text PROMPT"),
    (["{in}/missing", "--out", "{out}", "--text", "lungs"], "does not exist"),
    (["{in}", "--out", "{out}", "--text", "lungs", "--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["{in}", "--out", "{out}", "--prompts", "{in}/a.nii.gz"], "is not JSON"),
    (["{in}", "--out", "{out}", "--text", "lungs", "--text", "lungs"], "'lungs' given twice"),
])
def test_bad_command_lines_are_one_line_errors(tmp_path, args, message):
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    res = _medvl("annotate", *[a.format(**{"in": tmp_path, "out": tmp_path / "out"}) for a in args])
    assert res.returncode == 1, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def _start(tmp_path, n=3):
    cases = make_cases(tmp_path / "in", offsets=((0, 0), (8, -6), (-6, 10), (4, 4))[:n])
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"name": "nodule", "box": cases[0].box_voxel}]))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "medvl.cli", "annotate", str(tmp_path / "in"), "--out", str(out),
                             "--prompts", str(prompts), "--json-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace", env=_env())
    return proc, out


def _events(proc):
    for line in proc.stdout:
        yield json.loads(line)


@pytest.mark.slow
def test_ctrl_c_once_finishes_the_volume_in_progress_then_stops(tmp_path):
    proc, out = _start(tmp_path)
    events = _events(proc)
    assert next(events)["event"] == "start"
    first = next(events)
    assert first["event"] == "volume" and first["status"] == "ok" and first["done"] == 1
    proc.send_signal(signal.SIGINT)
    rest = list(events)
    assert proc.wait(timeout=120) == 130, proc.stderr.read()
    assert rest[-1]["event"] == "end" and rest[-1]["interrupted"] is True
    done = [e["case_id"] for e in [first, *rest] if e["event"] == "volume"]
    assert len(done) in (1, 2)  # the volume in flight when Ctrl-C came is finished, no new one starts
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["case_id"]) == ["crop0", "crop1", "crop2"]
    assert (summary["volume_status"] == "ok").sum() == len(done)
    assert (summary["volume_status"] == "missing").sum() == 3 - len(done)
    assert list((out / ".partial").iterdir()) == []
    # resume finishes the rest and skips what was done
    res = _medvl("annotate", tmp_path / "in", "--out", out, "--prompts", tmp_path / "prompts.json", "--quiet")
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert (result["skipped"], result["ran"], result["ok"]) == (len(done), 3 - len(done), 3 - len(done))


@pytest.mark.slow
def test_ctrl_c_twice_abandons_the_volume_in_progress(tmp_path):
    proc, out = _start(tmp_path, n=1)
    events = _events(proc)
    assert next(events)["event"] == "start"
    deadline = time.time() + 120
    while not any(p.name.startswith("crop0.") for p in (out / ".partial").glob("*")):  # the volume is in flight
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    rest = []
    for event in events:  # the first Ctrl-C is handled (two signals sent during one long torch call coalesce)
        rest.append(event)
        if event["event"] in ("note", "end"):
            break
    proc.send_signal(signal.SIGINT)
    rest += list(events)
    assert proc.wait(timeout=120) == 130, proc.stderr.read()
    assert rest[-1]["event"] == "end" and rest[-1]["interrupted"] is True and rest[-1]["ran"] == 0
    assert read_status(out / "crop0") is None and not (out / "crop0").exists()  # nothing half-written
    assert list((out / ".partial").iterdir()) == []
