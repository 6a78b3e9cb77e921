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
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medvl.bench.clicks import next_click
from medvl.bench.core import dice
from medvl.bench.devset import GROUPS, SPECS, default_plan, load_target
from medvl.slicing import bbox2d, numpy_axis, slice_xy_to_index, take_slice

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
    from medvl.bench.clicks import _centre_2d

    row, col = _centre_2d(plane, (1.0, 1.0))
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


def iterate(plan, make_session, clicks: int, prompt: str, with_oracle: bool = True, log=None):
    """Yield one row per (spec, form), sharing a session per image and form."""
    current_key, session = None, None
    for spec, form in sorted(plan, key=lambda p: (_image_key(*p), p[0].name)):
        target = load_target(spec, form)
        key = _image_key(spec, form)
        if key != current_key:
            session = make_session()
            session.set_volume(target.volume)
            current_key = key
        row = run_target(session, target, clicks, prompt, "k", with_oracle)
        if log:
            log(row)
        yield row


def table(summary: dict, rows: list[dict]) -> str:
    lines = ["group                  n   one-prompt  oracle  ratio  after-5  AUC    drops/steps"]
    for name, s in [*summary["groups"].items(), ("ALL", summary["overall"])]:
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
