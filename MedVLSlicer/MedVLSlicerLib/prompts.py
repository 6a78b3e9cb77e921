"""Markups -> prompts -> request parameters.

A `PromptSet` is one object's interactions so far, already turned into ITK-order (i, j, k)
voxel indices of the volume (see `geometry.py`), so it can be sent, kept for undo, and
resent after a session expiry without touching MRML again. The `*_from_*` functions read markups nodes
(world coordinates, after every parent transform) and must run on the main thread.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import protocol
from .errors import PromptError
from .geometry import box_from_index_corners, volume_size_ijk, volume_voxels_from_world, volume_world_to_ijk

AXES = ("i", "j", "k")  # ITK index axes; a box is flat on one of them


@dataclass
class PromptSet:
    """Every prompt of one object so far, in ITK (i, j, k) voxels of the session's volume.

    The server takes an object's whole prompt set with each request and diffs it against
    what it applied (`medvl.server.protocol`): one more click is an add, one click less an
    undo, anything else a replay on cached embeddings. The server's answer echoes the set it
    holds (`R_PROMPT_SET`): the Logic keeps that one (no history of its own) and resends it
    after a session expiry.
    """

    obj_id: int  # server-side object id (1, 2, ...): one segment per object
    axis: str = "k"  # slicing / propagation axis
    foreground: list = field(default_factory=list)  # [[i, j, k], ...] positive clicks
    background: list = field(default_factory=list)  # [[i, j, k], ...] negative clicks
    boxes: list = field(default_factory=list)  # [([i0, j0, k0], [i1, j1, k1]), ...] inclusive, each flat on one axis
    text: str = ""  # free text (text task only)

    def __post_init__(self):
        if self.axis not in AXES:
            raise PromptError(f"axis {self.axis!r} is not one of {AXES}")
        if int(self.obj_id) < 1:
            raise PromptError(f"object id {self.obj_id} must be >= 1")
        self.foreground = [[int(v) for v in p] for p in self.foreground]
        self.background = [[int(v) for v in p] for p in self.background]
        self.boxes = [([int(v) for v in lo], [int(v) for v in hi]) for lo, hi in self.boxes]

    @classmethod
    def from_reply(cls, obj_id: int, held: dict, sent: "PromptSet") -> "PromptSet":
        """The prompt set the server says it holds for the object (a reply's `prompt_set`);
        a text object keeps the text that made it (`sent`)."""
        if held.get("whole_mask"):
            return sent
        return cls(obj_id=obj_id, axis=held.get("axis") or sent.axis, foreground=held.get("foreground") or [],
                   background=held.get("background") or [], boxes=[tuple(b) for b in held.get("boxes") or []])

    @property
    def kind(self) -> str:
        """"text", "box" (boxes, maybe with points) or "points"."""
        return "text" if self.text else "box" if self.boxes else "points"

    def is_empty(self) -> bool:
        return not (self.text or self.foreground or self.background or self.boxes)

    def describe(self) -> str:
        """A short human name for the object this prompt set starts."""
        if self.text:
            return self.text.strip()[:60]
        if self.boxes:
            lo, _ = self.boxes[0]
            return f"box {self.axis}={lo[AXES.index(self.axis)]}"
        first = (self.foreground or self.background or [["?", "?", "?"]])[0]
        return f"point ({first[0]}, {first[1]}, {first[2]})"

    def params(self) -> dict:
        """The prompt part of `/infer/<task>`'s `params`: stock MONAI Label SAM keys for the
        points, our corner-pair `boxes`, the axis and the object id."""
        p = {protocol.P_OBJ_ID: int(self.obj_id), protocol.P_AXIS: self.axis}
        if self.text:
            p[protocol.P_TEXT] = self.text
            return p
        p[protocol.P_FOREGROUND] = [list(v) for v in self.foreground]
        p[protocol.P_BACKGROUND] = [list(v) for v in self.background]
        p[protocol.P_BOXES] = [[list(lo), list(hi)] for lo, hi in self.boxes]
        return p

    def stock_roi(self) -> list:
        """The first box as the stock client's `roi` [i0, i1, j0, j1, k0, k1] (inclusive)."""
        if not self.boxes:
            raise PromptError("this prompt set has no box")
        lo, hi = self.boxes[0]
        return [lo[0], hi[0], lo[1], hi[1], lo[2], hi[2]]


def _defined_points_world(markups_node) -> np.ndarray:
    """World RAS positions (N, 3) of a markups node's placed control points."""
    import slicer

    out = []
    for n in range(markups_node.GetNumberOfControlPoints()):
        if markups_node.GetNthControlPointPositionStatus(n) != slicer.vtkMRMLMarkupsNode.PositionDefined:
            continue
        p = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPositionWorld(n, p)
        out.append(p)
    return np.asarray(out, dtype=float).reshape(-1, 3)


def _to_world(markups_node, point) -> list:
    out = [0.0, 0.0, 0.0]
    markups_node.TransformPointToWorld([float(v) for v in point], out)
    return out


def points_from_markups(volume_node, markups_node) -> list:
    """The voxels [[i, j, k], ...] under a fiducial node's placed points (none: [])."""
    if markups_node is None:
        return []
    world = _defined_points_world(markups_node)
    if len(world) == 0:
        return []
    return volume_voxels_from_world(volume_node, world).tolist()


def prompt_set(volume_node, obj_id: int, foreground_node=None, background_node=None, roi_node=None,
               axis: str = "k") -> PromptSet:
    """An object's prompt set from the markups that show it: foreground and background
    fiducials, and an ROI box (skipped when None or not placed).

    PromptError when there is neither a foreground point nor a box (background clicks
    alone say nothing about the object).
    """
    fg = points_from_markups(volume_node, foreground_node)
    bg = points_from_markups(volume_node, background_node)
    box = None
    if roi_node is not None and roi_node.GetNumberOfControlPoints() > 0:
        box = box_prompt_from_roi(volume_node, roi_node, obj_id, axis)
    if not fg and box is None:
        raise PromptError("place a foreground point (the + points tool) or a box (the ROI tool) on the object first")
    return PromptSet(obj_id=obj_id, axis=box.axis if box and not fg and not bg else axis, foreground=fg,
                     background=bg, boxes=box.boxes if box else [])


def point_prompt(volume_node, foreground_node, background_node, obj_id: int, axis: str = "k") -> PromptSet:
    """A points-only prompt set from the foreground and background fiducial nodes."""
    fg = points_from_markups(volume_node, foreground_node)
    if not fg:
        raise PromptError("place at least one foreground point (the + points tool) on the object first")
    return PromptSet(obj_id=obj_id, axis=axis, foreground=fg, background=points_from_markups(volume_node, background_node))


def _flatten(lo: np.ndarray, hi: np.ndarray, axis: Optional[str]) -> tuple[list, list, str]:
    """Make a voxel box flat: on the axis where it already is, else on `axis` at its middle."""
    flat = [a for a in range(3) if lo[a] == hi[a]]
    a = flat[-1] if flat else AXES.index(axis or "k")
    mid = int((lo[a] + hi[a] + 1) // 2)
    lo, hi = lo.copy(), hi.copy()
    lo[a] = hi[a] = mid
    if sum(lo[b] == hi[b] for b in range(3)) > 1:
        raise PromptError(f"box {lo.tolist()}..{hi.tolist()} is a line, not a rectangle: widen the ROI")
    return lo.tolist(), hi.tolist(), AXES[a]


def box_prompt_from_roi(volume_node, roi_node, obj_id: int, axis: str = "k") -> PromptSet:
    """A box prompt from a markups ROI: its 8 world corners -> voxel bounds, made flat on the
    axis where the ROI is one slice thick, else on `axis` through the ROI's centre."""
    if roi_node is None or roi_node.GetNumberOfControlPoints() == 0:
        raise PromptError("place a box (the ROI tool) around the object first")
    bounds = [0.0] * 6
    roi_node.GetObjectBounds(bounds)  # box in its own axes, centred at 0
    m = roi_node.GetObjectToNodeMatrix()  # box axes and centre in the node's coordinates
    to_node = np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])
    corners = np.array(list(itertools.product(bounds[0:2], bounds[2:4], bounds[4:6])))
    node_corners = (to_node @ np.c_[corners, np.ones(8)].T).T[:, :3]
    # each corner through the parent transforms exactly (Slicer's own ObjectToWorld matrix
    # re-orthonormalises the axes, which moves the corners under a scaling transform)
    world = np.array([_to_world(roi_node, p) for p in node_corners])
    lo, hi = box_from_index_corners(volume_world_to_ijk(volume_node, world), volume_size_ijk(volume_node))
    lo, hi, flat_axis = _flatten(lo, hi, axis)
    return PromptSet(obj_id=obj_id, axis=flat_axis, boxes=[(lo, hi)])


