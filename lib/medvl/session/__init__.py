"""The session API: see `medvl.session.session.VolumeSession` and docs/session_api.md."""

from medvl.session.session import VolumeSession
from medvl.session.state import BoxPrompt, PointPrompt, Prompt, PromptResult

__all__ = ["VolumeSession", "PromptResult", "PointPrompt", "BoxPrompt", "Prompt"]
