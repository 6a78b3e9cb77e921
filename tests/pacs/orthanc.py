"""A private Orthanc (DICOM server with the DICOMweb plugin) for the PACS tests, loopback only.

    with OrthancProcess(tmp_dir) as orthanc:
        orthanc.upload(files)            # REST POST /instances
        orthanc.dicomweb_url             # http://127.0.0.1:<port>/dicom-web

The config is generated per run: HTTP on a free port, reachable from this machine only
(`RemoteAccessAllowed` false), no DICOM (DIMSE) listener, storage and index in `tmp_dir`,
the DICOMweb plugin from the Debian package `orthanc-dicomweb`. The package's own service is
never used (nothing here reads /etc/orthanc).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from medvl.server.launch import free_port

ORTHANC = "/usr/sbin/Orthanc"
PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc/plugins")
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"
INSTALL = "apt-get install -y orthanc orthanc-dicomweb"


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin's .so from the Debian package, or None."""
    for folder in PLUGIN_DIRS:
        path = Path(folder) / DICOMWEB_PLUGIN
        if path.is_file():
            return path
    return None


def missing_reason() -> str:
    """'' when Orthanc and its DICOMweb plugin are installed, else why not and the command to fix it."""
    if not (Path(ORTHANC).is_file() or shutil.which("Orthanc")):
        return f"Orthanc is not installed ({ORTHANC} missing): run `{INSTALL}` (as root)"
    if dicomweb_plugin() is None:
        return f"the Orthanc DICOMweb plugin is not installed ({DICOMWEB_PLUGIN} not in {PLUGIN_DIRS[0]}): run `{INSTALL}`"
    return ""


class OrthancProcess:
    def __init__(self, workdir, startup_timeout_s: float = 30.0):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return self.url + "/dicom-web"

    def config(self) -> dict:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        return {
            "Name": "MEDVL_TEST",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,  # only clients on this machine
            "AuthenticationEnabled": False,
            "DicomServerEnabled": False,  # no DIMSE listener: DICOMweb only
            "DicomPort": free_port(),  # unused while disabled, but never the default 4242 of a system Orthanc
            "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Host": "127.0.0.1"},
            "StableAge": 1,
        }

    def start(self) -> "OrthancProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "orthanc.json"
        config.write_text(json.dumps(self.config(), indent=2))
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen([shutil.which("Orthanc") or ORTHANC, str(config)], stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode} during start:\n{self.log_tail()}")
            try:
                self.get("/system")
                self.get("/dicom-web/studies")  # the plugin is loaded too
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer /system within {self.startup_timeout_s:g} s:\n{self.log_tail()}")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read() or b"null")

    def lookup(self, uid: str) -> str:
        """Orthanc's id of the resource with DICOM UID `uid` (POST /tools/lookup)."""
        request = urllib.request.Request(self.url + "/tools/lookup", data=uid.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            found = json.loads(response.read())
        if len(found) != 1:
            raise LookupError(f"Orthanc has {len(found)} resources with UID {uid}")
        return found[0]["ID"]

    def file(self, instance: str) -> bytes:
        """The DICOM file of an Orthanc instance id."""
        with urllib.request.urlopen(f"{self.url}/instances/{instance}/file", timeout=30) as response:
            return response.read()

    def upload(self, files) -> list[str]:
        """POST each DICOM file to /instances (Orthanc's REST API); the Orthanc instance ids."""
        ids = []
        for path in files:
            request = urllib.request.Request(self.url + "/instances", data=Path(path).read_bytes(), method="POST",
                                             headers={"Content-Type": "application/dicom"})
            with urllib.request.urlopen(request, timeout=30) as response:
                ids.append(json.loads(response.read())["ID"])
        return ids

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> "OrthancProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