def box_prompt_from_points(volume_node, markups_node, obj_id: int, axis: str = "k") -> PromptSet:
    """A box prompt from two clicks (opposite corners) on one slice view."""
    corners = points_from_markups(volume_node, markups_node)
    if len(corners) != 2:
        raise PromptError(f"a two-click box needs exactly 2 points, got {len(corners)}")
    c = np.asarray(corners)
    lo, hi, flat_axis = _flatten(c.min(axis=0), c.max(axis=0), axis)
    return PromptSet(obj_id=obj_id, axis=flat_axis, boxes=[(lo, hi)])


def text_prompt(text: str, obj_id: int) -> PromptSet:
    """A free-text prompt ("the tumour in the right lung")."""
    if not text or not text.strip():
        raise PromptError("type what to segment in the text box first")
    return PromptSet(obj_id=obj_id, text=text.strip())


def show_points(volume_node, markups_node, voxels) -> None:
    """Replace a fiducial node's points by the world centres of `voxels` [[i, j, k], ...]
    (undo and object switching show the object's prompt set again)."""
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    markups_node.RemoveAllControlPoints()
    for ijk in voxels:
        local = m.MultiplyPoint([float(v) for v in ijk] + [1.0])[:3]
        world, in_node = [0.0] * 3, [0.0] * 3
        volume_node.TransformPointToWorld(local, world)
        markups_node.TransformPointFromWorld(world, in_node)
        markups_node.AddControlPoint(*in_node)
