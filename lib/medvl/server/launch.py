"""Start the real server as a child process on a free loopback port (tests and benchmark).

    with ServerProcess(studies_dir) as server:
        requests.get(server.url + "/info/")
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from medvl.server import APP_DIR, build_command, server_env
from medvl.server.pacs import is_pacs

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, studies, conf=(), host: str = "127.0.0.1", port: int | None = None, app_dir=APP_DIR,
                 log_path=None, startup_timeout_s: float = 180.0, env: dict | None = None):
        self.studies = studies if is_pacs(studies) else Path(studies)  # a folder, or a DICOMweb URL
        self.conf, self.host = list(conf), host
        self.env = dict(env or {})  # added to the server's environment (e.g. MEDVL_TOKEN: medvl.server.auth)
        self.port = port or free_port(host)
        self.app_dir = app_dir
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="medvl-server-", suffix=".log")[1])
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServerProcess":
        argv = build_command(self.studies, self.host, self.port, self.conf, self.app_dir)
        log = open(self.log_path, "wb")
        env = server_env()
        env.setdefault("MONAI_LABEL_DATASTORE_AUTO_RELOAD", "false")
        env.update(self.env)
        self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode} during start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self._probe(), timeout=5) as response:
                    if response.status == 200:
                        logger.info("server up at %s (log %s)", self.url, self.log_path)
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server did not answer /info/ within {self.startup_timeout_s:g} s:\n{self.log_tail()}")

    def _probe(self) -> urllib.request.Request:
        """GET /info/, with the bearer token when the server asks for one."""
        token = self.env.get("MEDVL_ADMIN_TOKEN") or self.env.get("MEDVL_TOKEN")
        return urllib.request.Request(self.url + "/info/", headers={"Authorization": f"Bearer {token}"} if token else {})

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # its own process group (start_new_session)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
