"""`medvl` command line: segment, annotate (batch), report, ask, bench, run (demo), serve.

Coordinates are voxel indices in ITK order (i, j, k) of IMAGE as SimpleITK reads it.
Every user error is one line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from medvl.cli_batch import add_annotate_command
from medvl.cli_language import add_language_commands, add_text_option
from medvl.errors import MedVLError
from medvl.server import add_arguments as add_server_arguments
from medvl.server import serve as serve_command
from medvl.bench.interactive import add_arguments as add_interactive_bench_arguments
from medvl.bench.annotate import add_arguments as add_annotate_bench_arguments
from medvl.bench.dicom import add_arguments as add_dicom_bench_arguments
from medvl.bench.language import add_arguments as add_language_bench_arguments
from medvl.server.bench import add_arguments as add_server_bench_arguments
from medvl.server.bench_load import add_arguments as add_load_bench_arguments

log = logging.getLogger(__name__)
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"


class UsageError(MedVLError):
    """Bad command-line syntax (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def _ints(text: str, count: int, what: str) -> tuple[int, ...]:
    parts = text.split(",")
    try:
        values = tuple(int(p) for p in parts[:count])
    except ValueError:
        raise UsageError(f"{what} {text!r} must be {count} integers separated by commas") from None
    if len(values) != count:
        raise UsageError(f"{what} {text!r} must be {count} integers separated by commas")
    return values


def parse_point(text: str) -> tuple[tuple[int, int, int], bool]:
    """'i,j,k' or 'i,j,k,fg|bg' -> ((i, j, k), positive)."""
    parts = text.split(",")
    if len(parts) not in (3, 4):
        raise UsageError(f"--point {text!r} must be i,j,k or i,j,k,fg|bg")
    kind = parts[3].strip().lower() if len(parts) == 4 else "fg"
    if kind not in ("fg", "bg"):
        raise UsageError(f"--point {text!r}: the fourth field must be fg or bg, not {kind!r}")
    return _ints(",".join(parts[:3]), 3, "--point"), kind == "fg"


def parse_box(text: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    values = _ints(text, 6, "--box")
    if len(text.split(",")) != 6:
        raise UsageError(f"--box {text!r} must be i0,j0,k0,i1,j1,k1")
    return values[:3], values[3:]


def summarize(volume, labels, timings: dict, stats: dict) -> dict:
    """JSON summary of a label volume: voxels, mL, slice range per axis, timings."""
    import numpy as np

    fg = labels > 0
    voxel_ml = float(np.prod(volume.geometry.spacing)) / 1000.0
    out = {"voxels": int(fg.sum()), "volume_ml": round(int(fg.sum()) * voxel_ml, 3)}
    ks = np.flatnonzero(fg.any(axis=(1, 2)))
    out["slice_range_k"] = [int(ks[0]), int(ks[-1])] if ks.size else None
    out["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
    out["engine"] = stats
    return out


def _jsonable(info) -> dict:
    return json.loads(json.dumps(info, default=str))


def engine_options(args) -> dict:
    """Engine keyword options from the flags that were given (sam2 checkpoints, ...)."""
    names = {"checkpoint": "checkpoint", "sam2_config": "config", "image_size": "image_size"}
    options = {key: getattr(args, flag) for flag, key in names.items() if getattr(args, flag, None) is not None}
    if getattr(args, "engine", None) == "sam3" and getattr(args, "device", None):
        options["device"] = args.device  # sam3 runs on --device (cpu default, cuda when asked)
    return options


def cmd_segment(args) -> int:
    from medvl.io import check_writable, read_volume, write_mask
    from medvl.session import VolumeSession

    if not args.point and not args.box and not getattr(args, "text", None):
        raise UsageError("segment needs at least one --point, --box or --text")
    points = [parse_point(p) for p in args.point]
    boxes = [parse_box(b) for b in args.box]
    dicom_out = str(args.out).lower().endswith(".dcm")  # a DICOM SEG (the image must be a DICOM series)
    seg_path = args.out if dicom_out else getattr(args, "dicom_seg", None)
    if not dicom_out:
        check_writable(args.out)  # before any model work
    vlm = None
    concept = args.engine == "sam3" and bool(getattr(args, "text", None))  # SAM 3 reads the text itself
    if concept and getattr(args, "vlm", None):
        raise UsageError("--engine sam3 segments --text with its own concept model: drop --vlm (or use another engine)")
    if getattr(args, "text", None) and not concept:
        from medvl.cli_language import vlm_config

        vlm = vlm_config(args)  # checked once, before any model work
    elif getattr(args, "vlm", None):
        raise UsageError("--vlm applies to --text: give the target as text")
    t0 = time.perf_counter()
    volume = read_volume(args.image, getattr(args, "modality", None), getattr(args, "series", None))
    if seg_path:
        from medvl.dicom.export import require_dicom

        require_dicom(volume, seg_path)
    t_read = time.perf_counter()
    session = VolumeSession(args.engine, **engine_options(args))
    session.set_volume(volume)
    t_load = time.perf_counter()
    first = None
    text_info = None
    if getattr(args, "text", None) and not concept:
        from medvl.cli_language import _settings, segment_from_text

        # the text solver gets its own session: its engine runs must not leak into the prompt objects
        settings = _settings(args, vlm)  # refine None: the shared default; vlm: the language backend
        solver_session = VolumeSession(args.engine, **engine_options(args)) if settings.needs_session else None
        mask, text_info = segment_from_text(volume, args.text, solver_session, settings)
        first = time.perf_counter()
    for c0, c1 in boxes:
        session.add_box(c0, c1)
        first = first or time.perf_counter()
    for ijk, positive in points:
        session.add_point(ijk, positive=positive, axis=args.axis)
        first = first or time.perf_counter()
    slices = session.run_propagation()
    concept_names = {}
    if concept:  # every instance of the concept becomes its own object, after the prompted ones
        from medvl.engines.sam3.concept import add_concept

        found = add_concept(session, args.text)
        concept_names = {oid: f"{args.text} {n}" for n, (oid, _) in enumerate(found, 1)}
        text_info = {"concept": args.text, "engine": session.engine.name, "instances": [
            {"obj_id": oid, "score": round(inst.score, 4), "slices": [inst.slices[0], inst.slices[-1]],
             "voxels": int(inst.mask.sum())} for oid, inst in found]}
        first = first or time.perf_counter()
    t_prop = time.perf_counter()
    labels = session.labels()
    if text_info is not None and not concept:  # the text object takes the next label after the prompted objects
        labels[mask & (labels == 0)] = max(session.objects, default=0) + 1
    if not dicom_out:
        write_mask(args.out, labels, like=volume)
    if seg_path:
        from medvl.dicom.export import write_labels_seg
        from medvl.dicom.seg import AlgorithmInfo

        names = {oid: concept_names.get(oid, f"object {oid}") for oid in session.objects}
        if text_info is not None and not concept:
            names[max(session.objects, default=0) + 1] = str(text_info.get("concept") or args.text)
        engine = session.engine
        write_labels_seg(seg_path, labels, volume, names,
                         AlgorithmInfo(engine.name, getattr(engine, "label", engine.name), interactive=not text_info))
    timings = {"read": t_read - t0, "model_load": t_load - t_read, "first_mask": first - t_load,
               "propagation": t_prop - first, "total": time.perf_counter() - t0}
    summary = summarize(volume, labels, timings, session.stats())
    summary.update(image=str(args.image), mask=str(args.out), propagated_slices=slices)
    if seg_path:
        summary["dicom_seg"] = str(seg_path)
    summary["quality"] = {str(oid): session.quality(oid) for oid in session.objects}
    for oid, q in summary["quality"].items():
        for w in q["warnings"]:
            print(f"warning: object {oid}: {w['name']}: {w['message']}", file=sys.stderr)
    if text_info is not None:
        language = vlm.describe() if vlm is not None else {"backend": "sam3", "model": session.engine.label}
        summary["text"] = {"prompt": args.text, "language": language, **_jsonable(text_info)}
    text = json.dumps(summary, indent=2)
    if getattr(args, "summary", None):
        Path(args.summary).write_text(text + "\n")
    print(text)
    return 0


def cmd_run(args) -> int:
    """Demo until the server is the main job: segment the sample lung2 CT from a box."""
    import numpy as np

    from medvl.io import read_mask
    from medvl.slicing import bbox2d

    label = read_mask(SAMPLE_DIR / "lung2_label.nii.gz").array > 0
    k = int(np.argmax(label.sum(axis=(1, 2))))
    x0, y0, x1, y1 = bbox2d(label[k])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ns = argparse.Namespace(image=str(SAMPLE_DIR / "lung2_image.nii.gz"), out=str(out / "lung2_mask.nii.gz"),
                            point=[], box=[f"{x0},{y0},{k},{x1},{y1},{k}"], axis="k", engine="litemedsam",
                            summary=str(out / "lung2_summary.json"))
    return cmd_segment(ns)


def cmd_bench(args) -> int:
    if args.engine == "sam2":
        from medvl.bench.sam2 import run as run_sam2

        run_sam2(args.json, compare_monailabel=args.compare_monailabel)  # prints its JSON
        return 0
    from medvl.bench.core import run_benchmark

    report = run_benchmark(cases=args.case, engine=args.engine)
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


def cmd_bench_interactive(args) -> int:
    from medvl.bench.interactive import run as run_interactive

    args.argv = sys.argv[2:]
    report = run_interactive(args)
    print("\n".join(report["table"]), file=sys.stderr)
    print(json.dumps({k: v for k, v in report.items() if k not in ("rows", "all_rows", "table")}, indent=2))
    return 0


def cmd_bench_language(args) -> int:
    from medvl.bench.language import main as run_language_bench

    return run_language_bench(args)


def cmd_bench_annotate(args) -> int:
    from medvl.bench.annotate import main as run_annotate_bench

    return run_annotate_bench(args)


def cmd_bench_dicom(args) -> int:
    from medvl.bench.dicom import main as run_dicom_bench

    return run_dicom_bench(args)


def cmd_bench_server(args) -> int:
    from medvl.server.bench import run as run_server_bench

    print(json.dumps(run_server_bench(args), indent=2))
    return 0


def cmd_bench_load(args) -> int:
    from medvl.server.bench_load import run as run_load_bench

    print(json.dumps(run_load_bench(args), indent=2))  # run() also writes --json OUT
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medvl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    seg = sub.add_parser("segment", help="point/box prompts -> 3D mask with IMAGE's geometry")
    seg.add_argument("image")
    seg.add_argument("--out", required=True, help="mask file to write (.nii.gz, .nrrd, .mha; .dcm: a DICOM SEG "
                     "referencing IMAGE, which must then be a DICOM series folder)")
    seg.add_argument("--dicom-seg", metavar="FILE", help="also write the mask as a DICOM SEG (IMAGE must be a DICOM "
                     "series folder)")
    seg.add_argument("--series", metavar="UID", help="SeriesInstanceUID to read when the DICOM folder holds several")
    seg.add_argument("--point", action="append", default=[], metavar="i,j,k[,fg|bg]")
    seg.add_argument("--box", action="append", default=[], metavar="i0,j0,k0,i1,j1,k1")
    seg.add_argument("--axis", default="k", choices=["i", "j", "k"], help="propagation axis for points")
    seg.add_argument("--engine", default="litemedsam")
    seg.add_argument("--summary", help="also write the JSON summary to this file")
    seg.add_argument("--checkpoint", help="model checkpoint (sam2: SAM 2.1 or MedSAM2 .pt; sam3: checkpoint folder)")
    seg.add_argument("--sam2-config", help="sam2 config name, e.g. sam2.1_hiera_t (see docs/sam2.md)")
    seg.add_argument("--image-size", type=int, help="sam2 input size: 512 (MedSAM2) or 1024 (SAM 2.1)")
    add_text_option(seg)
    seg.set_defaults(func=cmd_segment)

    run = sub.add_parser("run", help="demo: segment the sample lung2 CT from a box")
    run.add_argument("--out", default="out")
    run.set_defaults(func=cmd_run)

    bench = sub.add_parser("bench", help="Dice, latency and throughput on the sample cases (prints JSON)")
    bench.add_argument("--json", help="also write the JSON here")
    bench.add_argument("--case", action="append", help="case name (default: all in sample_data/cases.json)")
    bench.add_argument("--engine", default="litemedsam",
                       help="litemedsam: sample cases; sam2: random-weight model on a 512x512x64 volume")
    bench.add_argument("--compare-monailabel", action="store_true",
                       help="sam2: run MONAI Label 0.8.5's own SAM 2 path side by side")
    bench.set_defaults(func=cmd_bench)

    interactive = sub.add_parser("bench-interactive", help="the field's interactive protocol (box or click, then "
                                 "5 simulated correction clicks) on the 40-target development benchmark (prints JSON)")
    add_interactive_bench_arguments(interactive)
    interactive.set_defaults(func=cmd_bench_interactive)
    language = sub.add_parser("bench-language", help="text grounding goals: refusals on labelled prompts, nodule "
                              "paraphrases, brain atlas on deformed templates, MR lesion (prints JSON)")
    add_language_bench_arguments(language)
    language.set_defaults(func=cmd_bench_language)
    annotate = sub.add_parser("bench-annotate", help="batch annotation: volumes/hour, peak RSS, Ray overhead and "
                              "resume time on 24 volumes from the sample scans, local vs Ray (prints JSON)")
    add_annotate_bench_arguments(annotate)
    annotate.set_defaults(func=cmd_bench_annotate)
    dicom = sub.add_parser("bench-dicom", help="DICOM in/out on lung2: series round trip, SEG vs NIfTI write time, "
                           "SEG read back by three readers, click -> SEG, SR vs report, broken series (prints JSON)")
    add_dicom_bench_arguments(dicom)
    dicom.set_defaults(func=cmd_bench_dicom)

    serve = sub.add_parser("serve", help="start the MONAI Label server with the medvl app (loopback by default)")
    add_server_arguments(serve)
    serve.set_defaults(func=serve_command)

    server_bench = sub.add_parser("bench-server", help="server overhead per click on lung2 (prints JSON)")
    add_server_bench_arguments(server_bench)
    server_bench.set_defaults(func=cmd_bench_server)

    load_bench = sub.add_parser("bench-load", help="8 clients x 50 mixed requests, kill -9 and restart "
                                                   "of the server: errors, wrong masks, latencies (prints JSON)")
    add_load_bench_arguments(load_bench)
    load_bench.set_defaults(func=cmd_bench_load)
    add_language_commands(sub)
    add_annotate_command(sub)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")
        return args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MedVLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
