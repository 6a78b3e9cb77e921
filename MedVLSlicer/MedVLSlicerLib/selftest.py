"""The end-to-end checks the module's `MedVLSlicerTest` runs inside Slicer, and pytest runs
on slicer-core: the same code, so the Slicer test is exercised on every `make test`.

Both take nodes of the current `slicer.mrmlScene` and raise AssertionError with the numbers
when a check fails; they return what they measured.
"""

from __future__ import annotations

import time

import numpy as np

from .geometry import ijk_to_world, volume_ijk_to_world
from .logic import InteractiveLogic
from .prompts import point_prompt

_VOXELS = [[0, 0, 0], [30, 22, 8], [15, 11, 4], [3, 20, 7]]  # ITK (i, j, k) of the synthetic grid


def check_click_geometry(scene) -> int:
    """Fiducials at voxel centres of an oblique volume under a transform land exactly.

    Returns the number of points checked.
    """
    import slicer
    import vtk

    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "medvl_selftest_grid")
    slicer.util.updateVolumeFromArray(volume, np.zeros((9, 23, 31), np.int16))
    volume.SetSpacing(0.7, 1.3, 4.0)
    volume.SetOrigin(12.5, -40.0, 7.0)
    a, b = np.radians(27.0), np.radians(-19.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    volume.SetIJKToRASDirections([list(map(float, row)) for row in rz @ rx @ np.diag([1.0, -1.0, 1.0])])
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "medvl_selftest_transform")
    shift = np.eye(4)
    shift[:3, :3] = rx.T @ np.diag([1.1, 0.9, 1.0])
    shift[:3, 3] = (5.0, -7.0, 30.0)
    slicer.util.updateTransformMatrixFromArray(transform, shift)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "medvl_selftest_points")
    markups.SetAndObserveTransformNodeID(transform.GetID())
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    for ijk in _VOXELS:  # placed in the volume's local frame; VTK moves them to the world
        markups.AddControlPoint(*m.MultiplyPoint([float(v) for v in ijk] + [1.0])[:3])
    got = point_prompt(volume, markups, None, obj_id=1).foreground
    assert got == _VOXELS, f"clicks landed on {got}, expected {_VOXELS}"
    for node in (markups, volume, transform):
        scene.RemoveNode(node)
    return len(_VOXELS)


def label_click(truth_kji: np.ndarray) -> list:
    """An ITK (i, j, k) voxel inside the label: on its largest slice along k, the label
    voxel nearest to that slice's label centroid."""
    k = int(np.argmax(truth_kji.reshape(truth_kji.shape[0], -1).sum(axis=1)))
    j, i = np.nonzero(truth_kji[k])
    n = int(np.argmin((i - i.mean()) ** 2 + (j - j.mean()) ** 2))
    return [int(i[n]), int(j[n]), k]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def run_end_to_end(logic: InteractiveLogic, volume_node, truth_kji: np.ndarray, server_url: str) -> dict:
    """Connect, upload, one foreground click inside the label, propagate, compare.

    Returns {"click", "dice", "voxels", "clicked_voxel_in_mask", "seconds", "latencies"}.
    The click is placed as a markups fiducial at the world centre of the chosen voxel, so
    the geometry, the client, the server and the segment writing are all on the path.
    """
    import slicer

    scene = volume_node.GetScene()
    logic.connect(server_url)
    start = time.perf_counter()
    logic.start(volume_node)
    click = label_click(truth_kji)
    fg = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "medvl_selftest_fg")
    fg.AddControlPoint(*ijk_to_world([click], volume_ijk_to_world(volume_node))[0])
    prompts = point_prompt(volume_node, fg, None, obj_id=1)
    assert prompts.foreground == [click], f"click landed on {prompts.foreground}, placed on {click}"
    obj = logic.segment(prompts, propagate=True)
    _, segmentation = logic.nodes()
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, obj.segment_id, volume_node)
    measured = {
        "click": click,
        "dice": round(dice(mask, truth_kji), 4),
        "voxels": int(obj.voxels),
        "clicked_voxel_in_mask": bool(mask[click[2], click[1], click[0]]),
        "seconds": round(time.perf_counter() - start, 2),
        "latencies": logic.state.latencies,
    }
    logic.end()
    return measured
