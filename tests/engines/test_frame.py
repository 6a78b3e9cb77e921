"""Slice <-> model input mapping keeps physical aspect and maps pixel centres exactly."""

import numpy as np
import torch

from medvl.engines.frame import SliceFrame


def test_anisotropic_slice_keeps_its_physical_aspect():
    f = SliceFrame.for_slice(rows=61, cols=512, row_mm=5.0, col_mm=0.627, size=256)
    assert f.out_cols == 256 and f.out_rows == round(256 * 61 * 5.0 / (512 * 0.627))


def test_points_and_boxes_map_pixel_centres():
    f = SliceFrame.for_slice(512, 512, 0.6, 0.6, 256)
    assert np.allclose(f.points_to_model([[0, 0], [511, 511]]), [[-0.25, -0.25], [255.25, 255.25]])
    assert np.allclose(f.box_to_model((0, 0, 511, 511)), [0, 0, 255, 255])


def test_logits_come_back_on_the_slice_grid():
    f = SliceFrame.for_slice(40, 80, 1.0, 1.0, 256)  # 128 x 256 inside the 256 square
    logits = torch.full((1, 1, 256, 256), -10.0)
    logits[..., :64, :128] = 10.0  # top-left quarter of the real content
    out = f.logits_to_slice(logits)
    assert out.shape == (1, 1, 40, 80)
    assert (out[0, 0, :20, :40] > 0).all() and (out[0, 0, 20:, :] < 0).all() and (out[0, 0, :, 40:] < 0).all()
