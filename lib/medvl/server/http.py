"""HTTP status codes for medvl errors, and the one-line `detail` clients see.

Used by the MONAI Label app (raising FastAPI's HTTPException works with the stock
`monailabel start_server` launcher too) and by `medvl.server.asgi`'s exception handlers.
"""

from __future__ import annotations

from contextlib import contextmanager

from medvl.errors import (CancelledError, EngineError, GeometryError, ImageReadError, MedVLError, PromptError,
                          SessionError)
from medvl.server.jobs import JobConflictError, JobError, WorkLimitError
from medvl.server.pacs import PacsUnavailableError
from medvl.server.protocol import BadRequestError
from medvl.server.sessions import SessionGoneError
from medvl.server.settings import ConfigError
from medvl.server.uploads import UploadTooLargeError

# First match wins: subclasses before their bases.
_STATUS: tuple[tuple[type, int], ...] = (
    (SessionGoneError, 410),  # evicted or expired: start a new session
    (UploadTooLargeError, 413),  # over max_upload_mb / max_voxels
    (PromptError, 400),
    (BadRequestError, 400),
    (ImageReadError, 400),  # non-image or corrupt upload / file
    (GeometryError, 400),  # label does not match its image
    (WorkLimitError, 422),  # stopped by max_propagation_s: what was done is kept
    (CancelledError, 409),  # cancelled by the client: what was done is kept
    (JobConflictError, 409),
    (JobError, 400),
    (SessionError, 409),  # e.g. undo with nothing to undo
    (EngineError, 503),  # engine unavailable here (missing weights, ...)
    (PacsUnavailableError, 502),  # the PACS datastore did not answer
    (ConfigError, 500),
)


def status_for(error: BaseException) -> int:
    return next((code for kind, code in _STATUS if isinstance(error, kind)), 500 if not isinstance(error, MedVLError)
                else 400)


def json_object(text: str | None, field: str, example: str = "{}") -> dict:
    """A form field's JSON object (empty -> {}); else FastAPI's HTTPException 400 naming the field."""
    import json

    from fastapi import HTTPException

    try:
        value = json.loads(text) if text else {}
    except ValueError as error:
        raise HTTPException(400, one_line(f"{field} is not valid JSON ({error}); send a JSON object such as "
                                          f"{example}")) from None
    if not isinstance(value, dict):
        raise HTTPException(400, f"{field} must be a JSON object, got {type(value).__name__}: send e.g. {example}")
    return value


def one_line(text: object) -> str:
    """`text` on one line (clients show `detail` in a status bar or a single log line)."""
    return " ".join(str(text).split())


@contextmanager
def as_http(upload: str | None = None):
    """Re-raise medvl errors inside the block as FastAPI HTTPExceptions with their 4xx code.

    `upload`: the server's temporary path of an uploaded file, named "the uploaded file" in
    messages (the client never saw that path).
    """
    try:
        yield
    except MedVLError as error:
        detail = one_line(error)
        if upload:
            detail = detail.replace(str(upload), "the uploaded file")
        from fastapi import HTTPException

        raise HTTPException(status_code=status_for(error), detail=detail) from None
