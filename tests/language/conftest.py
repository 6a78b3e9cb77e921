"""Language-layer fixtures: the sample CTs (session-scoped, so their CTAnatomy is computed
once for every test), their expert labels, and the MiniLM grounder (loaded once)."""

from __future__ import annotations

import pytest

from medvl.io import read_mask, read_volume


def _case(sample_dir, name):
    path = sample_dir / f"{name}_image.nii.gz"
    if not path.is_file():
        pytest.skip(f"sample data missing: {path} (run sample_data/make_sample_data.py)")
    volume = read_volume(path)
    label = read_mask(sample_dir / f"{name}_label.nii.gz", like=volume).array > 0
    return volume, label


@pytest.fixture(scope="session")
def lung1(sample_dir):
    return _case(sample_dir, "lung1")


@pytest.fixture(scope="session")
def lung2(sample_dir):
    return _case(sample_dir, "lung2")


@pytest.fixture(scope="session")
def brain1(sample_dir):
    return _case(sample_dir, "brain1")


@pytest.fixture(scope="session")
def grounder():
    """The MiniLM grounder; a MiniLM that cannot load fails the tests (EngineError), never skips them."""
    from medvl.language.grounding import default_grounder

    g = default_grounder(keywords_only=False)
    assert g.encoder is not None
    return g
