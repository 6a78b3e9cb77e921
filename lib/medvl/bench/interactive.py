"""`medvl bench-interactive`: the field's interactive protocol on the development benchmark.

Per target (`medvl.bench.devset`): one initial prompt on the expert label's largest slice
along the propagation axis (its box, or one click at its centre), propagation, then up to
`clicks` simulated corrections (`medvl.bench.clicks.next_click`), each followed by the
re-propagation it triggers. Recorded per step: 3D Dice, seconds, and the object's quality
estimate and warnings. Per target also the per-slice oracle: the expert box on every slice
of the label (what the model can reach with perfect prompts). Summaries: per target, per
group and overall - Dice after each step, area under the Dice curve (mean of the
trapezoids over the steps), final Dice, one-prompt Dice / oracle, how often a click lowered
the Dice by more than 0.02.

Targets on the same image and form share one session, so each slice is encoded once.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medvl.bench.clicks import centre, next_click
from medvl.metrics import dice
from medvl.bench.devset import GROUPS, SPECS, default_plan, load_target
from medvl.slicing import bbox2d, numpy_axis, slice_pixel_spacing, slice_xy_to_index, take_slice

DROP = 0.02  # a click that lowers the Dice by more than this counts as harmful


@dataclass
class StepRecord:
    step: int  # 0: the initial prompt; n: after the n-th correction click
    prompt: dict  # what was sent
    dice: float
    seconds: float  # prompt + the propagation it triggered
    quality: dict = field(default_factory=dict)  # the object's quality estimate and warnings


def _box_corners(plane: np.ndarray, index: int, axis: str):
    """ITK corners of the label's box on one slice, at least 2 voxels wide on each side."""
    x0, y0, x1, y1 = bbox2d(plane)
    rows, cols = plane.shape
    if x1 == x0:
        x0, x1 = (x0 - 1, x1) if x0 > 0 else (x0, x1 + 1)
    if y1 == y0:
        y0, y1 = (y0 - 1, y1) if y0 > 0 else (y0, y1 + 1)
    return slice_xy_to_index(index, (x0, y0), axis), slice_xy_to_index(index, (min(x1, cols - 1), min(y1, rows - 1)), axis)


def largest_slice(label: np.ndarray, axis: str) -> int:
    nax = numpy_axis(axis)
    return int(np.argmax(label.sum(axis=tuple(a for a in range(3) if a != nax))))


def initial_prompt(session, label: np.ndarray, axis: str, kind: str, obj_id: int = 1) -> dict:
    index = largest_slice(label, axis)
    plane = take_slice(label, axis, index)
    if kind == "box":
        lo, hi = _box_corners(plane, index, axis)
        session.add_box(lo, hi, obj_id=obj_id)
        return {"box": [list(lo), list(hi)]}
    row, col = centre(plane, slice_pixel_spacing(session.volume.geometry.spacing, axis))
    ijk = slice_xy_to_index(index, (col, row), axis)
    session.add_point(ijk, positive=True, obj_id=obj_id, axis=axis)
    return {"point": list(ijk), "positive": True}


def oracle(session, label: np.ndarray, axis: str, obj_id: int = 255) -> float:
    """3D Dice of the expert box given on every slice holding the label (no propagation)."""
    nax = numpy_axis(axis)
    slices = np.flatnonzero(label.any(axis=tuple(a for a in range(3) if a != nax)))
    for index in slices:
        session.add_box(*_box_corners(take_slice(label, axis, int(index)), int(index), axis), obj_id=obj_id)
    pred = session.mask(obj_id)
    session.reset(obj_id)
    return dice(pred, label)


def _quality(session, obj_id: int) -> dict:
    fn = getattr(session, "quality", None)
    return fn(obj_id) if fn else {}


