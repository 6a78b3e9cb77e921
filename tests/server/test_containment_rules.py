"""`medvl.server.containment`: the safe-name rule, upload names and `inside`, over the traversal corpus."""

from __future__ import annotations

import os

import pytest

from medvl.server.containment import ContainmentError, check_name, inside, upload_extension, upload_id
from medvl.server.http import status_for
from tests.server.traversal_corpus import TRICKS


def test_corpus_is_large_and_distinct():
    assert len(set(TRICKS)) == len(TRICKS) >= 50


@pytest.mark.parametrize("value", TRICKS)
def test_every_trick_is_refused_as_an_id_or_tag(value):
    with pytest.raises(ContainmentError) as error:
        check_name(value, "label tag")
    message = str(error.value)
    assert "label tag" in message and "\n" not in message and status_for(error.value) == 400


@pytest.mark.parametrize("value", TRICKS)
def test_every_trick_is_refused_as_an_upload_name(value):
    with pytest.raises(ContainmentError):
        upload_id(value + ".nii.gz")


@pytest.mark.parametrize("value", [None, 3, ["x"], {"a": 1}, b"x", 1.5])
def test_non_strings_are_refused(value):
    with pytest.raises(ContainmentError):
        check_name(value, "image id")
    with pytest.raises(ContainmentError):
        upload_extension(value)


@pytest.mark.parametrize("value", ["lung2_image", "case-001", "A.b_c-9", "final", "original", "x" * 128])
def test_safe_names_pass(value):
    assert check_name(value, "image id") == value


@pytest.mark.parametrize("name, ext, image_id", [("scan.nii.gz", ".nii.gz", "scan"), ("Scan.NII.GZ", ".nii.gz", "Scan"),
                                                 ("a.nii", ".nii", "a"), ("seg.seg.nrrd", ".seg.nrrd", "seg"),
                                                 ("v.mha", ".mha", "v")])
def test_upload_names(name, ext, image_id):
    assert upload_extension(name) == ext and upload_id(name) == image_id


@pytest.mark.parametrize("name", ["x.mhd", "x.nhdr", "x.txt", "x.zip", "x.nii.gz.exe", ".nii.gz", "x", "x.dcm"])
def test_other_extensions_are_refused(name):
    with pytest.raises(ContainmentError, match="extension"):
        upload_extension(name)


def test_inside(tmp_path):
    root = tmp_path / "studies"
    (root / "labels" / "final").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    assert inside(root, root / "labels" / "final" / "a.nii.gz") == (root / "labels/final/a.nii.gz").resolve()
    for trick in TRICKS:
        target = os.path.join(root, "labels", "final", trick)
        resolved = os.path.realpath(target) if "\x00" not in target else "/nul"
        if resolved.startswith(str(root.resolve()) + os.sep) or resolved == str(root.resolve()):
            assert inside(root, target)  # e.g. "x/.." stays inside: allowed by `inside`, refused by check_name
        else:
            with pytest.raises(ContainmentError):
                inside(root, target)


def test_inside_follows_symlinks(tmp_path):
    root = tmp_path / "studies"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ContainmentError, match="outside the studies folder"):
        inside(root, root / "link" / "x.nii.gz")
