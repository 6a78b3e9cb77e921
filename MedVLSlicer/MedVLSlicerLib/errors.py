"""Named exceptions of the Slicer side, for the cases a caller (the Widget, a test) handles.

Every message names the bad value and the fix in one line; the Widget shows `str(error)` in
the module's status line instead of a traceback.
"""


class MedVLSlicerError(Exception):
    """Base class of every error this package raises on purpose."""


class ServerUnreachableError(MedVLSlicerError):
    """No HTTP answer at all: wrong URL, server not started, network down, timeout."""


class ServerError(MedVLSlicerError):
    """The server answered with an HTTP error status; `status` and `reason` carry its answer."""

    def __init__(self, status: int, reason: str, url: str = ""):
        self.status = status  # HTTP status code
        self.reason = reason  # the server's one-line `detail`, or the raw body, shortened
        self.url = url  # the request that failed, without the host
        super().__init__(f"server answered {status} to {url}: {reason}")


class SessionExpiredError(ServerError):
    """The server no longer knows our session (expired or evicted); upload again and replay."""


class CancelledError(MedVLSlicerError):
    """The user cancelled a request; its result was discarded."""


class PromptError(MedVLSlicerError):
    """A prompt cannot be sent: no points, a point outside the volume, an empty box, ..."""


class GeometryError(MedVLSlicerError):
    """A matrix or a returned mask does not fit the volume (singular matrix, other size or grid)."""
