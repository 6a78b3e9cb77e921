"""Encoded slices kept on disk between benchmark runs (`medvl bench-interactive --embedding-store DIR`).

The development benchmark encodes the same images again on every run (about 0.4 s a
slice on this 2-core machine); with a store, a rerun that changes only tracking, clicks
or the stop rule pays for the decoder alone. Entries are the engine's own cache entries
(`LiteMedSAMState.cache`: a slice index, or (index, zoom window)), one .npy file each,
under a folder per image, form, axis and intensity mapping, so a changed mapping never
reads stale embeddings. Benchmarks only: a user session keeps its embeddings in memory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from medvl.engines.cache import ByteLRU


class DiskBackedLRU(ByteLRU):
    """A `ByteLRU` that writes every new entry to `folder` and reads misses back from it."""

    def __init__(self, folder: Path, max_bytes: int):
        super().__init__(max_bytes)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _file(self, key) -> Path:
        if isinstance(key, tuple):  # (index, zoom.Window)
            index, w = key
            return self.folder / f"{index}_{w.r0}_{w.c0}_{w.r1}_{w.c1}.npy"
        return self.folder / f"{key}.npy"

    def get(self, key):
        value = super().get(key)
        if value is None:
            path = self._file(key)
            if path.exists():
                value = torch.from_numpy(np.load(path))
                super().put(key, value)
        return value

    def put(self, key, value) -> None:
        path = self._file(key)
        if not path.exists():
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, value.numpy())
            tmp.replace(path)
        super().put(key, value)


def attach(session, root: Path, image_key: str, axis: str = "k") -> None:
    """Back the session's engine cache along `axis` with `root` (LiteMedSAM states only)."""
    state = session.engine_state(axis)
    if not hasattr(state, "bounds") or isinstance(state.cache, DiskBackedLRU):
        return
    mapping = hashlib.sha1(repr((state.bounds, state.frame)).encode()).hexdigest()[:10]
    safe = image_key.replace(":", "_").replace("/", "_").replace("@", "_")
    state.cache = DiskBackedLRU(Path(root) / safe / axis / mapping, state.cache.max_bytes)
