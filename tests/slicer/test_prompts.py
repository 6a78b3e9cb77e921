"""Click -> voxel on real MRML nodes (slicer-core): the matrix comes from the volume node and
its parent transforms, the point from a markups fiducial whose world position VTK computes.

The fiducial is placed at the voxel centre in the volume's own (local) RAS and put under the
same transform as the volume, so VTK's transform chain, not our matrix code, decides where
it sits in the world; the Logic must then find exactly that voxel.
"""

from __future__ import annotations

import numpy as np
import pytest

from MedVLSlicerLib.errors import PromptError
from MedVLSlicerLib.geometry import ijk_to_world, volume_ijk_to_world, volume_voxels_from_world
from MedVLSlicerLib.prompts import box_prompt_from_points, box_prompt_from_roi, point_prompt

SHAPE_KJI = (9, 23, 31)  # numpy (k, j, i) of the synthetic volume
VOXELS = np.array([[0, 0, 0], [30, 22, 8], [15, 11, 4], [3, 20, 7], [29, 1, 1]])  # ITK (i, j, k)


def rot(axis, degrees):
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    return np.array({"x": [[1, 0, 0], [0, c, -s], [0, s, c]], "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
                     "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis])


ORIENTATIONS = {
    "lps_axial": np.diag([-1.0, -1.0, 1.0]),
    "flipped": np.diag([1.0, -1.0, -1.0]),
    "permuted": np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
    "oblique": rot("z", 27) @ rot("x", -19) @ rot("y", 8),
}


def make_volume(scene, slicer, directions, spacing=(0.7, 1.3, 4.0), origin=(12.5, -40.0, 7.0)):
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "synthetic")
    slicer.util.updateVolumeFromArray(volume, np.zeros(SHAPE_KJI, np.int16))
    volume.SetSpacing(*spacing)
    volume.SetOrigin(*origin)
    volume.SetIJKToRASDirections([list(map(float, row)) for row in np.asarray(directions)])
    return volume


def local_centres(slicer, volume, voxels):
    """Voxel centres in the volume's local RAS, computed by VTK from the node's matrix."""
    import vtk

    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    return np.array([m.MultiplyPoint([float(v) for v in ijk] + [1.0])[:3] for ijk in voxels])


def linear_transform(scene, slicer, matrix, parent=None):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    slicer.util.updateTransformMatrixFromArray(node, matrix)
    if parent is not None:
        node.SetAndObserveTransformNodeID(parent.GetID())
    return node


def fiducials(scene, points_local, transform=None, name="fg"):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    for p in points_local:
        node.AddControlPoint(*map(float, p))
    if transform is not None:
        node.SetAndObserveTransformNodeID(transform.GetID())
    return node


def transform_chain(scene, slicer):
    """Two nested linear transforms: a rotation+shift under a scale+rotation."""
    outer = np.eye(4)
    outer[:3, :3] = rot("y", 21) @ np.diag([1.2, 0.9, 1.05])
    outer[:3, 3] = (3.0, -4.0, 25.0)
    inner = np.eye(4)
    inner[:3, :3] = rot("x", 40) @ rot("z", -65)
    inner[:3, 3] = (12.0, -30.0, 7.5)
    return linear_transform(scene, slicer, inner, parent=linear_transform(scene, slicer, outer))


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
@pytest.mark.parametrize("transformed", [False, True], ids=["no_parent", "parent_chain"])
def test_fiducial_at_voxel_centre_lands_exactly(mrml_scene, slicer_mod, orientation, transformed):
    slicer = slicer_mod
    volume = make_volume(mrml_scene, slicer, ORIENTATIONS[orientation])
    transform = transform_chain(mrml_scene, slicer) if transformed else None
    if transform is not None:
        volume.SetAndObserveTransformNodeID(transform.GetID())
    fg = fiducials(mrml_scene, local_centres(slicer, volume, VOXELS), transform)
    prompt = point_prompt(volume, fg, None, obj_id=1)
    assert prompt.foreground == VOXELS.tolist()


def test_markups_with_its_own_transform_still_lands(mrml_scene, slicer_mod):
    """Volume and markups under different transforms: only world positions matter."""
    slicer = slicer_mod
    volume = make_volume(mrml_scene, slicer, ORIENTATIONS["oblique"])
    volume.SetAndObserveTransformNodeID(transform_chain(mrml_scene, slicer).GetID())
    world = ijk_to_world(VOXELS, volume_ijk_to_world(volume))
    other = np.eye(4)
    other[:3, 3] = (100.0, 0.0, -50.0)
    t = linear_transform(mrml_scene, slicer, other)
    fg = fiducials(mrml_scene, world - other[:3, 3], t)  # local = world - shift
    np.testing.assert_array_equal(volume_voxels_from_world(volume, slicer.util.arrayFromMarkupsControlPoints(fg, world=True)), VOXELS)
    assert point_prompt(volume, fg, None, 1).foreground == VOXELS.tolist()


def test_nonlinear_parent_transform_lands(mrml_scene, slicer_mod):
    """A thin-plate-spline parent: the point is inverted through VTK's general transform."""
    import vtk

    slicer = slicer_mod
    volume = make_volume(mrml_scene, slicer, ORIENTATIONS["lps_axial"])
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for p, shift in [((0, 0, 0), (1.5, 0, 0)), ((-30, -30, 40), (0, 2.0, 0)), ((-10, -50, 20), (0, 0, 1.0)),
                     ((10, -20, 10), (0.5, 0.5, 0)), ((-20, -10, 30), (0, -1, 0.5))]:
        source.InsertNextPoint(*p)
        target.InsertNextPoint(*(np.add(p, shift)))
    tps = vtk.vtkThinPlateSplineTransform()
    tps.SetSourceLandmarks(source)
    tps.SetTargetLandmarks(target)
    tps.SetBasisToR()
    node = mrml_scene.AddNewNodeByClass("vtkMRMLTransformNode")
    node.SetAndObserveTransformToParent(tps)
    assert not node.IsTransformToWorldLinear()
    volume.SetAndObserveTransformNodeID(node.GetID())
    fg = fiducials(mrml_scene, local_centres(slicer, volume, VOXELS), node)
    assert point_prompt(volume, fg, None, 1).foreground == VOXELS.tolist()


def test_point_outside_volume_is_refused_with_its_voxel(mrml_scene, slicer_mod):
    volume = make_volume(mrml_scene, slicer_mod, ORIENTATIONS["flipped"])
    fg = fiducials(mrml_scene, local_centres(slicer_mod, volume, [[3, 3, 3], [31, 5, 5]]))
    with pytest.raises(PromptError, match=r"point 2 .* voxel \[31, 5, 5\], outside 'synthetic'"):
        point_prompt(volume, fg, None, 1)


def test_background_only_is_refused(mrml_scene, slicer_mod):
    volume = make_volume(mrml_scene, slicer_mod, ORIENTATIONS["flipped"])
    bg = fiducials(mrml_scene, local_centres(slicer_mod, volume, [[3, 3, 3]]), name="bg")
    with pytest.raises(PromptError, match="foreground point"):
        point_prompt(volume, fiducials(mrml_scene, [], name="fg"), bg, 1)


@pytest.mark.parametrize("orientation", ["lps_axial", "permuted", "oblique"])
def test_roi_aligned_with_grid_gives_exact_flat_box(mrml_scene, slicer_mod, orientation):
    """An ROI oriented like the volume, spanning voxel centres (4..20, 6..15) on slice k=3,
    both under the same transform chain (the ROI is drawn in the volume's local frame)."""
    import vtk

    slicer = slicer_mod
    volume = make_volume(mrml_scene, slicer, ORIENTATIONS[orientation])
    chain = transform_chain(mrml_scene, slicer)
    volume.SetAndObserveTransformNodeID(chain.GetID())
    lo, hi = np.array([4, 6, 3]), np.array([20, 15, 3])
    vm = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(vm)
    local = slicer.util.arrayFromVTKMatrix(vm)
    spacing = np.linalg.norm(local[:3, :3], axis=0)
    object_to_node = np.eye(4)
    object_to_node[:3, :3] = local[:3, :3] / spacing  # box axes = the volume's i, j, k
    object_to_node[:3, 3] = ijk_to_world((lo + hi) / 2.0, local)[0]
    roi = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(object_to_node))
    roi.SetSize(*((hi - lo) * spacing + np.array([0, 0, 0.3]) * spacing))  # a thin slab around k=3
    roi.SetAndObserveTransformNodeID(chain.GetID())
    prompt = box_prompt_from_roi(volume, roi, obj_id=2)
    assert prompt.axis == "k"
    assert prompt.boxes == [(lo.tolist(), hi.tolist())]
    assert prompt.params()["boxes"] == [[lo.tolist(), hi.tolist()]]
    assert prompt.stock_roi() == [4, 20, 6, 15, 3, 3]