def run_target(session, target, clicks: int = 5, prompt: str = "box", axis: str = "k",
               with_oracle: bool = True) -> dict:
    label = target.label
    spacing = target.volume.geometry.spacing
    steps: list[StepRecord] = []
    t0 = time.perf_counter()
    sent = initial_prompt(session, label, axis, prompt)
    session.run_propagation(1)
    pred = session.mask(1)
    steps.append(StepRecord(0, sent, dice(pred, label), time.perf_counter() - t0, _quality(session, 1)))
    for n in range(1, clicks + 1):
        click = next_click(pred, label, spacing, axes=(session.object_axis(1),))
        if click is None:
            break
        t0 = time.perf_counter()
        session.add_point(click.ijk, positive=click.positive, obj_id=1, axis=session.object_axis(1))
        session.run_propagation(1)
        pred = session.mask(1)
        steps.append(StepRecord(n, {"point": list(click.ijk), "positive": click.positive,
                                    "region_voxels": click.region_voxels},
                                dice(pred, label), time.perf_counter() - t0, _quality(session, 1)))
    session.reset(1)
    curve = [s.dice for s in steps] + [steps[-1].dice] * (clicks + 1 - len(steps))  # a perfect mask stays
    out = {
        "target": target.name, "group": target.group, "form": target.form, "axis": axis,
        "label_voxels": int(label.sum()),
        "dice": [round(d, 4) for d in curve],
        "auc": round(float(np.mean([(a + b) / 2 for a, b in zip(curve, curve[1:])])) if clicks else curve[0], 4),
        "final": round(curve[-1], 4),
        "seconds": [round(s.seconds, 3) for s in steps],
        "steps": [{"step": s.step, "prompt": s.prompt, "dice": round(s.dice, 4), "seconds": round(s.seconds, 3),
                   "quality": s.quality} for s in steps],
        "drops": sum(1 for a, b in zip(curve, curve[1:]) if b < a - DROP),
    }
    if with_oracle:
        out["oracle"] = round(oracle(session, label, axis), 4)
        out["one_prompt_vs_oracle"] = round(curve[0] / out["oracle"], 4) if out["oracle"] else None
    return out


def summarise(rows: list[dict]) -> dict:
    def agg(rs):
        if not rs:
            return None
        m = lambda key: round(float(np.mean([r[key] for r in rs])), 4)  # noqa: E731
        out = {"targets": len(rs), "one_prompt": round(float(np.mean([r["dice"][0] for r in rs])), 4),
               "final": m("final"), "auc": m("auc"),
               "dice_per_step": [round(float(np.mean([r["dice"][n] for r in rs])), 4)
                                 for n in range(len(rs[0]["dice"]))],
               "click_steps": sum(len(r["dice"]) - 1 for r in rs), "drops": sum(r["drops"] for r in rs)}
        if all("oracle" in r for r in rs):
            out["oracle"] = m("oracle")
            out["one_prompt_vs_oracle"] = round(out["one_prompt"] / out["oracle"], 4) if out["oracle"] else None
        return out

    return {"overall": agg(rows), "groups": {g: agg([r for r in rows if r["group"] == g]) for g in GROUPS
                                             if any(r["group"] == g for r in rows)}}


def select(targets: list[str] | None, groups: list[str] | None, forms: str):
    plan = default_plan(SPECS, forms)
    if groups:
        unknown = set(groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"group {sorted(unknown)[0]!r} is not one of: {', '.join(GROUPS)}")
        plan = [(s, f) for s, f in plan if s.group in groups]
    if targets:
        plan = [(s, f) for s, f in plan if any(t in s.name for t in targets)]
    return plan


def _image_key(spec, form) -> str:
    return f"{spec.image}@{form}"


