"""Checkpoints and configs of the `sam2` engine: availability, loading, and the errors users see.

No real SAM 2 weights ship in any package, so checkpoints here are written by the test
from random-weight models; the loading path (meta device, strict key/shape check,
RoPE tables rebuilt) is the one real checkpoints take.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sam2.sam2_video_predictor", reason="sam2 is not installed (make installs it; docs/sam2.md)")

from medvl.engines.base import SlicePrompt  # noqa: E402
from medvl.engines.sam2 import available, build_sam2_engine, settings_from_conf  # noqa: E402
from medvl.engines.sam2 import model as sam2_model  # noqa: E402
from medvl.engines.sam2.settings import ENV_CHECKPOINT, ENV_CONFIG, Sam2Settings  # noqa: E402
from medvl.errors import EngineError  # noqa: E402


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for name in (ENV_CHECKPOINT, ENV_CONFIG, "MEDVL_SAM2_IMAGE_SIZE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random tiny model saved as SAM 2 saves checkpoints, with its config as a .yaml file."""
    from omegaconf import OmegaConf

    folder = tmp_path_factory.mktemp("sam2ckpt")
    config = folder / "tiny.yaml"
    config.write_text(OmegaConf.to_yaml({"model": {**sam2_model._tiny_dict(), "image_size": 64}}))
    model = sam2_model.build_model(sam2_model.ModelSpec(sam2_model.RANDOM_TINY, None, 64), seed=3)
    ckpt = folder / "tiny.pt"
    torch.save({"model": model.state_dict()}, ckpt)
    return ckpt, config, model


def test_without_a_checkpoint_the_engine_is_unavailable_and_says_how_to_fix_it():
    status = available()
    assert not status and ENV_CHECKPOINT in status.reason and "nothing is downloaded" in status.reason
    with pytest.raises(EngineError, match="--checkpoint"):
        build_sam2_engine()


def test_missing_checkpoint_names_the_path_and_its_config(tmp_path):
    path = tmp_path / "sam2.1_hiera_small.pt"
    with pytest.raises(EngineError, match=r"sam2\.1_hiera_small\.pt \(config sam2\.1_hiera_s\) does not exist"):
        build_sam2_engine(checkpoint=str(path))
    assert not available(Sam2Settings(checkpoint=str(path)))


def test_unknown_file_name_asks_for_the_config(tmp_path):
    path = tmp_path / "my_finetune.pt"
    path.write_bytes(b"")
    with pytest.raises(EngineError, match="cannot tell the config.*--sam2-config"):
        build_sam2_engine(checkpoint=str(path))


def test_config_follows_the_checkpoint_name():
    names = {"sam2_hiera_tiny.pt": "sam2_hiera_t", "sam2.1_hiera_base_plus.pt": "sam2.1_hiera_b+",
             "sam2.1_hiera_large.pt": "sam2.1_hiera_l", "MedSAM2_latest.pt": "medsam2", "MedSAM2_CTLesion.pt": "medsam2"}
    from pathlib import Path

    assert {n: sam2_model.config_for_checkpoint(Path(n)) for n in names} == names
    assert sam2_model.default_image_size("medsam2") == 512
    assert sam2_model.default_image_size("sam2.1_hiera_t") == 1024


def test_unreadable_checkpoint_is_an_engine_error(tmp_path):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    path.write_text("not a torch file")
    with pytest.raises(EngineError, match=f"{path} could not be read"):
        build_sam2_engine(checkpoint=str(path))


def test_mismatched_checkpoint_names_path_config_and_what_would_fit(tiny_checkpoint, tmp_path):
    ckpt, _, _ = tiny_checkpoint
    wrong = tmp_path / "sam2.1_hiera_tiny.pt"
    wrong.write_bytes(ckpt.read_bytes())  # tiny weights under the name of SAM 2.1 tiny
    with pytest.raises(EngineError, match=rf"{wrong} does not match config sam2\.1_hiera_t: .*of another shape"):
        build_sam2_engine(checkpoint=str(wrong))


def test_a_checkpoint_with_its_yaml_loads_exactly(tiny_checkpoint, synthetic_volume, monkeypatch):
    ckpt, config, reference = tiny_checkpoint
    monkeypatch.setenv(ENV_CHECKPOINT, str(ckpt))
    monkeypatch.setenv(ENV_CONFIG, str(config))
    assert available()
    engine = build_sam2_engine(threads=1)
    assert engine.image_size == 64 and str(ckpt) in engine.label
    loaded = engine.model.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in reference.state_dict().items())
    volume = synthetic_volume(shape_kji=(4, 64, 64))
    state = engine.bind(volume, "k")
    prompt = SlicePrompt(points=[(30.0, 30.0)], labels=[1])
    seeds = {1: engine.segment_slice(state, 1, prompt).mask}
    masks = dict(engine.propagate(state, seeds, {1: prompt}))
    assert all(m.shape == (64, 64) for m in masks.values())


def test_image_size_must_be_a_multiple_of_32():
    with pytest.raises(EngineError, match="multiple of 32"):
        build_sam2_engine(random_tiny=True, image_size=100)


def test_server_conf_keys_become_settings():
    s = settings_from_conf({"sam2_checkpoint": "/m/MedSAM2_latest.pt", "sam2_image_size": "512",
                            "sam2_cache_mb": "256", "other": "x"})
    assert (s.checkpoint, s.image_size, s.cache_bytes, s.config) == ("/m/MedSAM2_latest.pt", 512, 256 * 2**20, None)
    with pytest.raises(EngineError, match="sam2_image_size='big' is not an integer"):
        settings_from_conf({"sam2_image_size": "big"})


def test_random_weights_are_named_as_such():
    engine = build_sam2_engine(random_tiny=True, threads=1)
    assert "RANDOM" in engine.label and engine.image_size == 64
    assert all(torch.isfinite(p).all() for p in engine.model.state_dict().values())


def test_training_style_yaml_is_read_like_medsam2s(tmp_path):
    """MedSAM2 ships training configs: the model under trainer.model, sizes interpolated,
    training-only keys and resolvers elsewhere in the file."""
    from omegaconf import OmegaConf

    model = {**sam2_model._model_dict("sam2.1_hiera_t"), "image_size": "${scratch.resolution}",
             "_target_": "training.model.sam2.SAM2Train", "prob_to_use_pt_input_for_train": 0.5}
    path = tmp_path / "sam2.1_hiera_tiny512_FLARE_RECIST.yaml"
    path.write_text(OmegaConf.to_yaml({"scratch": {"resolution": 512},
                                       "trainer": {"max_epochs": "${times:75,1}", "model": model}}))
    assert sam2_model.default_image_size(str(path)) == 512
    built = sam2_model._instantiate_empty(sam2_model._apply_overrides(sam2_model._model_dict(str(path)), 512))
    assert type(built).__name__ == "SAM2VideoPredictor" and built.image_size == 512
