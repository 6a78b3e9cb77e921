"""`medvl serve`: the stock MONAI Label server running the MedVLSlicer app (`monailabel_app/`).

`build_command` is the exact command line; `serve(args)` checks the settings, prints the
URL and runs it in the foreground. The server module docstrings: `sessions` (keys,
memory bound, lock order), `protocol` (request parameters), `interactive` (one request).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

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
    return env


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `medvl serve` flags."""
    parser.add_argument("--studies", default=str(DEFAULT_STUDIES), help="image folder (default: sample_data/)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help=f"server setting, repeatable; keys: {', '.join(ServerSettings.keys())}, "
                             "and the engine's own (sam2_checkpoint, sam2_config, ...: docs/sam2.md)")
    parser.add_argument("--app", default=str(APP_DIR), help=argparse.SUPPRESS)


def serve(args: argparse.Namespace) -> int:
    """Run the server in the foreground until Ctrl-C; returns its exit code."""
    ServerSettings.from_conf(dict(args.conf))  # fail here, with the key named, not inside uvicorn
    if not Path(args.app, "main.py").is_file():
        raise ConfigError(f"no MONAI Label app at {args.app} (main.py missing): run from a checkout of MedVLSlicer")
    argv = build_command(args.studies, args.host, args.port, args.conf, args.app)
    print(f"MedVLSlicer server: http://{args.host}:{args.port}/  (studies: {args.studies}; Ctrl-C stops)",
          flush=True)
    process = subprocess.Popen(argv, env=server_env())
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()