def by_image(plan, make_session, store: str | None = None):
    """Yield (session, target) per (spec, form) of `plan`, one session per image and form (bound
    once: targets on the same image share its encoded slices; with `store`, a folder, they are
    also kept on disk for the next run: `medvl.bench.embedding_store`)."""
    current_key, session = None, None
    for spec, form in sorted(plan, key=lambda p: (_image_key(*p), p[0].name)):
        target = load_target(spec, form)
        if _image_key(spec, form) != current_key:
            session, current_key = make_session(), _image_key(spec, form)
            session.set_volume(target.volume)
            if store:
                from medvl.bench.embedding_store import attach

                attach(session, Path(store), current_key)
        yield session, target


def table(summary: dict, rows: list[dict]) -> str:
    lines = ["group                  n   one-prompt  oracle  ratio  after-5  AUC    drops/steps"]
    for name, s in [*summary["groups"].items(), ("ALL", summary["overall"])]:  # oracle 0: not measured
        lines.append(f"{name:<20} {s['targets']:>3}   {s['one_prompt']:.3f}       {s.get('oracle', 0):.3f}   "
                     f"{s.get('one_prompt_vs_oracle') or 0:.2f}   {s['final']:.3f}    {s['auc']:.3f}  "
                     f"{s['drops']}/{s['click_steps']}")
    lines.append("")
    for r in rows:
        lines.append(f"{r['target']:<44} {' '.join(f'{d:.3f}' for d in r['dice'])}  oracle {r.get('oracle', 0):.3f}  "
                     f"s/step {' '.join(f'{s:.1f}' for s in r['seconds'])}")
    return "\n".join(lines)


def write_json(path, payload: dict) -> None:
    Path(path).write_text(json.dumps(payload, indent=1))


# ---- configurations and leave-one-group-out cross-validation -----------------------------
def tracking_configs() -> dict:
    """The engine settings the benchmark compares (named): today's defaults, and the baseline
    before the development benchmark (whole slices, the old stop rule: `stoprule.BASELINE`)."""
    from medvl.bench.stoprule import BASELINE
    from medvl.engines.litemedsam.tracking import TrackingSettings
    from medvl.engines.litemedsam.zoom import ZoomSettings

    return {"default": {"tracking": TrackingSettings(), "zoom": ZoomSettings()},
            "baseline": {"tracking": BASELINE[1], "zoom": ZoomSettings(factor=0)}}


def run_configs(plan, make_session, configs: dict, clicks: int, prompt: str, log=None,
                store: str | None = None) -> list[dict]:
    """Rows for every (config, target); a session per image and form serves every config, so
    each slice is encoded once whatever the number of configs. A config is the engine's
    tracking settings, or a dict of engine settings to replace (`tracking`, `zoom`)."""
    from dataclasses import replace

    rows = []
    for session, target in by_image(plan, make_session, store):
        spec = target.spec
        oracle_dice = None
        for n, (name, tracking) in enumerate(configs.items()):
            if name.startswith("fold:") and name != f"fold:{spec.group}":
                continue  # a fold's rule scores only its own held-out group
            overrides = tracking if isinstance(tracking, dict) else {"tracking": tracking}
            if hasattr(session.engine.settings, "tracking"):
                session.engine.settings = replace(session.engine.settings, **overrides)
            row = run_target(session, target, clicks, prompt, "k", with_oracle=oracle_dice is None)
            oracle_dice = row.get("oracle", oracle_dice)
            row["oracle"] = oracle_dice
            row["one_prompt_vs_oracle"] = round(row["dice"][0] / oracle_dice, 4) if oracle_dice else None
            row["config"] = name
            rows.append(row)
            if log:
                log(row)
    return rows


def cross_validate(rows: list[dict], metric: str = "auc") -> dict:
    """Leave one group out: for each group, the config with the best mean `metric` on the other
    groups is chosen and the held-out group is scored with it."""
    configs = sorted({r["config"] for r in rows})
    groups = [g for g in GROUPS if any(r["group"] == g for r in rows)]
    chosen, held = {}, []
    for g in groups:
        train = [r for r in rows if r["group"] != g]
        means = {c: float(np.mean([r[metric] for r in train if r["config"] == c])) for c in configs} if train else {}
        best = max(means, key=means.get) if means else configs[0]
        chosen[g] = best
        held += [r for r in rows if r["group"] == g and r["config"] == best]
    fitted = max(configs, key=lambda c: np.mean([r[metric] for r in rows if r["config"] == c]))
    return {"metric": metric, "chosen": chosen, "rows": held, "summary": summarise(held),
            "fitted_config": fitted, "fitted_summary": summarise([r for r in rows if r["config"] == fitted])}


