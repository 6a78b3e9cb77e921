"""Torch-free HTTP client of the MedVL MONAI Label server (standard library only).

It runs unchanged in Slicer's Python, in a plain venv and in a worker thread: it touches no
MRML node, no Qt object, and keeps no state but the server URL and the client id, so one
instance may serve several threads. Endpoints and parameter names come from `protocol.py`.

    client = MedVLClient("http://127.0.0.1:8000")
    client.models()                                   # {"medvl_interactive": {...}, ...}
    sid = client.create_session("/tmp/lung2.nrrd")    # upload once
    r = client.infer("medvl_interactive", {"foreground": [[260, 250, 20]]}, session_id=sid)
    r.mask, r.mask_name, r.params["latencies"]

Errors: ServerUnreachableError (no answer), ServerError (4xx/5xx with the server's reason),
SessionExpiredError (the session is gone: upload again), CancelledError.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import protocol
from .errors import CancelledError, ServerError, ServerUnreachableError, SessionExpiredError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16  # bytes read between two cancel checks


@dataclass
class InferResult:
    """One answer of `/infer/<task>`."""

    params: dict  # the JSON part: latencies, slice range, voxels, crop offset, report, ...
    mask: Optional[bytes] = None  # the mask file's bytes (NRRD or NIfTI), None for JSON-only answers
    mask_name: str = ""  # the file name the server gave it; its suffix tells the format
    seconds: float = 0.0  # client-measured round trip (request sent -> last byte read)
    files: dict = field(default_factory=dict)  # every file part by field name (mask included)
    decoded: Optional[tuple] = None  # (labels (k, j, i), IJK->RAS) when decoded off the GUI thread


def encode_multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data request.

    `fields`: name -> str value; `files`: name -> (filename, bytes) or a list of those for a
    repeated field (MONAI Label's `/session/` takes `files` repeated).
    """
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + str(value).encode()
        )
    for name, items in files.items():
        for filename, data in items if isinstance(items, list) else [items]:
            head = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            )
            out.append(head.encode() + data)
    body = b"\r\n".join(out) + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _header_params(value: str) -> dict:
    params = {}
    for piece in value.split(";")[1:]:
        if "=" in piece:
            key, _, val = piece.strip().partition("=")
            params[key.strip().lower()] = val.strip().strip('"')
    return params


def parse_multipart(body: bytes, content_type: str) -> tuple[dict, dict]:
    """Split a multipart body into (fields: name -> str, files: name -> (filename, bytes)).

    A part with a filename is a file, keyed by its field name; the bytes are kept exactly
    (gzip payloads survive), which `email`'s line-oriented parser does not promise.
    """
    boundary = _header_params(content_type).get("boundary")
    if not boundary:
        raise ServerError(200, f"multipart answer without a boundary (content type {content_type!r})")
    fields, files = {}, {}
    delimiter = b"--" + boundary.encode()
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # closing delimiter
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = {}
        for line in head.decode("utf-8", "replace").strip().split("\r\n"):
            key, _, val = line.partition(":")
            headers[key.strip().lower()] = val.strip()
        disposition = _header_params(headers.get("content-disposition", ""))
        name = disposition.get("name", "")
        if "filename" in disposition:
            files[name] = (disposition["filename"], data)
        else:
            fields[name] = data.decode("utf-8")
    return fields, files


def _reason(body: bytes) -> str:
    """The server's one-line reason: FastAPI's `detail`, else the body, shortened."""
    text = body.decode("utf-8", "replace").strip()
    try:
        detail = json.loads(text).get("detail", text)
    except (ValueError, AttributeError):
        detail = text
    detail = detail if isinstance(detail, str) else json.dumps(detail)
    return detail if len(detail) <= 300 else detail[:297] + "..."


