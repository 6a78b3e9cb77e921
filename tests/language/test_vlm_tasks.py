"""The language layer with a VLM configured, through real tiny checkpoints whose answers are forced
(`medvl.bench.vlm_tiny`, reply=...): grounding refusals, the number check on VLM reports and answers
(accepted when every number is a fact, else the deterministic text, recorded), and the CLI entry points
(`segment --text`, `ask`, `annotate` with `--vlm`) on a 2-slice crop of the sample lung2 CT."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

pytest.importorskip("transformers")

from medvl.bench import vlm_tiny  # noqa: E402
from medvl.cli import main  # noqa: E402
from medvl.geometry import Geometry  # noqa: E402
from medvl.io import read_mask, read_volume, write_mask, write_volume  # noqa: E402
from medvl.language import NotFoundError, SolveSettings, answer, build_report, ground_for_volume, solve  # noqa: E402
from medvl.language.vlm.backend import VLMConfig  # noqa: E402
from medvl.volume import Volume  # noqa: E402

WINDOW = (20, 22, 310, 422, 300, 428)  # k0, k1, j0, j1, i0, i1 of lung2: 2 slices through its tumour, 128 x 112


def _crop(volume: Volume, k0, k1, j0, j1, i0, i1) -> Volume:
    g = volume.geometry
    origin = g.index_to_physical((i0, j0, k0))
    geometry = Geometry(origin=tuple(float(v) for v in origin), spacing=g.spacing, direction=g.direction)
    return Volume(volume.array[k0:k1, j0:j1, i0:i1].copy(), geometry, volume.modality, volume.name)


@pytest.fixture(scope="module")
def crop(sample_dir, tmp_path_factory):
    """(volume, bool label, image path, label path) of the lung2 crop."""
    image = read_volume(sample_dir / "lung2_image.nii.gz")
    label = read_mask(sample_dir / "lung2_label.nii.gz").array > 0
    vol = _crop(image, *WINDOW)
    lab = label[WINDOW[0]:WINDOW[1], WINDOW[2]:WINDOW[3], WINDOW[4]:WINDOW[5]]
    folder = tmp_path_factory.mktemp("crop")
    write_volume(folder / "lung2crop.nii.gz", vol)
    write_mask(folder / "lung2crop_label.nii.gz", lab.astype(np.uint8), like=vol)
    return vol, lab, folder / "lung2crop.nii.gz", folder / "lung2crop_label.nii.gz"


def forced(tmp_path, reply: str, family: str = "qwen3_vl") -> VLMConfig:
    return VLMConfig.from_path(vlm_tiny.write_checkpoint(family, tmp_path / f"forced-{family}", reply=reply))


def test_none_from_the_model_is_a_not_found_refusal(crop, tmp_path):
    vol, *_ = crop
    cfg = forced(tmp_path, "none")
    with pytest.raises(NotFoundError, match=r"lung nodule or mass not found by forced-qwen3_vl \(qwen3_vl\) on "
                                            r"slices 0, 1: no box in its answer 'none'"):
        solve(vol, ground_for_volume("nodule", vol), None, SolveSettings(vlm=cfg))
    # the offline grounding's refusals come first, the model is not asked
    with pytest.raises(Exception, match="not understood"):
        ground_for_volume("pneumothorax", vol).require()


def test_vlm_report_number_check_accepts_facts_and_rejects_a_wrong_number(crop, tmp_path):
    vol, lab, *_ = crop
    offline = build_report(vol, {"tumour": lab})
    (o,) = offline.objects
    good = f"The {o.label} measures {o.volume_ml:.1f} mL."
    r = build_report(vol, {"tumour": lab}, settings=SolveSettings(vlm=forced(tmp_path / "a", good)))
    assert r.narrative == good and r.narrator == "vlm" and not r.narrative_check["fallback"]
    assert r.narrative_check["model"] == "forced-qwen3_vl (qwen3_vl)" and r.language["backend"] == "vlm"
    wrong = f"The {o.label} measures {o.volume_ml + 7:.1f} mL."
    r = build_report(vol, {"tumour": lab}, settings=SolveSettings(vlm=forced(tmp_path / "b", wrong, "gemma3")))
    assert r.narrator == "deterministic" and r.narrative == offline.narrative and r.narrative_check["fallback"]
    assert [x["text"] for x in r.narrative_check["rejected"]] == [wrong, wrong]  # asked twice, rejected twice
    assert r.narrative_check["rejected"][0]["unchecked"] == [f"{o.volume_ml + 7:.1f}mL".replace("mL", "")] or \
        r.narrative_check["rejected"][0]["unchecked"][0].startswith(f"{o.volume_ml + 7:.1f}")


def test_vlm_answer_is_number_checked_like_a_narrative(crop, tmp_path):
    vol, lab, *_ = crop
    offline = answer(vol, "How large is the tumour?", {"tumour": lab})
    assert offline.as_dict()["language"]["backend"] == "offline"
    (f,) = offline.facts
    good = f"The {f['label']} measures {f['volume_ml']:.1f} mL."
    a = answer(vol, "How large is the tumour?", {"tumour": lab},
               settings=SolveSettings(vlm=forced(tmp_path / "a", good, "qwen2_5_vl")))
    d = a.as_dict()
    assert d["answer"] == good and d["language"]["model"] == "forced-qwen2_5_vl" and not d["answer_check"]["fallback"]
    assert d["answer_check"]["slices"] and set(d["answer_check"]["slices"]) <= {0, 1}  # slices through the mask
    wrong = f"The {f['label']} measures {f['volume_ml'] * 2:.1f} mL."
    a = answer(vol, "How large is the tumour?", {"tumour": lab},
               settings=SolveSettings(vlm=forced(tmp_path / "b", wrong, "qwen2_5_vl")))
    assert a.text == offline.text and a.check["fallback"] and a.check["rejected"][0]["text"] == wrong
    assert a.as_dict()["language"]["backend"] == "vlm"  # the backend asked; answer_check: its text was not kept


def test_cli_segment_text_with_vlm_box_propagated_by_the_engine(crop, tmp_path, capsys):
    from tests.language.test_vlm import box_reply  # the Qwen2.5-VL reply: absolute pixels of its 112 x 84 input

    vol, lab, image, _ = crop
    ckpt = vlm_tiny.write_checkpoint("qwen2_5_vl", tmp_path / "q25", reply=box_reply("qwen2_5_vl", (112, 84)))
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(image), "--text", "the tumour", "--vlm", str(ckpt), "--out", str(out)]) == 0
    text = json.loads(capsys.readouterr().out)["text"]
    assert text["method"] == "vlm+engine" and text["box_ijk"] == [[16, 28, 0], [96, 84, 0]]
    assert text["language"] == {"backend": "vlm", "family": "qwen2_5_vl", "model": "q25", "path": str(ckpt.resolve()),
                                "device": "cpu"}
    mask = read_mask(out)
    assert mask.geometry.same_as(vol.geometry)
    m = mask.array > 0
    inside = np.zeros_like(m[0])
    inside[28 - 3:84 + 4, 16 - 3:96 + 4] = True
    assert m[0].any() and (m[0] & ~inside).sum() <= 0.02 * m[0].sum()  # the engine's mask stays in the VLM's box
    assert m.any(axis=(1, 2)).sum() >= 2  # propagated beyond the key slice
    assert 2 * (m & lab).sum() / (m.sum() + lab.sum()) >= 0.6


def test_cli_errors_are_one_line(crop, tmp_path, capsys):
    _, _, image, label = crop
    assert main(["ask", str(image), "How large?", "--vlm", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "folder not found" in err and "config.json" in err and "family detected" in err
    assert main(["ask", str(image), "How large?", "--device", "cuda"]) == 2
    assert "--device cuda applies to a --vlm checkpoint" in capsys.readouterr().err
    ckpt = vlm_tiny.write_checkpoint("qwen3_vl", tmp_path / "nonebox", reply="none")
    capsys.readouterr()
    assert main(["segment", str(image), "--text", "nodule", "--vlm", str(ckpt), "--out",
                 str(tmp_path / "m.nii.gz")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "Loading weights" not in line]  # tqdm bars
    assert len(err) == 1 and err[0].startswith("error: lung nodule or mass not found by nonebox (qwen3_vl) on slices")
    assert main(["ask", str(image), "How large is the tumour?", "--mask", str(label), "--vlm", str(ckpt)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer_check"]["rejected"][0]["text"] == "none" and out["answer_check"]["fallback"]
    assert out["language"]["model"] == "nonebox"
    assert "quotes none of the measured numbers" in out["answer_check"]["rejected"][0]["why"][0]["why"]


def test_annotate_loads_the_vlm_once_for_every_volume(crop, tmp_path, caplog):
    _, _, image, _ = crop
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(2):
        (folder / f"case{n}.nii.gz").write_bytes(image.read_bytes())
    ckpt = vlm_tiny.write_checkpoint("gemma3", tmp_path / "annot", reply="none")
    with caplog.at_level(logging.INFO, logger="medvl.language.vlm.backend"):
        code = main(["annotate", str(folder), "--out", str(tmp_path / "out"), "--text", "nodule", "--vlm", str(ckpt),
                     "--quiet", "--refine", "hu"])
    assert code == 0  # refused objects are answers
    loads = [r for r in caplog.records if "loaded on cpu" in r.getMessage() and "annot" in r.getMessage()]
    assert len(loads) == 1
    for n in range(2):
        status = json.loads((tmp_path / "out" / f"case{n}" / "status.json").read_text())
        assert status["status"] == "refused" and status["language"]["model"] == "annot"
        assert "not found by annot (gemma3)" in status["objects"][0]["reason"]
        assert status["settings"]["vlm"]["family"] == "gemma3"