def _spearman(a, b) -> float | None:
    if len(a) < 3:
        return None
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    c = np.corrcoef(ra, rb)[0, 1]
    return None if np.isnan(c) else round(float(c), 4)


def fit_calibration(raw, dice_values, bins: int = 5) -> tuple[tuple[float, float], ...]:
    """Monotone piecewise-linear map raw confidence -> Dice: mean Dice per raw-quantile bin,
    made non-decreasing (pool-adjacent-violators)."""
    raw, dice_values = np.asarray(raw, float), np.asarray(dice_values, float)
    if raw.size < 2:
        return ((0.0, 0.0), (1.0, 1.0))
    edges = np.quantile(raw, np.linspace(0, 1, bins + 1))
    xs, ys = [], []
    for lo, hi in zip(edges, edges[1:]):
        sel = (raw >= lo) & (raw <= hi)
        if sel.any():
            xs.append(float(raw[sel].mean()))
            ys.append(float(dice_values[sel].mean()))
    blocks = [[y, 1, x] for x, y in zip(xs, ys)]  # pool adjacent violators
    merged: list = []
    for b in blocks:
        merged.append(b)
        while len(merged) > 1 and merged[-2][0] > merged[-1][0]:
            y2, n2, x2 = merged.pop()
            y1, n1, x1 = merged.pop()
            merged.append([(y1 * n1 + y2 * n2) / (n1 + n2), n1 + n2, (x1 * n1 + x2 * n2) / (n1 + n2)])
    return tuple((round(x, 4), round(y, 4)) for y, _, x in merged) or ((0.0, 0.0), (1.0, 1.0))


LEAKY = {"empty", "too_small", "leak_suspected", "low_confidence"}


def quality_report(cv_rows: list[dict], rows: list[dict]) -> dict:
    """How well the one-prompt quality estimate ranks and flags masks, cross-validated: the
    calibration applied to each group is fitted on the other groups' rows (all configs)."""
    from medvl.session.quality import _calibrate

    est, dices, flagged_bad, bad, flagged_good, good = [], [], 0, 0, 0, 0
    knots_by_group = {}
    for g in {r["group"] for r in cv_rows}:
        train = [r for r in rows if r["group"] != g and r["steps"][0]["quality"].get("raw_confidence") is not None]
        knots = fit_calibration([r["steps"][0]["quality"]["raw_confidence"] for r in train],
                                [r["dice"][0] for r in train])
        knots_by_group[g] = knots
    for r in cv_rows:
        q = r["steps"][0]["quality"]
        raw = q.get("raw_confidence")
        e = _calibrate(raw, knots_by_group[r["group"]]) if raw is not None else 0.0
        names = {w["name"] for w in q.get("warnings", [])} - {"low_confidence"}
        flag = e < 0.5 or bool(names & LEAKY)
        est.append(e)
        dices.append(r["dice"][0])
        if r["dice"][0] < 0.5:
            bad += 1
            flagged_bad += flag
        else:
            good += 1
            flagged_good += flag
    all_knots = fit_calibration([r["steps"][0]["quality"]["raw_confidence"] for r in rows
                                 if r["steps"][0]["quality"].get("raw_confidence") is not None],
                                [r["dice"][0] for r in rows if r["steps"][0]["quality"].get("raw_confidence") is not None])
    return {"spearman_estimate_vs_dice": _spearman(est, dices),
            "masks_below_0.5": bad, "flagged_of_those": flagged_bad,
            "masks_at_or_above_0.5": good, "flagged_of_those_good": flagged_good,
            "calibration_all_rows": all_knots, "calibration_per_held_out_group": knots_by_group,
            "rule": "flag = calibrated estimate < 0.5 or a warning among " + ", ".join(sorted(LEAKY - {"low_confidence"}))}


