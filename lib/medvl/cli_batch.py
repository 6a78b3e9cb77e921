"""`medvl annotate`: batch annotation of a folder, a glob or a manifest (see `medvl.batch`).

    medvl annotate scans/ --out results/ --text "lungs" --text "nodule" --report
    medvl annotate manifest.csv --out results/ --executor ray --ray-address auto

Exit code 0 when every volume is ok or refused (a refusal is an answer), 3 when some failed
(each failure's reason is in its status.json and summary.csv), 130 when interrupted, 1/2 for
a bad command line or input (nothing run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXIT_SOME_FAILED = 3


def _prompt_file(path: str):
    from medvl.batch.jobs import BatchInputError, parse_objects

    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise BatchInputError(f"--prompts {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise BatchInputError(f"--prompts {path} is not JSON: {err.msg} at line {err.lineno}") from None
    specs = data.get("objects") if isinstance(data, dict) else data
    return parse_objects(specs, f"--prompts {path}")


def settings_from_args(args):
    from medvl.batch.jobs import BatchSettings, text_objects
    from medvl.cli import engine_options
    from medvl.io import check_writable

    objects = text_objects(args.text) + (_prompt_file(args.prompts) if args.prompts else ())
    names = [o.name for o in objects]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        from medvl.batch.jobs import BatchInputError

        raise BatchInputError(f"object name(s) {', '.join(map(repr, dup))} given twice (--text / --prompts)")
    check_writable(f"labels{args.label_format}")
    from medvl.cli_language import vlm_config

    vlm = vlm_config(args)  # checked once, before any volume (folder, family, memory)
    narrator = args.narrator or ("vlm" if vlm.enabled else "deterministic")
    return BatchSettings(engine=args.engine, engine_options=engine_options(args), objects=objects,
                         report=args.report, narrator=narrator, refine=args.refine,
                         label_format=args.label_format, vlm=vlm)


def cmd_annotate(args) -> int:
    from medvl.batch.inputs import discover
    from medvl.batch.jobs import BatchInputError
    from medvl.batch.runner import run_batch

    settings = settings_from_args(args)
    jobs = discover(args.input)
    if not settings.objects and not settings.report and not any(j.objects for j in jobs):
        raise BatchInputError("nothing to do: give --text PROMPT, --prompts FILE, --report, or a manifest with "
                              "prompts")
    options = {}
    if args.executor == "ray":
        options = {"address": args.ray_address, "workers": args.workers, "cpus_per_worker": args.cpus_per_worker,
                   "max_retries": args.max_retries}
    elif args.ray_address:
        raise BatchInputError("--ray-address needs --executor ray")
    mode = "json" if args.json_progress else ("quiet" if args.quiet else "bar")
    result = run_batch(jobs, args.out, settings, executor=args.executor, resume=args.resume, progress=mode,
                       executor_options=options)
    if mode != "json":
        print(json.dumps(result.to_dict(), indent=2))
    if result.interrupted:
        return 130
    return EXIT_SOME_FAILED if result.counts.get("failed") else 0


def add_annotate_command(subparsers) -> None:
    from medvl.cli_language import REFINE_HELP, add_vlm_options

    p = subparsers.add_parser("annotate", help="batch: annotate every volume of a folder, glob or manifest "
                              "(label maps, reports, status.json, summary.csv/.parquet; resumable; local or Ray)")
    p.add_argument("input", help="folder (NIfTI/NRRD/MHA files and DICOM series folders, recursive), a quoted "
                   "glob, or a .csv/.json manifest (one row per volume; columns image, case_id, modality, text, "
                   "box, points, space, objects)")
    p.add_argument("--out", required=True, help="output folder: one sub-folder per volume, summary.csv/.parquet")
    p.add_argument("--text", action="append", default=[], metavar="PROMPT",
                   help="object to find in every volume (repeatable: one label per prompt)")
    p.add_argument("--prompts", metavar="FILE", help="JSON list of objects for every volume: "
                   '[{"name": "tumour", "text": "..."}, {"name": "mass", "box": [i0,j0,k0,i1,j1,k1], '
                   '"space": "voxel|LPS|RAS"}]')
    p.add_argument("--report", action="store_true", help="also write report.json, report.md and overview.png "
                   "(alone: the default report, lungs and nodule on a CT)")
    p.add_argument("--narrator", default=None, choices=["deterministic", "smollm2", "vlm"],
                   help="default: the --vlm model when given, else deterministic")
    p.add_argument("--refine", default=None, choices=["hu", "engine", "auto"], help=REFINE_HELP)
    p.add_argument("--engine", default="litemedsam")
    p.add_argument("--checkpoint", help="model checkpoint file (sam2)")
    p.add_argument("--sam2-config", help="sam2 config name")
    p.add_argument("--image-size", type=int, help="sam2 input size")
    add_vlm_options(p)
    p.add_argument("--label-format", default=".nii.gz", choices=[".nii.gz", ".nrrd", ".mha"])
    p.add_argument("--resume", action=__import__("argparse").BooleanOptionalAction, default=True,
                   help="skip volumes whose outputs exist with the same input, prompts, engine and settings "
                        "(default on; --no-resume redoes everything)")
    p.add_argument("--json-progress", action="store_true", help="one JSON object per event on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                   help="Ray cluster to join (default with --executor ray: a local Ray instance)")
    p.add_argument("--workers", type=int, default=None, help="Ray actors, each with a warm engine (default: "
                   "the cluster's CPUs / --cpus-per-worker)")
    p.add_argument("--cpus-per-worker", type=int, default=None,
                   help="CPUs (torch threads) per Ray actor (default: this machine's CPUs / workers, at least 1)")
    p.add_argument("--max-retries", type=int, default=3, help="Ray: times a volume is retried when its worker dies")
    p.set_defaults(func=cmd_annotate)


if __name__ == "__main__":  # pragma: no cover
    from medvl.cli import main

    sys.exit(main(["annotate", *sys.argv[1:]]))
