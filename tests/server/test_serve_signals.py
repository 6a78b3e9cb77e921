"""`medvl serve` off loopback: it prints a generated token, and SIGTERM to it stops the server it started."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from medvl.server import server_env
from medvl.server.launch import free_port
from tests.server.conftest import SAMPLE_DIR, requires_server

pytestmark = [pytest.mark.server, requires_server]


def children_of(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_medvl_serve_stops_the_server_and_its_children(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(SAMPLE_DIR / "brain1_image.nii.gz", studies)
    port, out = free_port(), tmp_path / "serve.out"
    env = server_env()
    env.pop("MEDVL_TOKEN", None)
    env.pop("MEDVL_ADMIN_TOKEN", None)
    with open(out, "wb") as sink:
        serve = subprocess.Popen([sys.executable, "-m", "medvl.cli", "serve", "--studies", str(studies), "--host",
                                  "0.0.0.0", "--port", str(port)], env=env, stdout=sink, stderr=subprocess.STDOUT)
    url, server_pids = f"http://127.0.0.1:{port}/info/", set()
    try:
        deadline, token = time.monotonic() + 180, None
        while time.monotonic() < deadline and serve.poll() is None:
            found = re.search(r"^token \(send Authorization: Bearer <token>\): (\S+)$", out.read_text(), re.M)
            token = found.group(1) if found else None
            try:
                if token and requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"medvl serve did not come up:\n{out.read_text()[-3000:]}")
        assert requests.get(url, timeout=5).status_code == 401  # the printed token is required
        server_pids = children_of(serve.pid)
        assert server_pids, "medvl serve started no server process"

        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(alive(p) for p in server_pids):
            time.sleep(0.2)
        assert not [p for p in server_pids if alive(p)], "server processes outlived medvl serve"
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)
    finally:
        if serve.poll() is None:
            serve.kill()
        for pid in server_pids | children_of(serve.pid):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)  # an orphan left by a failed check
