"""A report finding in the scene (main thread, MRML only): slice views on its axis slice,
its segment selected, its long and short axis as line markups a radiologist can check and
drag. Runs on slicer-core's MRML as in Slicer (no Qt)."""

from __future__ import annotations

import numpy as np

from . import masks
from .geometry import ijk_to_world, volume_ijk_to_world

LINE_NAMES = {"long_axis_ijk": "MedVL long axis", "short_axis_ijk": "MedVL short axis"}
LINE_COLORS = {"long_axis_ijk": (1.0, 0.5, 0.0), "short_axis_ijk": (0.0, 0.8, 1.0)}


def finding_center_ijk(facts: dict) -> list:
    """(i, j, k) to centre on: the long axis' midpoint on its slice, else the middle of the
    object's slice range (i, j from the volume's centre are left to the caller: None)."""
    line = facts.get("long_axis_ijk")
    if line:
        return [float(v) for v in (np.asarray(line[0], float) + np.asarray(line[1], float)) / 2.0]
    return [None, None, float(facts["key_slice_k"])]


def show_finding(facts: dict, volume_node, segmentation_node, segment_name: str = "") -> dict:
    """Jump every slice view of the scene to the finding, select its segment (the Segment
    Editor's node), draw its axes. Returns {"ras", "segment_id", "lines": {name: node}}."""
    scene = volume_node.GetScene()
    to_world = volume_ijk_to_world(volume_node)
    dims = volume_node.GetImageData().GetDimensions()
    center = finding_center_ijk(facts)
    ijk = [(dims[a] - 1) / 2.0 if center[a] is None else center[a] for a in range(3)]
    ras = [float(v) for v in ijk_to_world([ijk], to_world)[0]]
    import slicer

    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *ras)
    segment_id = ""
    for name in (segment_name, mask_name(facts), facts.get("name", "")):
        segment_id = segment_id or _select_segment(scene, segmentation_node, name)
    lines = {}
    for key, name in LINE_NAMES.items():
        if facts.get(key):
            lines[key] = _line(scene, f"{name} ({facts.get('label') or facts.get('name')})",
                               ijk_to_world(facts[key], to_world), LINE_COLORS[key])
    return {"ras": ras, "segment_id": segment_id, "lines": lines}


def mask_name(facts: dict) -> str:
    """The session object a finding was measured on: its `source` says "mask: <name>"."""
    source = str(facts.get("source") or "")
    return source[len("mask: "):] if source.startswith("mask: ") else ""


def finding_object(report: dict, index: int, objects: dict):
    """The session object (`objects`: obj_id -> ObjectState) finding `index` was measured on:
    the one whose name its source names, else the n-th object in id order for the n-th
    finding measured on a mask (the report task gets the objects in id order). None for a
    finding the server found from text."""
    found = (report.get("objects") or [])[index]
    name = mask_name(found)
    if not name:
        return None
    for obj in objects.values():
        if obj.name == name:
            return obj
    nth = sum(1 for o in (report.get("objects") or [])[:index] if mask_name(o))
    ids = sorted(objects)
    return objects[ids[nth]] if nth < len(ids) else None


def _select_segment(scene, segmentation_node, name: str) -> str:
    if segmentation_node is None or not name:
        return ""
    segment_id = segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(name)
    if not segment_id:
        return ""
    editor = scene.GetFirstNodeByClass("vtkMRMLSegmentEditorNode")
    if editor is None:  # made by its class: not every scene registers it for AddNewNodeByClass
        import slicer

        editor = slicer.vtkMRMLSegmentEditorNode()
        editor.SetName("SegmentEditor")
        editor = scene.AddNode(editor)
    editor.SetAndObserveSegmentationNode(segmentation_node)
    editor.SetSelectedSegmentID(segment_id)
    return segment_id


def _line(scene, name: str, points_world, color):
    node = scene.GetFirstNodeByName(name)
    if node is None or not node.IsA("vtkMRMLMarkupsLineNode"):
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", name)
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
        if display is not None:
            display.SetSelectedColor(*color)
    node.RemoveAllControlPoints()
    for p in points_world:
        node.AddControlPointWorld(*[float(v) for v in p])
    return node


def segment_voxels_on_slice(segmentation_node, segment_id: str, volume_node, k: int) -> int:
    """Voxels of a segment on axial slice k (a check that the view's slice shows it)."""
    return int(masks.segment_array(segmentation_node, segment_id, volume_node)[k].sum())
