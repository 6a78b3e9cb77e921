"""The torch-free client's transport over real HTTP: multipart both ways, error mapping,
cancellation. A small stdlib HTTP server in a thread plays the server here; the real MONAI
Label server drives the client in test_server.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from MedVLSlicerLib.client import MedVLClient, encode_multipart, parse_multipart
from MedVLSlicerLib.errors import CancelledError, ServerError, ServerUnreachableError, SessionExpiredError

MODULE_DIR = Path(__file__).resolve().parents[2] / "MedVLSlicer"

BINARY = bytes(range(256)) * 64 + b"\r\n--not-a-boundary\r\n\r\n" + b"\x1f\x8b\x08\x00"  # CRLFs and gzip magic


class Handler(BaseHTTPRequestHandler):
    """Answers by path; records every request in `server.seen`."""

    def log_message(self, *args):
        pass

    def _reply(self, status, body: bytes, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.server.seen.append((self.command, self.path, self.headers.get("Content-Type", ""), body))
        return body

    def do_GET(self):
        self._read()
        if self.path.startswith("/info/"):
            self._reply(200, json.dumps({"name": "fake", "models": {"medvl_interactive": {"type": "deepgrow"}}}).encode())
        elif self.path.startswith("/session/gone"):
            self._reply(404, b'{"detail": "Session (gone) Not Found"}')
        elif self.path.startswith("/session/"):
            self._reply(200, b'{"name": "alive"}')
        else:
            self._reply(404, b'{"detail": "Not Found"}')

    def do_PUT(self):
        body = self._read()
        if self.path.startswith("/session/"):
            self._reply(200, json.dumps({"session_id": "s-1", "bytes": len(body)}).encode())
        else:
            self._reply(200, json.dumps({"image": "img", "label": "img"}).encode())

    def do_POST(self):
        body = self._read()
        model = self.path.split("/infer/")[1].split("?")[0]
        if model == "gone":
            self._reply(410, b'{"detail": "session \'mls:x\' (abc) is gone: expired after 1800 s idle; send the full prompt set"}')
        elif model == "expired_upload":
            self._reply(400, b'{"detail": "no image: pass ?image=<datastore id>, upload a file, or a live session_id '
                             b'(an expired session_id leaves no image; create a new session)"}')
        elif model == "bad":
            self._reply(400, b'{"detail": "point (i, j, k) [600, 1, 1] is outside the volume of 512x512x61 voxels"}')
        elif model == "crash":
            self._reply(500, b"Internal Server Error")
        elif model == "json_only":
            self._reply(200, b'{"changed": false}')
        else:
            fields, _ = parse_multipart(body, self.headers["Content-Type"])
            params = json.loads(fields["params"])
            answer, ctype = encode_multipart({"params": json.dumps({"echo": params, "latencies": {"total": 0.1}})},
                                             {"image": ("mask.nrrd", BINARY)})
            self._reply(200, answer, ctype)


@pytest.fixture(scope="module")
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(fake_server):
    fake_server.seen.clear()
    return MedVLClient(f"http://127.0.0.1:{fake_server.server_address[1]}/", client_id="tester")


def test_multipart_round_trip_keeps_binary_bytes():
    body, ctype = encode_multipart({"params": '{"a": 1}'}, {"files": [("a.nrrd", BINARY), ("b.nrrd", b"")]})
    fields, files = parse_multipart(body, ctype)
    assert fields == {"params": '{"a": 1}'}
    assert files["files"] == ("b.nrrd", b"")  # repeated field: the last one is kept by name
    assert BINARY in body


def test_info_and_trailing_slash(client):
    assert client.server_url.endswith(":" + client.server_url.rsplit(":", 1)[1]) and not client.server_url.endswith("/")
    assert "medvl_interactive" in client.models()


def test_infer_sends_params_and_client_id_and_returns_mask_bytes(client, fake_server):
    result = client.infer("medvl_interactive", {"foreground": [[1, 2, 3]]}, session_id="s 1")
    assert result.mask == BINARY and result.mask_name == "mask.nrrd"
    assert result.params["echo"] == {"foreground": [[1, 2, 3]], "client_id": "tester"}
    assert result.seconds > 0
    method, path, _, _ = fake_server.seen[-1]
    assert method == "POST" and path.startswith("/infer/medvl_interactive?") and "session_id=s+1" in path


def test_infer_without_image_or_session_is_refused(client):
    with pytest.raises(ValueError, match="image_id .* or a session_id"):
        client.infer("medvl_interactive", {})


def test_json_only_answer(client):
    result = client.infer("json_only", {}, image_id="img")
    assert result.mask is None and result.params == {"changed": False}


def test_session_upload_sends_the_file(client, fake_server, tmp_path):
    path = tmp_path / "vol.nrrd"
    path.write_bytes(BINARY)
    assert client.create_session(str(path), expiry_s=60) == "s-1"
    method, selector, ctype, body = fake_server.seen[-1]
    assert method == "PUT" and selector == "/session/?expiry=60"
    assert parse_multipart(body, ctype)[1]["files"] == ("vol.nrrd", BINARY)


def test_keepalive_of_live_and_gone_sessions(client):
    assert client.touch_session("alive") == {"name": "alive"}
    with pytest.raises(SessionExpiredError, match="404"):
        client.touch_session("gone")


@pytest.mark.parametrize("model", ["gone", "expired_upload"])
def test_session_loss_is_its_own_error(client, model):
    with pytest.raises(SessionExpiredError) as info:
        client.infer(model, {}, session_id="x")
    assert info.value.status in (400, 410) and "session" in info.value.reason


def test_bad_request_keeps_the_servers_reason(client):
    with pytest.raises(ServerError, match=r"400 .*outside the volume of 512x512x61") as info:
        client.infer("bad", {}, session_id="x")
    assert not isinstance(info.value, SessionExpiredError)


def test_server_crash_is_a_server_error(client):
    with pytest.raises(ServerError, match="500"):
        client.infer("crash", {}, session_id="x")


def test_unreachable_server_says_how_to_fix():
    with pytest.raises(ServerUnreachableError, match="start the server"):
        MedVLClient("http://127.0.0.1:9", timeout_s=2).info()  # port 9 (discard): nothing listens


def test_url_without_scheme_is_refused():
    with pytest.raises(ServerUnreachableError, match="http://"):
        MedVLClient("localhost:8000")


def test_cancel_stops_reading_the_answer(client):
    with pytest.raises(CancelledError):
        client.infer("medvl_interactive", {}, session_id="x", should_cancel=lambda: True)


def test_datastore_label_upload(client, fake_server, tmp_path):
    path = tmp_path / "label.nrrd"
    path.write_bytes(b"label")
    assert client.save_label("img", str(path), params={"label_names": {"1": "tumour"}})["label"] == "img"
    method, selector, ctype, body = fake_server.seen[-1]
    assert method == "PUT" and selector == "/datastore/label?image=img&tag=final"
    fields, files = parse_multipart(body, ctype)
    assert files["label"] == ("label.nrrd", b"label") and json.loads(fields["params"])["label_names"] == {"1": "tumour"}


def test_client_and_logic_import_without_torch_qt_or_slicer_gui():
    """Slicer's Python has no torch; slicer-core has no qt/ctk/ScriptedLoadableModule."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import MedVLSlicerLib.client, MedVLSlicerLib.logic, MedVLSlicerLib.prompts, MedVLSlicerLib.selftest;"
        "bad = sorted(m for m in ('torch', 'qt', 'ctk', 'slicer.ScriptedLoadableModule', 'requests') if m in sys.modules);"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code, str(MODULE_DIR)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
