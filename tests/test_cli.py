"""`medvl segment` error cases: one line naming the bad value, non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "medvl.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def small_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "small.nii.gz"
    img = sitk.GetImageFromArray(np.full((6, 16, 16), -800, dtype=np.int16))
    sitk.WriteImage(img, str(path))
    return path


def assert_one_line_error(code, stderr, *needles):
    assert code != 0
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {stderr!r}"
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def test_missing_file(tmp_path):
    code, _, err = run_cli("segment", tmp_path / "nope.nii.gz", "--out", tmp_path / "m.nii.gz", "--point", "1,1,1")
    assert_one_line_error(code, err, "nope.nii.gz")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip" * 10)
    code, _, err = run_cli("segment", bad, "--out", tmp_path / "m.nii.gz", "--point", "1,1,1")
    assert_one_line_error(code, err, "bad.nii.gz")


def test_2d_image(tmp_path):
    path = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.int16)), str(path))
    code, _, err = run_cli("segment", path, "--out", tmp_path / "m.nii.gz", "--point", "1,1,0")
    assert_one_line_error(code, err, "flat.nii.gz", "2D")


def test_4d_image(tmp_path):
    path = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 8, 8), np.int16), isVector=False), str(path))
    code, _, err = run_cli("segment", path, "--out", tmp_path / "m.nii.gz", "--point", "1,1,0")
    assert_one_line_error(code, err, "four.nii.gz", "4D")


def test_point_outside(small_image, tmp_path):
    code, _, err = run_cli("segment", small_image, "--out", tmp_path / "m.nii.gz", "--point", "16,3,3")
    assert_one_line_error(code, err, "(16, 3, 3)", "outside")


def test_box_not_flat(small_image, tmp_path):
    code, _, err = run_cli("segment", small_image, "--out", tmp_path / "m.nii.gz", "--box", "1,1,1,5,5,4")
    assert_one_line_error(code, err, "flat on exactly one axis")


def test_box_outside(small_image, tmp_path):
    code, _, err = run_cli("segment", small_image, "--out", tmp_path / "m.nii.gz", "--box", "1,1,2,20,5,2")
    assert_one_line_error(code, err, "(20, 5, 2)", "outside")


def test_unknown_engine(small_image, tmp_path):
    code, _, err = run_cli("segment", small_image, "--out", tmp_path / "m.nii.gz", "--point", "1,1,1",
                           "--engine", "magic")
    assert_one_line_error(code, err, "'magic'")


@pytest.mark.parametrize("point, needle", [("1,2", "'1,2'"), ("a,b,c", "'a,b,c'"), ("1,2,3,maybe", "'maybe'")])
def test_malformed_point(small_image, tmp_path, point, needle):
    code, _, err = run_cli("segment", small_image, "--out", tmp_path / "m.nii.gz", "--point", point)
    assert_one_line_error(code, err, needle)
    assert code == 2


def test_no_prompt(small_image, tmp_path):
    code, _, err = run_cli("segment", small_image, "--out", tmp_path / "m.nii.gz")
    assert_one_line_error(code, err, "--point, --box or --text")


def test_unknown_axis(small_image, tmp_path):
    code, _, err = run_cli("segment", small_image, "--out", tmp_path / "m.nii.gz", "--point", "1,1,1", "--axis", "z")
    assert_one_line_error(code, err, "'z'")


def test_unwritable_output_is_refused_before_any_work(small_image, tmp_path):
    code, _, err = run_cli("segment", small_image, "--out", tmp_path / "mask.png", "--point", "1,1,1")
    assert_one_line_error(code, err, "mask.png", "cannot write")


def test_sam2_without_the_checkpoint_file(small_image, tmp_path):
    missing = tmp_path / "MedSAM2_latest.pt"
    code, _, err = run_cli("segment", small_image, "--out", tmp_path / "m.nii.gz", "--point", "8,8,3",
                           "--engine", "sam2", "--checkpoint", missing)
    assert_one_line_error(code, err, str(missing), "does not exist")


def test_sam2_from_a_checkpoint_path_keeps_the_image_geometry(tmp_path):
    """A checkpoint whose name implies no config, with --sam2-config and --image-size (the
    tiny RANDOM-weight test model written here: no real SAM 2 checkpoint exists on this machine)."""
    pytest.importorskip("sam2.sam2_video_predictor", reason="sam2 is not installed (make installs it)")
    from medvl.engines.sam2.model import RANDOM_TINY, write_config_yaml, write_random_checkpoint

    checkpoint = write_random_checkpoint(tmp_path / "model.pt", RANDOM_TINY, 64)
    config = write_config_yaml(tmp_path / "model.yaml", RANDOM_TINY, 64)
    image = sitk.GetImageFromArray(np.full((6, 16, 20), -800, dtype=np.int16))
    image.SetSpacing((0.7, 0.9, 3.0))
    image.SetOrigin((5.0, -3.0, 11.0))
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(tmp_path / "scan.nii.gz"))
    code, _, err = run_cli("segment", tmp_path / "scan.nii.gz", "--out", tmp_path / "mask.nii.gz",
                           "--point", "10,8,3", "--engine", "sam2", "--checkpoint", checkpoint,
                           "--sam2-config", config, "--image-size", "64")
    assert code == 0, err
    mask = sitk.ReadImage(str(tmp_path / "mask.nii.gz"))
    assert mask.GetSize() == image.GetSize()
    assert np.allclose(mask.GetSpacing(), image.GetSpacing()) and np.allclose(mask.GetOrigin(), image.GetOrigin())
    assert np.allclose(mask.GetDirection(), image.GetDirection())