class MedVLClient:
    """HTTP client of one MedVL MONAI Label server; every call is one request."""

    def __init__(self, server_url: str, client_id: Optional[str] = None, timeout_s: float = 600.0,
                 token: Optional[str] = None):
        url = (server_url or "").strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ServerUnreachableError(f"server URL {server_url!r} must start with http:// or https://")
        self.server_url = url  # e.g. http://127.0.0.1:8000, no trailing slash
        self.client_id = client_id or f"slicer-{uuid.uuid4().hex[:8]}"  # separates our state on shared images
        self.timeout_s = timeout_s  # socket timeout per request (propagation can take a minute on CPU)
        # bearer token of a server started off loopback (printed by `medvl serve`); None -> $MEDVL_TOKEN
        self.token = (os.environ.get(protocol.TOKEN_ENV, "") if token is None else token).strip()
        self.last_request_id = ""  # the newest /infer request's id (progress and cancel of the running one)

    # --- transport ---------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        query: Optional[dict] = None,
        fields: Optional[dict] = None,
        files: Optional[dict] = None,
        should_cancel: Optional[Callable[[], bool]] = None,
        timeout_s: Optional[float] = None,
    ) -> tuple[int, str, bytes]:
        """Send one request; return (status, content type, body). Raises on HTTP >= 400."""
        query = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        selector = path + ("?" + urllib.parse.urlencode(query) if query else "")
        data, headers = None, {"Accept": "*/*"}
        if self.token:
            headers[protocol.AUTH_HEADER] = f"Bearer {self.token}"
        if fields is not None or files is not None:
            data, headers["Content-Type"] = encode_multipart(fields or {}, files or {})
        request = urllib.request.Request(self.server_url + selector, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s) as response:
                chunks = []
                while True:
                    if should_cancel is not None and should_cancel():
                        raise CancelledError(f"{method} {path} cancelled")
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    chunks.append(chunk)
                return response.status, response.headers.get("Content-Type", ""), b"".join(chunks)
        except urllib.error.HTTPError as error:
            reason = _reason(error.read())
            gone = (
                error.code == protocol.SESSION_GONE_STATUS
                or (error.code == protocol.SESSION_NOT_FOUND_STATUS and path.startswith(protocol.SESSION))
                or protocol.SESSION_EXPIRED_MARKER in reason
            )
            raise (SessionExpiredError if gone else ServerError)(error.code, reason, selector) from None
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as error:
            why = getattr(error, "reason", error)
            raise ServerUnreachableError(
                f"no answer from {self.server_url} to {method} {path}: {why}; start the server "
                "(`medvl serve`) or fix the URL"
            ) from None

    def _json(self, method: str, path: str, **kwargs):
        _, _, body = self._request(method, path, **kwargs)
        return json.loads(body.decode("utf-8")) if body else {}

    # --- server ------------------------------------------------------------------------------
    def info(self) -> dict:
        """GET /info/: the app's name, version, models (tasks) and labels."""
        return self._json("GET", protocol.INFO, timeout_s=min(self.timeout_s, 30.0))

    def models(self) -> dict:
        """The server's tasks: name -> description dict (`type`, `labels`, ...)."""
        return dict(self.info().get("models", {}))

    # --- sessions ----------------------------------------------------------------------------
    def create_session(self, image_path: str, expiry_s: int = 3600) -> str:
        """Upload a volume file once; return the session id later requests use."""
        with open(image_path, "rb") as f:
            data = f.read()
        answer = self._json(
            "PUT",
            protocol.SESSION,
            query={"expiry": int(expiry_s)},
            files={"files": [(os.path.basename(image_path), data)]},
        )
        if "session_id" not in answer:
            raise ServerError(200, f"session answer without a session_id: {str(answer)[:200]}", protocol.SESSION)
        return answer["session_id"]

    def touch_session(self, session_id: str) -> dict:
        """Keep a session alive (refresh its last-access time); SessionExpiredError when gone."""
        path = protocol.SESSION_ID.format(session_id=urllib.parse.quote(session_id, safe=""))
        return self._json("GET", path, query={"update_ts": "true"}, timeout_s=min(self.timeout_s, 30.0))

    def remove_session(self, session_id: str) -> None:
        """Drop a session on the server (frees its cached embeddings)."""
        path = protocol.SESSION_ID.format(session_id=urllib.parse.quote(session_id, safe=""))
        self._request("DELETE", path, timeout_s=min(self.timeout_s, 30.0))

    # --- inference ---------------------------------------------------------------------------
    def infer(
        self,
        model: str,
        params: dict,
        image_id: str = "",
        session_id: str = "",
        should_cancel: Optional[Callable[[], bool]] = None,
    ) -> InferResult:
        """POST /infer/<model> with `params`; the answer's mask bytes and JSON part.

        Give `session_id` (uploaded volume) or `image_id` (a datastore image). `client_id` is
        added to `params` so the server keeps this client's state apart from others'.
        """
        if not image_id and not session_id:
            raise ValueError("infer needs an image_id (datastore image) or a session_id (uploaded volume)")
        params = dict(params)
        params.setdefault(protocol.P_CLIENT_ID, self.client_id)
        self.last_request_id = request_id = uuid.uuid4().hex  # the server accepts [A-Za-z0-9_-]{1,64}
        start = time.perf_counter()
        status, content_type, body = self._request(
            "POST",
            protocol.INFER.format(model=urllib.parse.quote(model, safe="")),
            query={"image": image_id, "session_id": session_id, "output": "all", protocol.Q_REQUEST_ID: request_id},
            fields={"params": json.dumps(params)},
            should_cancel=should_cancel,
        )
        seconds = time.perf_counter() - start
        if content_type.startswith("multipart/"):
            fields, files = parse_multipart(body, content_type)
            answer = json.loads(fields.get("params") or "{}")
            mask_name, mask = next(iter(files.values()), ("", None))
            if "image" in files:
                mask_name, mask = files["image"]
            return InferResult(answer, mask, mask_name, seconds, files)
        return InferResult(json.loads(body.decode("utf-8")) if body else {}, None, "", seconds)

    def progress(self, request_id: str) -> dict:
        """GET /medvl/progress/<id>: `state` (running / done / ...), `slices_done`, `elapsed_s`, ..."""
        path = protocol.PROGRESS.format(request_id=urllib.parse.quote(request_id, safe=""))
        return self._json("GET", path, timeout_s=min(self.timeout_s, 10.0))

    def partial_mask(self, request_id: str) -> Optional[bytes]:
        """GET /medvl/progress/<id>?mask=1: the object's mask so far (NRRD bytes, the image's
        geometry), or None while the request has no partial mask (not propagating, or done)."""
        path = protocol.PROGRESS.format(request_id=urllib.parse.quote(request_id, safe=""))
        try:
            _, _, body = self._request("GET", path, query={"mask": 1}, timeout_s=min(self.timeout_s, 30.0))
        except ServerError as error:
            if error.status == 409:
                return None
            raise
        return body

    def get_file(self, path: str) -> bytes:
        """GET a server path the server named in an answer (a report's files)."""
        if not path.startswith("/"):
            raise ServerError(400, f"server file path {path!r} must start with '/'", path)
        _, _, body = self._request("GET", path, timeout_s=min(self.timeout_s, 60.0))
        return body

    def cancel_request(self, request_id: str) -> dict:
        """POST /medvl/cancel/<id>: the server stops that request at its next slice, keeping what was done."""
        path = protocol.CANCEL.format(request_id=urllib.parse.quote(request_id, safe=""))
        return self._json("POST", path, timeout_s=min(self.timeout_s, 10.0))

    # --- datastore ---------------------------------------------------------------------------
    def datastore(self) -> dict:
        """GET /datastore/?output=all: every image and label the server stores."""
        return self._json("GET", protocol.DATASTORE, query={"output": "all"})

    def download_image(self, image_id: str) -> bytes:
        """GET /datastore/image?image=ID: the stored volume file's bytes."""
        _, _, body = self._request("GET", protocol.DATASTORE_IMAGE, query={"image": image_id})
        return body

    def has_image(self, image_id: str) -> bool:
        """True when the datastore holds `image_id`."""
        try:
            self._request("HEAD", protocol.DATASTORE_IMAGE, query={"image": image_id}, timeout_s=30.0)
            return True
        except ServerError as error:
            if error.status == 404:
                return False
            raise

    def upload_image(self, image_path: str, image_id: str) -> str:
        """PUT /datastore/image: store a volume under `image_id`; return the id the server kept."""
        with open(image_path, "rb") as f:
            data = f.read()
        answer = self._json(
            "PUT",
            protocol.DATASTORE_IMAGE,
            query={"image": image_id},
            fields={"params": "{}"},
            files={"file": (os.path.basename(image_path), data)},
        )
        return answer.get("image", image_id)

    def download_label(self, label_id: str, tag: str = "final") -> bytes:
        """GET /datastore/label: the file of a saved label (as the server stores it)."""
        _, _, body = self._request("GET", protocol.DATASTORE_LABEL, query={"label": label_id, "tag": tag})
        return body

    def save_label(self, image_id: str, label_path: str, tag: str = "final", params: Optional[dict] = None) -> dict:
        """PUT /datastore/label: save a finished label of `image_id` (the server writes it atomically)."""
        with open(label_path, "rb") as f:
            data = f.read()
        return self._json(
            "PUT",
            protocol.DATASTORE_LABEL,
            query={"image": image_id, "tag": tag},
            fields={"params": json.dumps(params or {})},
            files={"label": (os.path.basename(label_path), data)},
        )
