"""A small torch-free HTTP client for the server (benchmark, tests, scripts).

    client = ServerClient("http://127.0.0.1:8000", client_id="me")  # token: $MEDVL_TOKEN unless given
    reply = client.infer("lung2_image", {"foreground": [[358, 363, 22]]})
    reply.json["voxels"], reply.save("mask.nrrd")

Parameters are those of `medvl.server.protocol`; the JSON part is described there too.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class InferReply:
    status: int  # HTTP status
    json: dict  # the JSON part (or the error body: {"detail": "..."})
    image: bytes | None  # the mask file as sent (NRRD / NIfTI), None when the reply had none
    filename: str | None  # its name; the extension tells the format
    seconds: float  # client wall time: request sent -> response read and split

    @property
    def detail(self) -> str:
        return str(self.json.get("detail", ""))

    def save(self, path) -> Path:
        """Write the mask file to `path` (give it the reply's extension)."""
        if self.image is None:
            raise ValueError(f"reply {self.status} carries no image: {self.detail or self.json}")
        path = Path(path)
        path.write_bytes(self.image)
        return path


class ServerClient:
    def __init__(self, url: str, client_id: str = "", timeout_s: float = 900.0, token: str | None = None):
        """`token`: sent as `Authorization: Bearer <token>` on every request (medvl.server.auth);
        None -> $MEDVL_TOKEN, "" -> none."""
        import requests

        self.url, self.client_id, self.timeout_s = url.rstrip("/"), client_id, timeout_s
        self.http = requests.Session()
        token = os.environ.get("MEDVL_TOKEN", "") if token is None else token
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def info(self) -> dict:
        r = self.http.get(self.url + "/info/", timeout=60)
        r.raise_for_status()
        return r.json()

    def infer(self, image: str | None, params: dict | None = None, model: str = "medvl_interactive",
              upload=None, raw_params: str | None = None, request_id: str | None = None) -> InferReply:
        """POST /infer/<model>?image=<id> with `params` as JSON (client_id added if unset).

        `request_id`: names the request for `progress(request_id)` and `cancel(request_id)`."""
        params = dict(params or {})
        if self.client_id:
            params.setdefault("client_id", self.client_id)
        files = {"params": (None, raw_params if raw_params is not None else json.dumps(params))}
        if upload is not None:
            upload = Path(upload)
            files["file"] = (upload.name, upload.read_bytes())
        t0 = time.perf_counter()
        query = {"image": image} if image else {}
        if request_id:
            query["request_id"] = request_id
        r = self.http.post(f"{self.url}/infer/{model}", params=query, files=files, timeout=self.timeout_s)
        reply = _split(r)
        reply.seconds = time.perf_counter() - t0
        return reply

    def progress(self, request_id: str) -> dict:
        """GET /medvl/progress/<id>: state, slices done, their range (see medvl.server.jobs)."""
        r = self.http.get(f"{self.url}/medvl/progress/{request_id}", timeout=60)
        r.raise_for_status()
        return r.json()

    def cancel(self, request_id: str) -> dict:
        """POST /medvl/cancel/<id>: stop the request at the next slice, keeping what was done."""
        r = self.http.post(f"{self.url}/medvl/cancel/{request_id}", timeout=60)
        r.raise_for_status()
        return r.json()

    def put_label(self, image: str, path, tag: str = "final"):
        path = Path(path)
        with open(path, "rb") as f:
            return self.http.put(f"{self.url}/datastore/label", params={"image": image, "tag": tag},
                                 files={"label": (path.name, f)}, timeout=60)


def _split(r) -> InferReply:
    kind = r.headers.get("content-type", "")
    if not kind.startswith("multipart/"):
        body = r.json() if "json" in kind else {"detail": r.text}
        return InferReply(r.status_code, body if isinstance(body, dict) else {"result": body}, None, None, 0.0)
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    info, image, name = {}, None, None
    for part in MultipartDecoder(r.content, kind).parts:
        disposition = part.headers.get(b"Content-Disposition", b"").decode()
        if 'name="params"' in disposition:
            info = json.loads(part.text)
        elif "filename=" in disposition:
            image, name = part.content, disposition.split("filename=", 1)[1].strip('"')
    return InferReply(r.status_code, info, image, name, 0.0)
