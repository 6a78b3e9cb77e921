"""`medvl.server.pacs`: the URL rules and the start probe, without a PACS (no server, fast)."""

from __future__ import annotations

import argparse
import http.server
import subprocess
import sys
import threading

import pytest

from medvl.server import add_arguments, serve, server_env
from medvl.server.launch import free_port
from medvl.server.pacs import cache_base, check_url, is_pacs, probe
from medvl.server.settings import ConfigError


def test_only_http_urls_select_the_pacs():
    assert is_pacs("http://127.0.0.1:8042/dicom-web") and is_pacs("https://pacs.example/dicomweb")
    assert not is_pacs("/data/studies") and not is_pacs("ftp://pacs/dicom-web") and not is_pacs("httpdir")


@pytest.mark.parametrize("url, words", [
    ("http://", "not an http(s) URL with a host"),
    ("http://user:secret@127.0.0.1:8042/dicom-web", "MONAI_LABEL_DICOMWEB_USERNAME"),
    ("http://127.0.0.1:8042/dicom-web?limit=1", "query or fragment"),
])
def test_bad_urls_are_named_in_one_line(url, words):
    with pytest.raises(ConfigError) as caught:
        check_url(url)
    message = str(caught.value)
    assert words in message and "\n" not in message and "secret" not in message


def test_url_is_normalised():
    assert check_url(" http://127.0.0.1:8042/dicom-web/ ") == "http://127.0.0.1:8042/dicom-web"


def test_an_unreachable_pacs_is_one_line_before_anything_starts():
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(ConfigError) as caught:
        serve(parser.parse_args(["--studies", url]))
    assert url in str(caught.value) and "not reachable" in str(caught.value) and "\n" not in str(caught.value)


class _NotDicomweb(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # an ordinary web server: HTML, or 404 for the DICOMweb path
        status = 404 if "/series" in self.path and "wrong" in self.path else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"<html>hello</html>")

    def log_message(self, *args):
        pass


def test_a_web_server_that_is_not_dicomweb_is_named():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _NotDicomweb)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        with pytest.raises(ConfigError, match="did not answer a QIDO-RS query with DICOM JSON"):
            probe(base + "/dicom-web")
        with pytest.raises(ConfigError, match="answered HTTP 404"):
            probe(base + "/wrong")
    finally:
        httpd.shutdown()


def test_the_cache_folder_is_created_and_resolved(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real").mkdir()
    assert cache_base(str(link)) == (tmp_path / "real").resolve()


def test_medvl_serve_exits_with_one_line_when_the_pacs_is_unreachable():
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    run = subprocess.run([sys.executable, "-m", "medvl.cli", "serve",
                          "--studies", url], capture_output=True, text=True, timeout=60, env=server_env())
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "not reachable" in lines[0], run.stderr
