"""LiteMedSAM: our module definition loads the bundled checkpoint strictly and fuses exactly."""

from __future__ import annotations

import pytest
import torch

from medvl.engines.litemedsam.model import LiteMedSAM, bundled_checkpoint_path, load_litemedsam, load_state_dict
from medvl.errors import EngineError


def test_every_checkpoint_key_and_shape_matches():
    state = load_state_dict(bundled_checkpoint_path())
    model = LiteMedSAM()
    ours = model.state_dict()
    assert set(state) == set(ours)
    assert all(state[k].shape == ours[k].shape for k in ours)
    n_params = sum(v.numel() for k, v in state.items() if "running_" not in k and "num_batches" not in k)
    assert 9.5e6 < n_params < 10.1e6  # LiteMedSAM: 9.79 M parameters


def test_fused_encoder_equals_the_unfused_one():
    plain = load_litemedsam(fuse=False)
    fused = load_litemedsam(fuse=True)
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = plain.image_encoder(x), fused.image_encoder(x)
    assert a.shape == (1, 256, 64, 64)
    assert torch.allclose(a, b, atol=1e-4)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(EngineError, match="nope.pth"):
        load_litemedsam(tmp_path / "nope.pth")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EngineError, match="bad.pth"):
        load_litemedsam(bad)


def test_wrong_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, path)
    with pytest.raises(EngineError, match="not a LiteMedSAM checkpoint"):
        load_litemedsam(path)