def run(args) -> dict:
    """`medvl bench-interactive`: see the module docstring."""
    import torch

    from medvl.bench.machine import matmul_gflops, peak_rss_mb
    from medvl.session import VolumeSession

    if args.threads:
        torch.set_num_threads(args.threads)
    plan = select(args.target, args.targets, args.forms)
    if not plan:
        raise ValueError("no target matches --target/--targets")
    configs = tracking_configs()
    if args.config:
        configs = {c: configs[c] for c in args.config}
    if args.fold_rules:  # each group under the stop rule its cross-validation fold chose without it
        from dataclasses import replace as _replace

        from medvl.engines.litemedsam.tracking import TrackingSettings

        from medvl.engines.litemedsam.zoom import ZoomSettings

        folds = json.loads(Path(args.fold_rules).read_text())["stop_rule"]["folds"]
        configs = {}
        for g, f in folds.items():
            rule = dict(f["rule"])
            below = rule.pop("zoom_below", None)
            zoom = ZoomSettings(below=math.inf if below is None else below) if rule.pop("view", "whole") == "chosen" \
                else ZoomSettings(factor=0)
            configs[f"fold:{g}"] = {"tracking": _replace(TrackingSettings(), **rule), "zoom": zoom}
    t0 = time.perf_counter()
    if args.fit_stop_rule:
        from medvl.bench import stoprule

        import pickle

        if args.traces and Path(args.traces).exists():
            traces = pickle.loads(Path(args.traces).read_bytes())
        else:
            traces = stoprule.collect(plan, lambda: VolumeSession(args.engine, cache_bytes=args.cache_mb * 2**20),
                                      (lambda t: print(t.target, flush=True)) if args.progress else None,
                                      args.embedding_store)
            if args.traces:
                Path(args.traces).write_bytes(pickle.dumps(traces))
        report = {"command": "medvl bench-interactive " + " ".join(getattr(args, "argv", [])),
                  "stop_rule": stoprule.cross_validate(traces), "targets": len(plan),
                  "wall_seconds": round(time.perf_counter() - t0, 1)}
        report["table"] = [f"{g:<20} {v:.3f}" for g, v in report["stop_rule"]["cross_validated_per_group"].items()]
        if args.json:
            write_json(args.json, report)
        return report
    if args.via_server:
        from medvl.bench import via_server

        rows = via_server.run(plan, args.clicks, args.url, (lambda r: print(
            f"server   {r['target']:<44} {' '.join(f'{d:.3f}' for d in r['dice'])}  refused {len(r['refused'])}",
            flush=True)) if args.progress else None)
        steps = sum(len(r["steps"]) - 1 for r in rows)
        report = {"command": "medvl bench-interactive " + " ".join(getattr(args, "argv", [])), "via": "server",
                  "targets": len(plan), "summary": summarise(rows),
                  "refused_steps": sum(len(r["refused"]) for r in rows), "click_steps": steps,
                  "drops_over_0.02": sum(r["drops"] for r in rows),
                  "drop_share": round(sum(r["drops"] for r in rows) / steps, 4) if steps else None,
                  "rows": rows, "wall_seconds": round(time.perf_counter() - t0, 1)}
        report["table"] = table(report["summary"], rows).splitlines()
        if args.json:
            write_json(args.json, report)
        return report
    log = (lambda r: print(f"{r['config']:<8} {r['target']:<44} {' '.join(f'{d:.3f}' for d in r['dice'])}  "
                           f"oracle {r.get('oracle') or 0:.3f}", flush=True)) if args.progress else None
    rows = run_configs(plan, lambda: VolumeSession(args.engine, cache_bytes=args.cache_mb * 2**20),
                       configs, args.clicks, args.prompt, log, args.embedding_store)
    if args.fold_rules:  # the held-out rows are each group's own fold
        held = [r for r in rows if r["config"] == f"fold:{r['group']}"]
        cv = {"metric": "stop rule chosen on the other groups (--fold-rules)", "rows": held,
              "chosen": {g: f"fold:{g}" for g in {r["group"] for r in held}}, "summary": summarise(held)}
        rows = held
    else:
        cv = cross_validate(rows)
    clicks = [s["seconds"] for r in cv["rows"] for s in r["steps"][1:]]
    report = {
        "command": "medvl bench-interactive " + " ".join(getattr(args, "argv", [])),
        "engine": args.engine, "prompt": args.prompt, "clicks": args.clicks, "forms": args.forms,
        "targets": len(plan), "configs": {k: ({n: vars(x) for n, x in v.items()} if isinstance(v, dict) else vars(v))
                                           for k, v in configs.items()},
        "cross_validation": {k: v for k, v in cv.items() if k != "rows"},
        "quality": quality_report(cv["rows"], rows),
        "seconds_per_click": {"median": round(float(np.median(clicks)), 3) if clicks else None,
                              "p90": round(float(np.percentile(clicks, 90)), 3) if clicks else None,
                              "share_at_most_0.5s": round(float(np.mean(np.array(clicks) <= 0.5)), 3) if clicks else None},
        "per_config": {c: summarise([r for r in rows if r["config"] == c]) for c in configs
                       if any(r["config"] == c for r in rows)},
        "rows": cv["rows"],
        "all_rows": rows if args.all_rows else None,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": peak_rss_mb(),
        "machine_matmul_gflops": round(matmul_gflops(), 1),
    }
    report["table"] = table(cv["summary"], cv["rows"]).splitlines()
    if args.json:
        write_json(args.json, report)
    return report


