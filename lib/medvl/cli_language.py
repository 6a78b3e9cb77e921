"""CLI of the language layer: `medvl report`, `medvl ask`, and `medvl segment --text`.

`medvl.cli` wires these in: `add_language_commands(subparsers)` adds `report` and `ask`;
`add_text_option(segment_parser)` adds `--text`/`--refine` to `segment`, whose handler
calls `segment_from_text(volume, prompt, session)` when `--text` is given. Everything
here is argument parsing and printing; the work is in `medvl.language`.

    medvl report IMAGE [--mask MASK]... [--text PROMPT]... --out DIR [--narrator smollm2] [--modality CT|MR]
    medvl ask IMAGE "How large is the nodule?" [--mask MASK]... [--modality CT|MR]
    medvl segment IMAGE --text "the tumour in the left lung" --out mask.nii.gz [--modality CT|MR]

Each also takes `--vlm DIR [--device cpu|cuda]`: a vision-language checkpoint that grounds the
text, phrases the report and answers (`medvl.language.vlm`, docs/vlm.md).

`--modality` overrides what the image says (DICOM tag, header) or what is inferred from its
intensities (`medvl.io.read_volume`); text is grounded among the concepts that apply to that
modality and the inferred body region (`medvl.language.grounding.ground_for_volume`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODALITY_HELP = ("CT or MR: overrides the modality read from the image (DICOM tag, header) or inferred from its "
                 "intensities; text prompts are grounded among the concepts of that modality")


def modality_arg(value: str) -> str:
    """argparse type of `--modality`: 'CT' or 'MR' (any case, 'MRI' is MR); a usage error names the value."""
    from medvl.io import parse_modality

    try:
        return parse_modality(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_modality_option(parser) -> None:
    """Add `--modality CT|MR` (default: from the image) and `--series UID` (which series of a DICOM
    folder) to a subcommand that reads a volume."""
    parser.add_argument("--modality", type=modality_arg, default=None, metavar="CT|MR", help=MODALITY_HELP)
    if not any("--series" in a.option_strings for a in parser._actions):
        parser.add_argument("--series", metavar="UID", help="SeriesInstanceUID to read when the DICOM folder holds "
                            "several (the error lists them)")


REFINE_HELP = ("nodule prompts (default: SolveSettings.refine, 'auto', in every entry point): 'hu' keeps the Hounsfield-unit candidate (seconds, no model), 'engine' refines it "
               "by the engine's box propagation, 'auto' keeps the engine's mask where it agrees with the HU mask "
               "(Dice >= 0.8; best on the sample CTs, costs one encoder pass per slice)")


VLM_HELP = ("vision-language checkpoint folder (Qwen2.5-VL, Qwen3-VL or Gemma 3: config.json, tokenizer, "
            "preprocessor_config.json, safetensors weights; or a [SEG]-model: Sa2VA-Qwen2.5-VL, Citrus-V, "
            "docs/segtoken.md): it grounds text, phrases reports and answers; "
            "default: the offline language layer (docs/vlm.md)")


def add_vlm_options(parser) -> None:
    """Add `--vlm DIR` and `--device cpu|cuda` (the language backend: medvl.language.vlm.backend)."""
    parser.add_argument("--vlm", default=None, metavar="DIR", help=VLM_HELP)
    parser.add_argument("--device", default=None, metavar="cpu|cuda",
                        help="where the --vlm model runs (default: cpu)")


def vlm_config(args):
    """The `VLMConfig` of `--vlm`/`--device`, checked once here (folder, family, memory): CheckpointError
    is one line. No --vlm: the offline default."""
    from medvl.language.vlm.backend import VLMConfig

    path, device = getattr(args, "vlm", None), getattr(args, "device", None)
    if device and not path:
        from medvl.cli import UsageError

        raise UsageError(f"--device {device} applies to a --vlm checkpoint: give --vlm DIR too")
    return VLMConfig.from_path(path, device)


def _settings(args, vlm=None):
    """SolveSettings from the options; an option left out (None) keeps SolveSettings' default,
    the one default every entry point shares (segment, report, ask, server, Slicer). `vlm`:
    the checked `vlm_config(args)` (None: offline)."""
    from medvl.language.solvers import SolveSettings

    refine = getattr(args, "refine", None)
    extra = {"vlm": vlm} if vlm is not None else {}
    return SolveSettings(refine=refine, **extra) if refine else SolveSettings(**extra)


def _session(args, settings=None):
    if not (settings or _settings(args)).needs_session:
        return None
    from medvl.session import VolumeSession

    return VolumeSession(getattr(args, "engine", "litemedsam"))


def _masks(paths, volume) -> dict:
    from medvl.io import read_mask

    out = {}
    for p in paths or []:
        m = read_mask(p, like=volume)
        out[m.name or Path(p).name] = m.array
    return out


def segment_from_text(volume, prompt: str, session=None, settings=None):
    """`medvl segment --text`: ground `prompt`, solve it on `volume` -> (bool (k, j, i) mask, info).

    Raises NotUnderstoodError (listing the nearest concepts) or SolverError, both MedVLError.
    """
    from medvl.language.grounding import ground_for_volume
    from medvl.language.solvers import SolveSettings, solve

    result = solve(volume, ground_for_volume(prompt, volume).require(), session, settings or SolveSettings())
    return result.mask, result.info


def add_text_option(segment_parser) -> None:
    """Add `--text PROMPT`, `--refine`, `--modality`, `--vlm` and `--device` to the `segment` subcommand's parser."""
    segment_parser.add_argument("--text", metavar="PROMPT",
                                help='free-text target, e.g. "the tumour in the left lung", "lungs", "bone"')
    segment_parser.add_argument("--refine", default=None, choices=["hu", "engine", "auto"], help=REFINE_HELP)
    add_modality_option(segment_parser)
    add_vlm_options(segment_parser)


