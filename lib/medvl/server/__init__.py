"""`medvl serve`: the stock MONAI Label server running the MedVLSlicer app (`monailabel_app/`).

`build_command` is the exact command line; `serve(args)` checks the settings, prints the
URL (and any generated tokens: `medvl.server.auth`) and runs it in the foreground, in its own
process group: SIGTERM, SIGINT or SIGHUP to `medvl serve` stop the server too. The server module docstrings: `sessions` (keys,
memory bound, lock order), `protocol` (request parameters), `interactive` (one request).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from medvl.server.auth import access_env
from medvl.server.pacs import check_url, credentials, is_pacs, probe
from medvl.server.settings import ConfigError, ServerSettings

REPO_ROOT = Path(__file__).resolve().parents[3]  # lib/medvl/server/__init__.py -> the checkout
APP_DIR = REPO_ROOT / "monailabel_app"
DEFAULT_STUDIES = REPO_ROOT / "sample_data"
ASGI_APP = "medvl.server.asgi:app"  # MONAI Label's FastAPI app + 4xx handlers


def build_command(studies, host: str = "127.0.0.1", port: int = 8000, conf=(), app_dir=APP_DIR,
                  python: str = sys.executable) -> list[str]:
    """argv for `python -m monailabel.main start_server` with this app; `conf` = (key, value) pairs."""
    argv = [python, "-m", "monailabel.main", "start_server", "--app", str(app_dir), "--studies", str(studies),
            "--host", host, "--port", str(int(port)), "--uvicorn_app", ASGI_APP]
    for key, value in conf:
        argv += ["--conf", str(key), str(value)]
    return argv


def server_env(base: dict | None = None) -> dict:
    """Environment for the server process: this checkout's `lib/` first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    parts = [str(REPO_ROOT / "lib"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    env.setdefault("MALLOC_ARENA_MAX", "2")  # glibc: few malloc arenas, so worker threads do not each grow one
    return env


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `medvl serve` flags."""
    parser.add_argument("--studies", default=str(DEFAULT_STUDIES),
                        help="image folder (default: sample_data/), or a DICOMweb URL (a PACS, e.g. "
                             "http://127.0.0.1:8042/dicom-web: docs/pacs.md)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help=f"server setting, repeatable; keys: {', '.join(ServerSettings.keys())}, "
                             "and the engine's own (sam2_checkpoint, sam2_config, ...: docs/sam2.md)")
    parser.add_argument("--token", default="", help="bearer token every request must send (default: $MEDVL_TOKEN; "
                        "off loopback one is generated and printed); docs/server_security.md")
    parser.add_argument("--admin-token", default="", help="token of the admin routes: delete, dataset download, "
                        "logs, overwriting final labels (default: $MEDVL_ADMIN_TOKEN; generated off loopback)")
    parser.add_argument("--read-only", action="store_true", help="refuse every datastore write and admin route")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="allow cross-origin browser requests from ORIGIN (repeatable; default: none)")
    parser.add_argument("--app", default=str(APP_DIR), help=argparse.SUPPRESS)


def serve(args: argparse.Namespace) -> int:
    """Run the server in the foreground until Ctrl-C; returns its exit code."""
    settings = ServerSettings.from_conf(dict(args.conf))  # fail here, with the key named, not inside uvicorn
    if settings.engine == "sam3":  # its checkpoint folder is checked here too (cheap: nothing is loaded)
        from medvl.engines import get_engine

        get_engine("sam3", checkpoint=settings.checkpoint or None, **settings.engine_options())
    if is_pacs(args.studies):  # a bad URL or an unreachable PACS: one line here, not a traceback in uvicorn
        args.studies = check_url(args.studies)
        probe(args.studies, auth=credentials())
    if not Path(args.app, "main.py").is_file():
        raise ConfigError(f"no MONAI Label app at {args.app} (main.py missing): run from a checkout of MedVLSlicer")
    access, lines = access_env(args.host, getattr(args, "token", ""), getattr(args, "admin_token", ""),
                               getattr(args, "read_only", False), getattr(args, "cors_origin", ()))
    argv = build_command(args.studies, args.host, args.port, args.conf, args.app)
    print(f"MedVLSlicer server: http://{args.host}:{args.port}/  (studies: {args.studies}; Ctrl-C stops)",
          flush=True)
    for line in lines:
        print(line, flush=True)
    env = server_env()
    env.update(access)  # tokens by environment, never argv (`ps` shows argv)
    return run_in_group(argv, env)


def run_in_group(argv: list[str], env: dict, grace_s: float = 20.0) -> int:
    """Run `argv` in its own process group until it exits; SIGTERM/SIGINT/SIGHUP here go to the whole
    group (uvicorn and anything it started), so no server is left answering after `medvl serve` stops.
    A group still running `grace_s` after the signal is killed (SIGKILL)."""
    process = subprocess.Popen(argv, env=env, start_new_session=True)
    stopping = []  # monotonic time of the first forwarded signal

    def signal_group(signum) -> None:
        try:
            os.killpg(process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def forward(signum, _frame):
        signal_group(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
        stopping.append(time.monotonic())

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        while True:
            try:
                code = process.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if stopping and time.monotonic() - stopping[0] > grace_s:
                    signal_group(signal.SIGKILL)
        signal_group(signal.SIGTERM)  # stragglers of the group go with it
        return code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
