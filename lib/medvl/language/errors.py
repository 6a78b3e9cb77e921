"""Errors of the language layer; all are `medvl.errors.MedVLError`, so the CLI prints them
as one line and the server maps them to HTTP 4xx like every other library error.

Three refusals a caller can tell apart:
- `NotUnderstoodError`: the text names nothing in the vocabulary (nearest concepts listed);
- `NotApplicableError` (a NotUnderstoodError): it names a known concept that does not apply
  to this volume ("left thalamus" on a chest CT);
- `NotFoundError` (a SolverError): the concept applies but is absent from this volume.
"""

from medvl.errors import MedVLError


class NotUnderstoodError(MedVLError):
    """Text that no known concept matches; the message lists the nearest known concepts."""


class NotApplicableError(NotUnderstoodError):
    """Text naming a known concept of another modality or body region than this volume's."""


class SolverError(MedVLError):
    """A concept that cannot be solved on this volume (wrong modality, structure not found)."""


class NotFoundError(SolverError):
    """A supported concept that is absent from this volume (no candidate passes its checks)."""