def add_arguments(parser) -> None:
    parser.add_argument("--json", help="also write the JSON report here")
    parser.add_argument("--targets", action="append", metavar="GROUP", help=f"only this group ({', '.join(GROUPS)})")
    parser.add_argument("--target", action="append", help="only targets whose name contains this")
    parser.add_argument("--forms", default="two", help="two (default: axial + one other form per target), all, "
                        "or one of axial, reoriented, thick, sagittal, noisy")
    parser.add_argument("--prompt", choices=("box", "click"), default="box")
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--engine", default="litemedsam")
    parser.add_argument("--config", action="append", help="only these tracking configs (default: all)")
    parser.add_argument("--cache-mb", type=int, default=2048, help="embedding cache per image (MiB)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--all-rows", action="store_true", help="also keep every config's rows in the JSON")
    parser.add_argument("--fit-stop-rule", action="store_true", help="only choose the propagation stop rule: "
                        "one unstopped walk per target, a grid of rules, leave-one-group-out CV (medvl.bench.stoprule)")
    parser.add_argument("--fold-rules", metavar="JSON", help="the --fit-stop-rule report: each group runs under "
                        "the stop rule chosen on the other groups (cross-validated numbers for the whole protocol)")
    parser.add_argument("--via-server", action="store_true", help="drive the real MONAI Label server over HTTP "
                        "with the stock client's parameters (ROI + every click), started here unless --url")
    parser.add_argument("--url", help="with --via-server: a running server whose datastore holds the targets' "
                        "images named as medvl.bench.via_server.image_id")
    parser.add_argument("--traces", metavar="FILE", help="with --fit-stop-rule: reuse the traces in FILE if it "
                        "exists, else write them there")
    parser.add_argument("--progress", action="store_true", help="print each target as it finishes")
    parser.add_argument("--embedding-store", metavar="DIR", help="keep encoded slices in DIR between runs "
                        "(a rerun pays for the decoder only; medvl.bench.embedding_store)")