def test_thick_roi_is_cut_on_the_chosen_axis(mrml_scene, slicer_mod):
    slicer = slicer_mod
    volume = make_volume(mrml_scene, slicer, ORIENTATIONS["lps_axial"], spacing=(1, 1, 1), origin=(0, 0, 0))
    roi = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    centre = ijk_to_world([[10, 10, 4]], volume_ijk_to_world(volume))[0]
    roi.SetXYZ(*centre)
    roi.SetRadiusXYZ(5.0, 4.0, 2.0)  # i 5..15, j 6..14, k 2..6
    prompt = box_prompt_from_roi(volume, roi, obj_id=1, axis="j")
    assert prompt.axis == "j"
    assert prompt.boxes == [([5, 10, 2], [15, 10, 6])]


def test_two_clicks_make_a_box(mrml_scene, slicer_mod):
    volume = make_volume(mrml_scene, slicer_mod, ORIENTATIONS["oblique"])
    clicks = fiducials(mrml_scene, local_centres(slicer_mod, volume, [[20, 4, 6], [5, 18, 6]]), name="corners")
    prompt = box_prompt_from_points(volume, clicks, obj_id=1)
    assert prompt.boxes == [([5, 4, 6], [20, 18, 6])] and prompt.axis == "k"


def test_points_and_box_together_make_one_prompt_set(mrml_scene, slicer_mod):
    """What the Segment button sends: + and - points plus the ROI box of one object."""
    from MedVLSlicerLib.prompts import prompt_set

    volume = make_volume(mrml_scene, slicer_mod, ORIENTATIONS["lps_axial"], spacing=(1, 1, 1), origin=(0, 0, 0))
    fg = fiducials(mrml_scene, local_centres(slicer_mod, volume, [[10, 10, 4]]))
    bg = fiducials(mrml_scene, local_centres(slicer_mod, volume, [[14, 12, 4]]), name="bg")
    roi = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetXYZ(*ijk_to_world([[10, 10, 4]], volume_ijk_to_world(volume))[0])
    roi.SetRadiusXYZ(5.0, 4.0, 0.2)
    prompts = prompt_set(volume, 3, fg, bg, roi, axis="k")
    assert prompts.params() == {"obj_id": 3, "axis": "k", "foreground": [[10, 10, 4]], "background": [[14, 12, 4]],
                                "boxes": [[[5, 6, 4], [15, 14, 4]]]}
    assert prompt_set(volume, 3, None, None, roi).kind == "box"
    with pytest.raises(PromptError, match="foreground point .* or a box"):
        prompt_set(volume, 3, None, bg, None)


def test_show_points_puts_clicks_back_on_their_voxels(mrml_scene, slicer_mod):
    """Undo shows the previous prompt set again: the points must land where they were."""
    from MedVLSlicerLib.prompts import show_points

    volume = make_volume(mrml_scene, slicer_mod, ORIENTATIONS["oblique"])
    volume.SetAndObserveTransformNodeID(transform_chain(mrml_scene, slicer_mod).GetID())
    node = fiducials(mrml_scene, [[0, 0, 0]] * 3)
    show_points(volume, node, VOXELS.tolist())
    assert point_prompt(volume, node, None, 1).foreground == VOXELS.tolist()
    show_points(volume, node, [])
    assert node.GetNumberOfControlPoints() == 0


def test_module_selftest_geometry_runs_on_slicer_core(mrml_scene):
    """The geometry half of the module's Test (MedVLSlicerTest) runs here unchanged."""
    from MedVLSlicerLib import selftest

    assert selftest.check_click_geometry(mrml_scene) == 4
