"""INPUT of `medvl annotate`: folders, DICOM series folders, globs and manifests -> jobs; bad rows named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from medvl.batch.inputs import discover
from medvl.batch.jobs import BatchInputError, parse_objects


def _image(path, shape=(4, 5, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(shape, np.int16)), str(path))
    return path


def _dicom_series(folder, slices=3):
    folder.mkdir(parents=True)
    for k in range(slices):
        img = sitk.GetImageFromArray(np.full((8, 8), k, np.int16))
        img.SetMetaData("0008|0060", "CT")
        img.SetMetaData("0020|000e", "1.2.3.4")
        img.SetMetaData("0020|0032", f"0\\0\\{k}")
        img.SetMetaData("0020|0013", str(k + 1))
        sitk.WriteImage(img, str(folder / f"IM{k}.dcm"))


def test_folder_finds_files_and_dicom_series_recursively_in_order(tmp_path):
    _image(tmp_path / "b.nii.gz")
    _image(tmp_path / "sub" / "a.nrrd")
    _image(tmp_path / "sub" / "c.mha")
    _image(tmp_path / ".hidden" / "x.nii.gz")
    (tmp_path / "notes.txt").write_text("not an image")
    _dicom_series(tmp_path / "patient1" / "series")
    jobs = discover(str(tmp_path))
    assert [j.case_id for j in jobs] == ["b", "series", "a", "c"]
    assert jobs[1].source.endswith("patient1/series")


def test_colliding_names_get_their_folders_in_the_case_id(tmp_path):
    _image(tmp_path / "site1" / "ct.nii.gz")
    _image(tmp_path / "site2" / "ct.nii.gz")
    ids = [j.case_id for j in discover(str(tmp_path))]
    assert ids == ["site1__ct", "site2__ct"]


def test_glob_and_single_dicom_folder(tmp_path):
    _image(tmp_path / "x" / "one_image.nii.gz")
    _image(tmp_path / "x" / "one_label.nii.gz")
    jobs = discover(str(tmp_path / "**" / "*_image.nii.gz"))
    assert [j.case_id for j in jobs] == ["one_image"]
    _dicom_series(tmp_path / "dcm")
    assert [j.case_id for j in discover(str(tmp_path / "dcm"))] == ["dcm"]


def test_csv_manifest_with_per_volume_prompts(tmp_path):
    _image(tmp_path / "imgs" / "a.nii.gz")
    _image(tmp_path / "imgs" / "b.nii.gz")
    (tmp_path / "m.csv").write_text(
        "image,case_id,modality,text,box,points,space\n"
        "imgs/a.nii.gz,caseA,CT,lungs; nodule,,,\n"
        'imgs/b.nii.gz,,,,"1,2,3,4,5,3; 0,0,1,2,2,1","2,3,3,fg; 1,1,3,bg",LPS\n')
    a, b = discover(str(tmp_path / "m.csv"))
    assert (a.case_id, a.modality, [o.text for o in a.objects]) == ("caseA", "CT", ["lungs", "nodule"])
    assert a.source == str(tmp_path / "imgs" / "a.nii.gz")
    assert b.case_id == "b" and [o.name for o in b.objects] == ["box 1", "box 2", "points"]
    assert b.objects[0].box == (1, 2, 3, 4, 5, 3) and b.objects[0].space == "LPS"
    assert b.objects[2].points == ((2, 3, 3, True), (1, 1, 3, False))


def test_json_manifest_with_object_lists(tmp_path):
    _image(tmp_path / "a.nii.gz")
    (tmp_path / "m.json").write_text(json.dumps({"volumes": [
        {"image": "a.nii.gz", "objects": [{"name": "t", "text": "tumour"},
                                          {"name": "m", "box": [1, 1, 2, 3, 3, 2], "space": "ras"}]}]}))
    (job,) = discover(str(tmp_path / "m.json"))
    assert [(o.name, o.text, o.space) for o in job.objects] == [("t", "tumour", "voxel"),
                                                                ("m", None, "RAS")]


@pytest.mark.parametrize("content, message", [
    ("image\n\n", "has no rows"),
    ("case_id\nx\n", "row 1: no image"),
    ("image,box\na.nii.gz,\"1,2,3\"\n", "box '1,2,3' must be 6 numbers, got 3"),
    ("image,points\na.nii.gz,\"1,2,3,maybe\"\n", "must be fg or bg, not 'maybe'"),
    ("image,space\na.nii.gz,ijk\n", "space 'ijk' must be one of voxel, LPS, RAS"),
    ("image,case_id\na.nii.gz,x\nb.nii.gz,x\n", "case_id(s) x appear twice"),
    ("image,case_id\na.nii.gz,../up\n", "case_id '../up' may hold only"),
    ("image,objects\na.nii.gz,[{\"txt\": 1}]\n", "unknown field(s) txt"),
])
def test_bad_manifest_rows_are_named(tmp_path, content, message):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(BatchInputError, match=None) as err:
        discover(str(tmp_path / "m.csv"))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_nothing_found_and_missing_input(tmp_path):
    with pytest.raises(BatchInputError, match="no images found"):
        discover(str(tmp_path))
    with pytest.raises(BatchInputError, match="does not exist"):
        discover(str(tmp_path / "nope"))
    with pytest.raises(BatchInputError, match="no images found"):
        discover(str(tmp_path / "*.nii.gz"))


def test_object_specs_need_one_kind_of_prompt():
    with pytest.raises(BatchInputError, match="both text and a box"):
        parse_objects([{"text": "lungs", "box": [0, 0, 0, 1, 1, 0]}], "x")
    with pytest.raises(BatchInputError, match="needs text, a box or a foreground point"):
        parse_objects([{"points": [[1, 2, 3, "bg"]]}], "x")
    with pytest.raises(BatchInputError, match="'a' given twice"):
        parse_objects([{"name": "a", "text": "lungs"}, {"name": "a", "text": "bone"}], "x")