def cmd_report(args) -> int:
    from medvl.io import read_volume
    from medvl.language.report import build_report, write_report

    settings = _settings(args, vlm_config(args))
    volume = read_volume(args.image, args.modality, getattr(args, "series", None))
    if getattr(args, "dicom_sr", None):
        from medvl.dicom.export import require_dicom

        require_dicom(volume, args.dicom_sr)  # before any model work
    masks = _masks(args.mask, volume)
    report = build_report(volume, masks, texts=args.text or [], session=_session(args, settings),
                          narrator=args.narrator, settings=settings)
    paths = write_report(report, volume, args.out)
    if getattr(args, "dicom_sr", None):
        from medvl.dicom.export import write_report_dicom
        from medvl.dicom.seg import AlgorithmInfo

        engine = args.engine if settings.refine != "hu" else "hu"
        dicom = write_report_dicom(report, volume, args.dicom_sr, AlgorithmInfo(engine, interactive=False))
        paths.update({"dicom_sr": dicom["sr"], "dicom_seg": dicom["seg"]})
    print(json.dumps({"modality": volume.modality, "modality_source": volume.meta.get("modality_source"),
                      "impression": report.impression, "narrator": report.narrator, "language": report.language,
                      "narrative_check": report.narrative_check, "notes": report.notes,
                      "objects": [o.name for o in report.objects], "files": {k: str(v) for k, v in paths.items()},
                      "seconds": report.seconds}, indent=2))
    return 0


def cmd_ask(args) -> int:
    from medvl.io import read_volume
    from medvl.language.vqa import answer

    settings = _settings(args, vlm_config(args))
    volume = read_volume(args.image, args.modality, getattr(args, "series", None))
    ans = answer(volume, args.question, _masks(args.mask, volume), session=_session(args, settings), settings=settings)
    out = dict(ans.as_dict(), modality=volume.modality, modality_source=volume.meta.get("modality_source"))
    if not args.facts:
        out.pop("facts")
    print(json.dumps(out, indent=2))
    return 0


def add_language_commands(subparsers) -> None:
    """Add the `report` and `ask` subcommands (each sets `func`)."""
    rep = subparsers.add_parser("report", help="structured findings -> report.json, report.md, overview.png")
    rep.add_argument("image")
    rep.add_argument("--mask", action="append", default=[], help="label file to report on (repeatable)")
    rep.add_argument("--text", action="append", default=[], metavar="PROMPT",
                     help='object to find from text, e.g. "nodule" (repeatable; default for a CT without masks: '
                          'lungs and nodule)')
    rep.add_argument("--out", required=True, help="output folder")
    rep.add_argument("--narrator", default=None, choices=["deterministic", "smollm2", "vlm"],
                     help="who phrases the narrative (default: the --vlm model when given, else deterministic); "
                          "every number is checked against the facts either way")
    rep.add_argument("--refine", default=None, choices=["hu", "engine", "auto"], help=REFINE_HELP)
    rep.add_argument("--engine", default="litemedsam")
    rep.add_argument("--dicom-sr", metavar="FILE", help="also write a DICOM Comprehensive 3D SR (TID 1500) of the "
                     "findings, and the DICOM SEG it references as FILE.seg.dcm next to it (IMAGE must be a DICOM "
                     "series folder)")
    add_modality_option(rep)
    add_vlm_options(rep)
    rep.set_defaults(func=cmd_report)

    ask = subparsers.add_parser("ask", help="answer a question about the image from measured facts (JSON)")
    ask.add_argument("image")
    ask.add_argument("question")
    ask.add_argument("--mask", action="append", default=[], help="label file the question is about (repeatable)")
    ask.add_argument("--refine", default=None, choices=["hu", "engine", "auto"], help=REFINE_HELP)
    ask.add_argument("--engine", default="litemedsam")
    ask.add_argument("--facts", action="store_true", help="include the quoted facts in the JSON")
    add_modality_option(ask)
    add_vlm_options(ask)
    ask.set_defaults(func=cmd_ask)
