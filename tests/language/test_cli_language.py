"""`medvl report`, `medvl ask` and `segment --text` through the language CLI builders."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from medvl.cli_language import add_language_commands, add_text_option, segment_from_text
from medvl.language.errors import NotUnderstoodError


def _parser():
    p = argparse.ArgumentParser(prog="medvl")
    sub = p.add_subparsers(dest="command", required=True)
    add_language_commands(sub)
    seg = sub.add_parser("segment")
    add_text_option(seg)
    return p


def test_report_command(sample_dir, tmp_path, capsys):
    args = _parser().parse_args(["report", str(sample_dir / "lung1_image.nii.gz"), "--text", "nodule", "--refine", "hu",
                                 "--mask", str(sample_dir / "lung1_label.nii.gz"), "--out", str(tmp_path)])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["objects"] == ["lung1_label", "nodule"]
    assert out["narrative_check"]["unchecked"] == []
    for name in ("report.json", "report.md", "overview.png"):
        assert (tmp_path / name).stat().st_size > 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["objects"][0]["voxels"] == 837 and data["objects"][0]["side"] == "right"


def test_ask_command(sample_dir, capsys):
    args = _parser().parse_args(["ask", str(sample_dir / "lung1_image.nii.gz"), "Which side is it on?",
                                 "--mask", str(sample_dir / "lung1_label.nii.gz")])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answerable"] and out["intent"] == "side" and "right side" in out["answer"]
    assert "facts" not in out


def test_segment_text_option_and_function(lung1):
    args = _parser().parse_args(["segment", "--text", "the nodule", "--refine", "hu"])
    assert args.text == "the nodule" and args.refine == "hu"
    assert _parser().parse_args(["segment"]).refine is None  # None -> SolveSettings' default
    volume, label = lung1
    mask, info = segment_from_text(volume, "nodule in the right lung")
    assert mask.shape == volume.array.shape and mask.dtype == bool
    assert info["concept"] == "nodule" and info["method"] == "hu"  # no session given: the HU mask
    assert 2 * (mask & label).sum() / (mask.sum() + label.sum()) > 0.6
    with pytest.raises(NotUnderstoodError, match="nearest known concepts"):
        segment_from_text(volume, "segment the spleen")


def test_modality_override_reaches_the_grounding(sample_dir, tmp_path, capsys):
    """`--modality MR` on a CT: a chest-CT concept is refused as not applicable (exit 1, one line)."""
    from medvl.cli import main

    image = str(sample_dir / "lung1_image.nii.gz")
    rc = main(["segment", image, "--text", "nodule", "--modality", "MR", "--refine", "hu",
               "--out", str(tmp_path / "m.nii.gz")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("error: not applicable") and "this volume is MR" in err, err
    assert "\n" not in err and not (tmp_path / "m.nii.gz").exists()


def test_a_bad_modality_is_a_usage_error_naming_it(sample_dir, capsys):
    from medvl.cli import main

    for command in (["ask", str(sample_dir / "lung1_image.nii.gz"), "How big is it?"],
                    ["report", str(sample_dir / "lung1_image.nii.gz"), "--out", "x"],
                    ["segment", str(sample_dir / "lung1_image.nii.gz"), "--text", "nodule", "--out", "x.nii.gz"]):
        assert main(command + ["--modality", "XR"]) == 2
        assert "modality 'XR' is not one of CT, MR" in capsys.readouterr().err


def test_report_records_the_user_modality(sample_dir, tmp_path, capsys):
    args = _parser().parse_args(["report", str(sample_dir / "brain1_image.nii.gz"), "--mask",
                                 str(sample_dir / "brain1_label.nii.gz"), "--out", str(tmp_path), "--modality", "mri"])
    assert args.modality == "MR" and args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["modality"], out["modality_source"]) == ("MR", "user")


def test_one_refine_default_everywhere(sample_dir):
    """segment, report, ask and the server resolve an unset refine to SolveSettings' default."""
    from medvl.cli_language import _settings
    from medvl.language.solvers import SolveSettings
    from medvl.server.settings import ServerSettings

    img = str(sample_dir / "lung1_image.nii.gz")
    p = _parser()
    resolved = {_settings(p.parse_args(argv)) for argv in (
        ["segment", "--text", "nodule"], ["report", img, "--out", "x"], ["ask", img, "How large is the nodule?"])}
    assert resolved == {SolveSettings()}
    assert ServerSettings().text_refine == SolveSettings().refine


def test_same_numbers_from_segment_report_and_ask(sample_dir, lung1, tmp_path, capsys):
    """One nodule, one set of options: the same voxels and volume from every CLI entry point."""
    from medvl.cli_language import _settings

    volume, _ = lung1
    img = str(sample_dir / "lung1_image.nii.gz")
    p = _parser()
    seg_args = p.parse_args(["segment", "--text", "the largest nodule", "--refine", "hu"])
    mask, _ = segment_from_text(volume, seg_args.text, None, _settings(seg_args))
    args = p.parse_args(["report", img, "--text", "the largest nodule", "--refine", "hu", "--out", str(tmp_path)])
    assert args.func(args) == 0
    capsys.readouterr()
    rep = json.loads((tmp_path / "report.json").read_text())["objects"][0]
    args = p.parse_args(["ask", img, "What is the volume of the largest nodule?", "--refine", "hu", "--facts"])
    assert args.func(args) == 0
    ask = json.loads(capsys.readouterr().out)["facts"][0]
    assert rep["voxels"] == ask["voxels"] == int(mask.sum())
    assert rep["volume_ml"] == ask["volume_ml"] and rep["long_axis_mm"] == ask["long_axis_mm"]
