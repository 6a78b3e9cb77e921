"""Crop-and-zoom (litemedsam `zoom` + `LiteMedSAMEngine.decode(zoom=True)`): windows and the
geometry round trip from slice voxels to the zoomed model input and back."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.engines.litemedsam.engine import OUTSIDE, LiteMedSAMEngine
from medvl.engines.litemedsam.zoom import Window, ZoomSettings, window_for
from medvl.geometry import Geometry
from medvl.volume import Volume


@pytest.mark.parametrize("pixel_mm", [(1.0, 1.0), (0.7, 0.7), (1.2, 0.8)])
@pytest.mark.parametrize("extent", [(10, 12, 18, 20), (0, 0, 5, 9), (150, 100, 159, 119)])
def test_window_holds_the_prompts_and_lies_inside_the_slice(extent, pixel_mm):
    rows, cols = 120, 160
    w = window_for(extent, rows, cols, pixel_mm)
    assert w is not None
    x0, y0, x1, y1 = extent
    assert 0 <= w.r0 <= y0 and y1 < w.r1 <= rows and 0 <= w.c0 <= x0 and x1 < w.c1 <= cols
    h_mm, w_mm = w.shape[0] * pixel_mm[0], w.shape[1] * pixel_mm[1]
    assert min(h_mm, w_mm) >= ZoomSettings().min_side_mm - max(pixel_mm)  # never smaller than the minimum
    assert abs(h_mm - w_mm) <= max(pixel_mm) + 1e-9  # square in millimetres: the model keeps the aspect


def test_neighbouring_prompts_share_one_window_and_large_ones_get_the_whole_slice():
    assert window_for((40, 40, 50, 52), 200, 200, (1.0, 1.0)) == window_for((41, 40, 51, 51), 200, 200, (1.0, 1.0))
    assert window_for((10, 10, 180, 170), 200, 200, (1.0, 1.0)) is None
    assert window_for((40, 40, 50, 52), 200, 200, (1.0, 1.0), ZoomSettings(factor=0)) is None


def _disc_volume(rows=150, cols=190, centre=(40, 130), radius=7, spacing=(1.2, 0.9, 2.0)):
    """MR-like volume of 3 slices with a bright disc at `centre` (row, col) on the middle one;
    anisotropic pixels so a wrong aspect or offset in the zoomed frame would show."""
    yy, xx = np.mgrid[:rows, :cols]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    rng = np.random.default_rng(0)
    array = np.stack([100 + rng.normal(0, 5, (rows, cols)) + 700 * disc for _ in range(3)]).astype(np.float32)
    return Volume(array, Geometry(spacing=spacing), "MR", name="disc"), disc


def _bound_disc():
    """The engine bound to `_disc_volume`, the disc's mask and a box 2 voxels around it."""
    volume, disc = _disc_volume()
    engine = LiteMedSAMEngine()
    rows, cols = np.nonzero(disc)
    return engine, engine.bind(volume, "k"), disc, (cols.min() - 2, rows.min() - 2, cols.max() + 2, rows.max() + 2)


def test_a_zoomed_box_lands_on_the_same_voxels_and_outside_the_window_is_background():
    engine, state, disc, box = _bound_disc()
    logits, _ = engine.decode(state, 1, boxes=[box], zoom=True)
    window = engine.window(state, [box])
    assert isinstance(window, Window) and window.shape[0] < 150 and window.shape[1] < 190
    mask = logits[0, 0] > 0
    assert 2 * (mask & disc).sum() / (mask.sum() + disc.sum()) > 0.85
    assert np.allclose(np.argwhere(mask).mean(axis=0), np.argwhere(disc).mean(axis=0), atol=1.0)
    outside = np.ones_like(mask)
    outside[window.r0:window.r1, window.c0:window.c1] = False
    assert (logits[0, 0][outside] == OUTSIDE).all()
    passes = state.encoder_passes
    engine.decode(state, 1, boxes=[(box[0] + 1, box[1], box[2] + 1, box[3])], zoom=True)
    assert state.encoder_passes == passes  # a nearby box reuses the encoded window


def test_a_box_chooses_the_objects_view_and_forget_drops_it():
    engine, state, _, box = _bound_disc()
    _, iou = engine.decode_box(state, 1, box, obj_id=3)
    _, whole = engine.decode(state, 1, boxes=[box])
    _, near = engine.decode(state, 1, boxes=[box], zoom=True)
    considered = whole[0, 0] < ZoomSettings().below  # lesions the model rates highly stay whole
    assert engine.zoomed(state, 3) == bool(considered and near[0, 0] > whole[0, 0])
    assert iou[0, 0] == (max(near[0, 0], whole[0, 0]) if considered else whole[0, 0])
    engine.forget(state, 3)
    assert not engine.zoomed(state, 3)
