"""The synthetic-nodule insertion helper: seeded, the right size, where it was asked to go."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from medvl.bench.synthetic_nodules import insert_nodules
from medvl.io import read_mask, read_volume
from medvl.language.solvers import morph
from medvl.language.solvers.anatomy import anatomy_for, spacing_kji


@pytest.fixture(scope="module")
def lung1(sample_dir):
    volume = read_volume(sample_dir / "lung1_image.nii.gz")
    return volume, read_mask(sample_dir / "lung1_label.nii.gz", like=volume).array > 0


def test_insertion_is_seeded_sized_and_placed(lung1):
    volume, label = lung1
    specs = [(12.0, "free"), (10.0, "vessel"), (16.0, "pleura")]
    new, ins = insert_nodules(volume, specs, seed=3, avoid=label)
    again, ins2 = insert_nodules(volume, specs[:1], seed=3, avoid=label)  # seeded: the same first draw
    assert ins2[0].centre_kji == ins[0].centre_kji and np.array_equal(ins2[0].mask, ins[0].mask)
    assert [(n.diameter_mm, n.location) for n in ins] == specs
    sp = spacing_kji(volume)
    voxel_ml = float(np.prod(sp)) / 1000
    a = anatomy_for(volume)
    for n in ins:
        ball_ml = np.pi / 6 * n.diameter_mm ** 3 / 1000
        assert n.volume_ml == pytest.approx(ball_ml, rel=0.05)  # partial volumes add up to the ball
        ml = n.mask.sum() * voxel_ml  # the >= 50 % mask: 5 mm slices quantise a 10 mm ball coarsely
        assert ml == pytest.approx(ball_ml, rel=0.4), (n.location, ml)
        assert not (n.mask & label).any() and 0 < n.mask.sum()
        assert np.median(new.array[n.mask]) > -100  # solid
        k = np.flatnonzero(n.mask.any(axis=(1, 2)))
        assert k[0] > 0 and k[-1] < volume.array.shape[0] - 1
        box = morph.bbox_slices(n.mask, (2, 6, 6))
        ring = (ndi.distance_transform_edt(~n.mask[box], sampling=sp) <= 2.0) & ~n.mask[box]
        outside_lungs = (ring & ~a.lungs[box]).sum() / ring.sum()
        hu = volume.array[box][ring]
        if n.location == "free":
            assert outside_lungs == 0 and (hu < -400).mean() > 0.95
        if n.location == "pleura":
            assert outside_lungs > 0.05  # it touches the chest wall
        if n.location == "vessel":
            assert (hu > -300).mean() > 0.01  # a vessel touches it
    assert not np.array_equal(new.array, volume.array) and new.geometry is volume.geometry
