"""Mask files and segments on real MRML nodes (slicer-core): decode, place, paste crops."""

from __future__ import annotations

import numpy as np
import pytest

from MedVLSlicerLib import masks
from MedVLSlicerLib.errors import GeometryError, ServerError

SHAPE = (6, 20, 24)  # numpy (k, j, i)


@pytest.fixture
def volume(mrml_scene, slicer_mod):
    """A small oblique volume in the scene."""
    node = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "small")
    slicer_mod.util.updateVolumeFromArray(node, np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE))
    node.SetSpacing(0.8, 1.2, 3.0)
    node.SetOrigin(-20.0, 15.0, 4.0)
    c, s = np.cos(0.3), np.sin(0.3)
    node.SetIJKToRASDirections([[-c, -s, 0.0], [s, -c, 0.0], [0.0, 0.0, 1.0]])
    return node


@pytest.fixture
def segmentation(mrml_scene, volume):
    node = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    return node


def crop_file(tmp_path, slicer, volume, crop_kji, offset_ijk, spacing=None):
    """Bytes of an NRRD holding `crop_kji`, placed at voxel `offset_ijk` of `volume`'s grid."""
    import vtk

    node = slicer.vtkMRMLLabelMapVolumeNode()
    slicer.util.updateVolumeFromArray(node, crop_kji.astype(np.uint8))
    node.CopyOrientation(volume)
    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    node.SetOrigin(*m.MultiplyPoint([float(v) for v in offset_ijk] + [1.0])[:3])
    if spacing is not None:
        node.SetSpacing(*spacing)
    path = masks.write_volume_file(node, str(tmp_path / "crop.nrrd"))
    return open(path, "rb").read()


def test_labels_file_round_trip_keeps_values_and_grid(tmp_path, slicer_mod, volume):
    labels = np.zeros(SHAPE, np.uint8)
    labels[2, 3:9, 4:10] = 1
    labels[4, 10:12, 1:3] = 2
    path = masks.write_labels_file(labels, volume, str(tmp_path / "l.nrrd"))
    array, matrix = masks.read_mask_bytes(open(path, "rb").read(), "l.nrrd")
    np.testing.assert_array_equal(array, labels)
    assert masks.crop_offset(volume, array.shape, matrix) == (0, 0, 0)


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_both_result_formats_decode(tmp_path, slicer_mod, volume, suffix):
    labels = np.zeros(SHAPE, np.uint8)
    labels[1, 2, 3] = 1
    path = masks.write_labels_file(labels, volume, str(tmp_path / ("m" + suffix)))
    array, matrix = masks.read_mask_bytes(open(path, "rb").read(), "server-name" + suffix)
    np.testing.assert_array_equal(array, labels)
    assert masks.crop_offset(volume, array.shape, matrix) == (0, 0, 0)


def test_crop_offset_follows_origin_and_checks_the_servers(tmp_path, slicer_mod, volume):
    data = crop_file(tmp_path, slicer_mod, volume, np.ones((2, 3, 4)), (5, 7, 1))
    array, matrix = masks.read_mask_bytes(data, "crop.nrrd")
    assert masks.crop_offset(volume, array.shape, matrix, [5, 7, 1]) == (5, 7, 1)
    with pytest.raises(GeometryError, match="disagrees"):
        masks.crop_offset(volume, array.shape, matrix, [5, 7, 2])


def test_mask_on_another_grid_is_refused(tmp_path, slicer_mod, volume):
    data = crop_file(tmp_path, slicer_mod, volume, np.ones((2, 3, 4)), (0, 0, 0), spacing=(1.0, 1.2, 3.0))
    array, matrix = masks.read_mask_bytes(data, "crop.nrrd")
    with pytest.raises(GeometryError, match="another image"):
        masks.crop_offset(volume, array.shape, matrix)


def test_crop_sticking_out_is_refused(tmp_path, slicer_mod, volume):
    data = crop_file(tmp_path, slicer_mod, volume, np.ones((2, 3, 4)), (22, 0, 0))
    array, matrix = masks.read_mask_bytes(data, "crop.nrrd")
    with pytest.raises(GeometryError, match="stick out"):
        masks.crop_offset(volume, array.shape, matrix)


def test_garbage_bytes_are_a_server_error(slicer_mod):
    with pytest.raises(ServerError, match="not a readable image"):
        masks.read_mask_bytes(b"this is not an image", "mask.nrrd")


def test_segment_per_object_found_by_tag(segmentation):
    first = masks.ensure_segment(segmentation, "tumour", 1)
    second = masks.ensure_segment(segmentation, "node", 2)
    assert masks.ensure_segment(segmentation, "renamed later", 1) == first
    assert first != second
    assert segmentation.GetSegmentation().GetSegment(first).GetName() == "tumour"


def test_full_mask_replaces_and_crop_pastes(segmentation, volume):
    sid = masks.ensure_segment(segmentation, "obj", 1)
    full = np.zeros(SHAPE, np.uint8)
    full[1:4, 5:10, 5:12] = 1
    assert masks.apply_mask(segmentation, sid, volume, full) == full.sum()
    np.testing.assert_array_equal(masks.segment_array(segmentation, sid, volume), full)
    crop = np.zeros((2, 4, 3), np.uint8)  # (k, j, i) at ITK offset (10, 6, 2): clears part, adds a row
    crop[1, 3, :] = 1
    masks.apply_mask(segmentation, sid, volume, crop, offset_ijk=(10, 6, 2))
    expected = full.copy()
    expected[2:4, 6:10, 10:13] = crop
    np.testing.assert_array_equal(masks.segment_array(segmentation, sid, volume), expected)
    masks.clear_segment(segmentation, sid, volume)
    assert masks.segment_array(segmentation, sid, volume).sum() == 0


def test_object_mask_of_binary_and_label_maps():
    binary = np.array([0, 1, 1, 0], np.uint8)
    labels = np.array([0, 1, 2, 2], np.uint8)
    np.testing.assert_array_equal(masks.object_mask(binary, 7), binary)
    np.testing.assert_array_equal(masks.object_mask(labels, 2), [0, 0, 1, 1])
