"""The session API: see `medvl.session.session.VolumeSession` and docs/session_api.md."""

from medvl.session.session import VolumeSession
from medvl.session.state import PromptResult

__all__ = ["VolumeSession", "PromptResult"]
