"""medvl.server.protocol: both request forms parse to one typed request; bad values are named."""

import pytest

from medvl.errors import PromptError
from medvl.server.protocol import (BadRequestError, BoxPrompt, PointPrompt, check_in_volume, parse_request, roi_boxes,
                                   session_key)


def test_stock_slicer_params_parse_unchanged():
    r = parse_request({"foreground": [[10, 20, 3], [11, 20, 3]], "background": [[1, 2, 3]], "roi": [],
                       "label": "spleen", "reset_state": "false", "client_id": "user-xyz",
                       "result_extension": ".nrrd", "result_dtype": "uint8", "largest_cc": False})
    assert r.points == (PointPrompt((10, 20, 3), True), PointPrompt((11, 20, 3), True), PointPrompt((1, 2, 3), False))
    assert (r.label, r.reset, r.client_id, r.roi, r.ignored) == ("spleen", False, "user-xyz", None, ())


def test_rich_form_boxes_axis_obj_id_undo():
    r = parse_request({"boxes": [[[5, 9, 4], [1, 2, 4]]], "axis": "k", "obj_id": 3, "undo": 2, "crop": "true",
                       "medvl_session": "abc", "output_labels": "all", "result_extension": "nii.gz"})
    assert r.boxes == (BoxPrompt((1, 2, 4), (5, 9, 4)),) and r.boxes[0].axis == "k"
    assert (r.obj_id, r.undo, r.crop, r.expect_session, r.output_labels, r.result_extension) == (
        3, 2, True, "abc", "all", ".nii.gz")


def test_roi_bounds_are_sorted_and_unknown_keys_echoed():
    r = parse_request({"roi": [30, 10, 5, 40, 7, 2], "whatever": 1})
    assert r.roi == (10, 30, 5, 40, 2, 7) and r.ignored == ("whatever",)


@pytest.mark.parametrize("params, error, words", [
    ({"foreground": [[1, 2]]}, PromptError, "foreground[0]"),
    ({"foreground": "x"}, PromptError, "must be a list"),
    ({"background": [[1, 2, "a"]]}, PromptError, "finite numbers"),
    ({"roi": [1, 2, 3]}, PromptError, "[i0, i1, j0, j1, k0, k1]"),
    ({"boxes": [[[0, 0, 1], [5, 5, 2]]]}, PromptError, "flat on exactly one axis"),
    ({"axis": "z"}, BadRequestError, "axis 'z'"),
    ({"reset_state": "perhaps"}, BadRequestError, "reset_state"),
    ({"obj_id": 0}, BadRequestError, "obj_id 0"),
    ({"undo": 1.5}, BadRequestError, "undo"),
    ({"undo": float("inf")}, BadRequestError, "undo must be an integer, got inf"),  # json reads Infinity
    ({"obj_id": float("-inf")}, BadRequestError, "obj_id must be an integer, got -inf"),
    ({"result_extension": ".png"}, BadRequestError, ".png"),
    ({"label": 5}, BadRequestError, "label"),
    ([1, 2], BadRequestError, "JSON object"),
])
def test_malformed_values_are_named(params, error, words):
    with pytest.raises(error, match=None) as caught:
        parse_request(params)
    assert words in str(caught.value)


def test_points_outside_volume_are_refused_roi_is_clipped():
    size = (50, 40, 10)
    with pytest.raises(PromptError, match=r"\[50, 1, 1\] is outside the volume of 50x40x10"):
        check_in_volume(parse_request({"foreground": [[50, 1, 1]]}), size)
    assert check_in_volume(parse_request({"roi": [-2, 10, 5, 45, 3, 3]}), size) == (0, 10, 5, 39, 3, 3)
    with pytest.raises(PromptError, match="outside the volume"):
        check_in_volume(parse_request({"roi": [60, 70, 5, 10, 3, 3]}), size)


def test_roi_boxes_flat_thick_and_empty():
    boxes, clip = roi_boxes((0, 10, 5, 20, 3, 3), "k", "center")
    assert boxes == [BoxPrompt((0, 5, 3), (10, 20, 3))] and clip is None
    boxes, clip = roi_boxes((0, 10, 5, 20, 2, 6), "k", "center")
    assert boxes == [BoxPrompt((0, 5, 4), (10, 20, 4))] and clip == (0, 10, 5, 20, 2, 6)
    boxes, _ = roi_boxes((0, 10, 5, 20, 2, 6), "k", "every_slice")
    assert [b.lo[2] for b in boxes] == [2, 3, 4, 5, 6]
    with pytest.raises(PromptError, match="empty"):
        roi_boxes((0, 0, 0, 0, 0, 0), "k", "center")
    with pytest.raises(PromptError, match="empty"):
        roi_boxes((4, 4, 0, 9, 2, 2), "k", "center")


def test_session_keys_separate_clients_and_monai_sessions():
    assert session_key("lung2", "alice") != session_key("lung2", "bob")
    assert session_key("lung2", "") == "lung2@anonymous"
    assert session_key("lung2", "alice", "s-1") == "mls:s-1"
