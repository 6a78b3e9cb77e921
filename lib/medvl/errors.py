"""Named exceptions for the cases a caller handles.

Every message names the bad value and, where there is one, the fix. The CLI prints
`str(error)` as one line and exits non-zero; the server maps them to HTTP 4xx.
"""


class MedVLError(Exception):
    """Base class of every error the library raises on purpose."""


class ImageReadError(MedVLError):
    """A file or folder could not be read as a 3D image (missing, corrupt, 2D, 4D, ...)."""


class ImageWriteError(MedVLError):
    """A mask or image could not be written (unsupported extension, unwritable folder)."""


class GeometryError(MedVLError):
    """Two geometries disagree, or a geometry is degenerate (zero spacing, singular direction)."""


class PromptError(MedVLError):
    """A point or box prompt is outside the volume or malformed (box not flat on one axis, ...)."""


class EngineError(MedVLError):
    """Unknown engine name, missing or mismatched checkpoint, or an engine that is unavailable here."""


class SessionError(MedVLError):
    """A session call made in the wrong state (no volume set, unknown object id, nothing to undo)."""


class CancelledError(MedVLError):
    """Propagation was cancelled by the caller."""
