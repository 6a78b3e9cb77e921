"""Errors of the language layer; both are `medvl.errors.MedVLError`, so the CLI prints them
as one line and the server maps them to HTTP 4xx like every other library error."""

from medvl.errors import MedVLError


class NotUnderstoodError(MedVLError):
    """Text that no known concept matches; the message lists the nearest known concepts."""


class SolverError(MedVLError):
    """A concept that cannot be solved on this volume (wrong modality, structure not found)."""
