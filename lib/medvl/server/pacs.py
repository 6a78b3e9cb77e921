"""A PACS over DICOMweb as the server's datastore: the URL rules, the start probe, the SEG writer.

`medvl serve --studies http://127.0.0.1:8042/dicom-web` selects it (any `--studies` starting
with http:// or https://, as in MONAI Label). Rules:

- the URL is an http(s) URL with a host, and no user:password, query or fragment (credentials
  go by environment: MONAI_LABEL_DICOMWEB_USERNAME / _PASSWORD, never argv: `ps` shows argv);
- the PACS must answer a QIDO-RS query (`GET <url>/series?limit=1`) at start, else the
  start fails with one line naming the URL and the reason (`probe`);
- series are fetched into a local cache folder, one per PACS URL (`cache_base`/md5(url)); every
  path the datastore reads or writes is checked to lie inside it
  (`medvl.server.datastore_dicomweb`), and uploads / reports / batch outputs use it as the
  server's local folder.

`label_to_dicom_seg` is the one place a saved label becomes a DICOM SEG: MedVLSlicer's own
writer (`medvl.dicom.export.label_file_to_seg`, highdicom: one segment per label value with its
SNOMED CT code, algorithm identification, sparse frames, the series' exact geometry), not MONAI
Label's conversion (generic codes; its default would download the dcmqi binary).
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from medvl.errors import MedVLError
from medvl.server.settings import ConfigError

logger = logging.getLogger(__name__)

SCHEMES = ("http://", "https://")
DEFAULT_CACHE = Path.home() / ".cache" / "medvl" / "dicomweb"  # --conf pacs_cache unset


class PacsUnavailableError(MedVLError):
    """The PACS did not answer a request while the server runs (HTTP 502; the server stays up)."""


def is_pacs(studies) -> bool:
    """True when `--studies` names a DICOMweb server rather than a folder."""
    return isinstance(studies, str) and studies.strip().lower().startswith(SCHEMES)


def check_url(url: str) -> str:
    """The DICOMweb base URL, normalised (no trailing '/'), or ConfigError naming what is wrong."""
    text = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--studies {url!r} is not an http(s) URL with a host: give a folder or e.g. "
                          "http://127.0.0.1:8042/dicom-web")
    if parts.username or parts.password:
        raise ConfigError(f"--studies {parts.scheme}://{parts.hostname}...: put no credentials in the URL; set "
                          "MONAI_LABEL_DICOMWEB_USERNAME and MONAI_LABEL_DICOMWEB_PASSWORD instead")
    if parts.query or parts.fragment:
        raise ConfigError(f"--studies {url!r} has a query or fragment: give the DICOMweb base URL only, "
                          "e.g. http://127.0.0.1:8042/dicom-web")
    return text


def probe(url: str, timeout_s: float = 5.0, auth: tuple[str, str] | None = None) -> float:
    """Seconds a QIDO-RS series query took, or ConfigError in one line if the PACS does not answer it."""
    request = urllib.request.Request(url + "/series?limit=1", headers={"Accept": "application/dicom+json"})
    if auth:
        import base64

        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
            json.loads(body or b"[]")  # Orthanc answers 204 / empty when it has nothing
    except urllib.error.HTTPError as exc:
        raise ConfigError(f"PACS {url} answered HTTP {exc.code} to a QIDO-RS query (GET {url}/series): "
                          "is this the DICOMweb root (Orthanc: .../dicom-web) and are the credentials set?") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(f"PACS {url} is not reachable ({reason}): start it (e.g. Orthanc with the DICOMweb "
                          "plugin) or fix --studies") from None
    except ValueError:
        raise ConfigError(f"PACS {url} did not answer a QIDO-RS query with DICOM JSON: is this the DICOMweb root "
                          "(Orthanc: http://HOST:8042/dicom-web)?") from None
    return time.monotonic() - start


def credentials() -> tuple[str, str] | None:
    """(user, password) from MONAI Label's environment settings, or None."""
    from monailabel.config import settings

    user = settings.MONAI_LABEL_DICOMWEB_USERNAME or settings.MONAI_LABEL_DATASTORE_USERNAME
    password = settings.MONAI_LABEL_DICOMWEB_PASSWORD or settings.MONAI_LABEL_DATASTORE_PASSWORD
    return (user, password) if user and password else None


def cache_base(cache_dir: str = "") -> Path:
    """The folder holding one cache folder per PACS URL (MONAI Label names each `md5(url)`), created."""
    folder = Path(os.path.realpath(Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def label_to_dicom_seg(series_dir: str, label_file: str, segments: list[dict]) -> str:
    """A DICOM SEG file (temporary; the caller deletes it) of `label_file` on the series in `series_dir`.

    `segments`: one dict per label value present, in ascending order ({"name": ...}, MONAI Label's
    `label_info`), naming each segment. "" when the label has no foreground voxel."""
    import tempfile

    import numpy as np

    from medvl.dicom.export import label_file_to_seg
    from medvl.dicom.seg import AlgorithmInfo
    from medvl.errors import ImageWriteError
    from medvl.io import read_mask

    values = [int(v) for v in np.unique(read_mask(label_file).array) if v]
    names = {v: str(seg.get("name") or f"object {v}") for v, seg in zip(values, segments or [])}
    fd, out = tempfile.mkstemp(prefix="medvl-seg-", suffix=".dcm")
    os.close(fd)
    try:
        return str(label_file_to_seg(label_file, series_dir, out, names,
                                     AlgorithmInfo("medvl", "saved label", interactive=True)))
    except ImageWriteError:  # no foreground voxel: nothing to store
        os.unlink(out)
        return ""
    except BaseException:
        os.unlink(out)
        raise
