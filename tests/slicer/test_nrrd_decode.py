"""masks.decode_nrrd (numpy + zlib, lets the GUI thread run) reads the server's NRRD masks
exactly as Slicer's storage node does: same voxels, same IJK->RAS on an oblique grid."""

import numpy as np
import pytest

from MedVLSlicerLib import masks

pytest.importorskip("itk", reason="the server's writer (medvl.server.results) needs itk: requirements/server.txt")

def test_fast_nrrd_equals_vtk(tmp_path, mrml_scene):
    from medvl.geometry import Geometry
    from medvl.server.results import write_labels

    rng = np.random.default_rng(0)
    a = (rng.random((7, 9, 11)) > 0.5).astype(np.uint8)
    write_labels(str(tmp_path / "m.nrrd"), a, Geometry((1., 2., 3.), (0.5, 0.6, 2.), (0, 1, 0, -1, 0, 0, 0, 0, 1)))
    data = (tmp_path / "m.nrrd").read_bytes()
    fast = masks.decode_nrrd(data)
    import slicer

    node = slicer.vtkMRMLLabelMapVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(tmp_path / "m.nrrd"))
    assert storage.ReadData(node)
    assert np.array_equal(fast[0], a) and np.array_equal(slicer.util.arrayFromVolume(node), a)
    assert np.allclose(fast[1], masks._matrix(node)), (fast[1], masks._matrix(node))
    assert masks.decode_nrrd(data.replace(b"unsigned char", b"short", 1)) is None  # other types: VTK reads them


def test_paste_slab_equals_whole_mask_write(lung2, mrml_scene):
    """Pasting only the changed box gives the segment the whole-mask write gives."""
    volume, truth = lung2
    seg = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    seg.CreateDefaultDisplayNodes()  # as the Logic makes it
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    seg.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
    a, b = masks.ensure_segment(seg, "a", 1), masks.ensure_segment(seg, "b", 2)
    k = int(np.argmax(truth.sum(axis=(1, 2))))
    start = np.zeros_like(truth)
    start[k] = truth[k]
    for sid in (a, b):
        masks.apply_mask(seg, sid, volume, start)
    masks.apply_mask(seg, a, volume, truth)
    second = start.copy()
    second[k + 1] = truth[k + 1]
    masks.paste_slab(seg, b, volume, *masks.changed_box(start, second), add_only=True)
    assert masks.segment_array(seg, b, volume).any(axis=(1, 2)).sum() == 2
    masks.paste_slab(seg, b, volume, *masks.changed_box(second, truth), add_only=True)
    assert np.array_equal(masks.segment_array(seg, a, volume), masks.segment_array(seg, b, volume))
    assert masks.changed_box(truth, truth) is None
    masks.paste_slab(seg, b, volume, start)  # replacing: back to one slice
    assert np.array_equal(masks.segment_array(seg, b, volume), start)
    with pytest.raises(masks.GeometryError, match="whole grid"):
        masks.paste_slab(seg, b, volume, truth[:3])
