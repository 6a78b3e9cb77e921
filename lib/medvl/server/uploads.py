"""Uploaded images and labels: streamed, bounded, checked before they are read, always cleaned up.

An upload (`PUT /datastore/image`, `PUT /datastore/label`, the `file` of `/infer`) goes:

1. `BodyLimitMiddleware` refuses a request body over `max_upload_mb` (HTTP 413) from its
   Content-Length, or while it streams in when none is sent;
2. `receive_upload` streams the file to `<studies>/.medvl-tmp/<random><ext>` (inside the
   studies folder, never a name the client chose), again counting bytes;
3. `check_image_file` reads only the header first: a 3D single-file image whose declared
   voxel count is at most `max_voxels` and whose data (voxels x bytes per voxel) is at
   most `max_voxels` x 4 bytes; NRRD and MetaImage headers that name another data file
   are refused; a gzip stream is first decoded to its end (streaming, bounded by
   `max_voxels`) and its size compared with the header's, so a truncated or corrupt
   `.nii.gz` and a decompression bomb are refused before any image reader decodes pixels;
4. the caller deletes the temporary file in every case (`temporary_upload`);
   `clean_stale` removes what a killed server left behind, at start.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import shutil
import uuid
import zlib
from pathlib import Path

import SimpleITK as sitk

from medvl.errors import ImageReadError
from medvl.server.containment import ContainmentError, upload_extension

logger = logging.getLogger(__name__)

UPLOAD_KEY = "_medvl_upload"  # request key the /infer route sets to a stored upload's path (never a client's)
TMP_DIR = ".medvl-tmp"  # under the studies folder; emptied at start
PART_SUFFIX = ".part"  # label and image files being written (datastore); removed at start
BYTES_PER_VOXEL_LIMIT = 4  # data bytes allowed per max_voxels voxel (float32)
_HEADER_SLACK = 16 << 20  # bytes a decompressed file may hold beyond its data (header, extensions)
_CHUNK = 1 << 20


class UploadTooLargeError(ContainmentError):
    """An upload over `max_upload_mb` (HTTP 413)."""


def tmp_dir(studies) -> Path:
    folder = Path(studies) / TMP_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def receive_upload(upload, studies, max_upload_mb: int) -> Path:
    """Stream a FastAPI `UploadFile` into `<studies>/.medvl-tmp/`; its path (the caller deletes it)."""
    ext = upload_extension(upload.filename)
    limit = int(max_upload_mb) << 20
    path = tmp_dir(studies) / f"upload-{uuid.uuid4().hex}{ext}"
    size = 0
    try:
        with open(path, "wb") as out:
            while chunk := await upload.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise UploadTooLargeError(f"upload {upload.filename!r} is over max_upload_mb={max_upload_mb} "
                                              "MiB: send a smaller file or raise --conf max_upload_mb")
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def temporary_upload(path: Path | None):
    """Delete `path` (an upload in the tmp folder) when the block ends, whatever happens."""
    try:
        yield path
    finally:
        if path is not None:
            Path(path).unlink(missing_ok=True)


def check_image_file(path, max_voxels: int, name: str = "the uploaded file") -> tuple[int, int, int]:
    """Refuse (ImageReadError / ContainmentError) an upload that is not a bounded, complete 3D image.

    Reads the header only, then decodes a gzip stream to its end (bounded); returns the
    declared size (i, j, k). The caller decodes the pixels afterwards (`medvl.io`)."""
    path = Path(path)
    _refuse_detached_data(path, name)
    gzipped = _is_gzip(path)
    decoded = _gunzip_size(path, max_voxels * BYTES_PER_VOXEL_LIMIT + _HEADER_SLACK, name) if gzipped else None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ImageReadError(f"{name} is not a readable image header (NIfTI, NRRD or MHA)") from None
    size = tuple(int(n) for n in reader.GetSize())
    if len(size) != 3 or min(size) < 1:
        raise ImageReadError(f"{name} is {len(size)}D with size {size}; send a 3D image")
    voxels = size[0] * size[1] * size[2]
    data_bytes = voxels * reader.GetNumberOfComponents() * _bytes_per_component(reader.GetPixelID())
    if voxels > max_voxels or data_bytes > max_voxels * BYTES_PER_VOXEL_LIMIT:
        raise UploadTooLargeError(f"{name} declares {size[0]}x{size[1]}x{size[2]} voxels ({data_bytes >> 20} MiB of "
                                  f"data), over max_voxels={max_voxels}: crop or resample it, or raise --conf "
                                  "max_voxels")
    if decoded is not None and decoded > data_bytes + _HEADER_SLACK:
        raise UploadTooLargeError(f"{name} decompresses to more than its header declares ({decoded >> 20} MiB for "
                                  f"{data_bytes >> 20} MiB of data): refused")
    if decoded is not None and decoded < data_bytes:
        raise ImageReadError(f"{name} holds {decoded} bytes once decompressed, less than the {data_bytes} its "
                             "header declares (truncated); send the complete file")
    return size


def _bytes_per_component(pixel_id: int) -> int:
    return sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], pixel_id)).itemsize  # per component


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _gunzip_size(path: Path, limit: int, name: str) -> int:
    """Decode the whole gzip stream (streaming, at most `limit` bytes) and return its size.

    Truncated or corrupt (CRC) -> ImageReadError; over `limit` -> UploadTooLargeError."""
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                total += len(chunk)
                if total > limit:
                    raise UploadTooLargeError(f"{name} decompresses to over {limit >> 20} MiB, more than max_voxels "
                                              "allows: refused")
    except (EOFError, OSError, zlib.error) as error:
        raise ImageReadError(f"{name} is a truncated or corrupt gzip stream ({error}); send the complete file") \
            from None
    return total


def _refuse_detached_data(path: Path, name: str) -> None:
    """NRRD `data file:` and MetaImage `ElementDataFile` other than LOCAL name another file to read."""
    with open(path, "rb") as f:
        head = f.read(64 << 10)
    if head[:2] == b"\x1f\x8b":
        return  # gzip-compressed NIfTI: no text header
    text = head.split(b"\n\n", 1)[0].decode("latin-1").lower()
    for line in text.splitlines():
        key, _, value = line.partition(":" if head.startswith(b"NRRD") else "=")
        key = key.strip().replace(" ", "")
        if key in ("datafile", "elementdatafile") and value.strip() != "local":
            raise ContainmentError(f"{name} names a separate data file ({line.strip()[:60]!r}); upload a single-file "
                                   "image (.nii.gz, .nrrd with inline data, .mha)")


def clean_stale(studies) -> int:
    """Remove the temporary uploads and `.part` files a killed server left in the studies folder."""
    studies = Path(studies)
    removed = 0
    tmp = studies / TMP_DIR
    if tmp.is_dir():
        for child in tmp.iterdir():
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
            removed += 1
    for root, dirs, files in os.walk(studies):
        dirs[:] = [d for d in dirs if d != TMP_DIR]
        for name in files:
            if name.startswith(".") and name.endswith(PART_SUFFIX):
                os.unlink(os.path.join(root, name))
                removed += 1
    if removed:
        logger.info("removed %d temporary files left by an earlier run in %s", removed, studies)
    return removed


class BodyLimitMiddleware:
    """ASGI middleware: a request body over `limit_bytes()` gets HTTP 413 before it is stored anywhere.

    Checked from Content-Length first; a body sent without one (chunked) is counted as it
    streams, and once over the limit the app sees a disconnect and the client a 413."""

    def __init__(self, app, limit_bytes):
        self.app, self.limit_bytes = app, limit_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_bytes()
        declared = dict(scope.get("headers") or []).get(b"content-length")
        detail = (f"request body over the server's upload limit ({limit >> 20} MiB): send a smaller file or raise "
                  "--conf max_upload_mb")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _send_413(send, detail)
        state = {"seen": 0, "over": False, "started": False}

        async def counted():
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > limit:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message):
            if state["over"]:
                if not state["started"]:
                    state["started"] = True
                    await _send_413(send, detail)
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, counted, guarded)
        if state["over"] and not state["started"]:
            await _send_413(send, detail)


async def _send_413(send, detail: str) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
