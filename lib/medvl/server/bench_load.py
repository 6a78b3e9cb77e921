"""Load and fault benchmark: concurrent clients, a kill -9 of the server and a restart. Prints JSON.

`medvl bench-load --json OUT` starts the real server (`medvl.server.launch`, loopback, a
private TMPDIR so its temporary files can be counted) on a temporary studies folder with
four images: lung1, lung2, brain1 (copies of sample_data/) and lung2_rot (lung2 rotated 180
degrees in plane, written with medvl.io: other direction and origin, same physical voxels;
its expert label rotated the same way), so geometry is checked under load too.

1. Unloaded (one client, nothing else running): on each image a box first click, then
   `--corrections` correction clicks (foreground points inside the expert label on its
   largest slice), then the same from a point first click; "nodule" as text on the CT
   images. These masks are the expected masks of the same states under load; the
   correction clicks give the unloaded latency; the first clicks (slices encoded) and the
   corrections (cached embeddings) give the engine seconds of one slice step.
2. Load: `--clients` threads (client c works on image c mod 4 with its own client_id and
   session), `--requests` each, a seeded mix (`bench_load_work.MIX`): first clicks (box or
   point, alternating), corrections, `undo: 1`, text, report and VQA on the lesion, label
   saves (`save_label` + per-client `label_tag`, or PUT /datastore/label of the last mask).
   Every request carries `medvl_session`. A poller GETs /info/ every 0.25 s (latencies kept
   while clicks run) and samples the server's RSS (VmRSS over its process group).
3. Fault: once half the requests are done, the next moment a label save is in flight (or
   after 20 s), the server's process group gets SIGKILL; a new server starts on the same
   studies folder (and port). Requests that fail meanwhile are "during_outage" and are
   retried; a 410 for a session of the killed server is "session_lost" (expected): the
   client starts a new session with a first click.
4. Checks after a graceful stop: every mask (geometry equal to its image's, Dice to the
   unloaded mask of the same state >= 1 - DICE_TOLERANCE; the echoed prompt_set equal to
   the client's), report / VQA facts equal to the session's lesion voxels, every label file
   in the studies' labels folders read completely in its image's grid and equal to a mask
   that client saved (old or new), files left: `*.part`, `.*.tmp-*`, `.medvl-tmp/*` in the
   studies folder, `medvl-*` (uploads, results, progress masks) in the servers' TMPDIR;
   those older than the kill are listed again in `files_left_by_killed_server`. Other
   TMPDIR entries (MONAI Label's logging config, one per start; torch caches) and kept
   report folders are listed apart.

`--url` is refused (a non-loopback one with its own message): the benchmark must own the
server it kills, so it always starts its own on 127.0.0.1.

Goals (issue): 0 errors, 0 wrong masks, /info p95 <= 0.2 s, correction p95 <= 2 x unloaded
correction p95 + one slice step (the longer of the encoding and the decoding step: a click
waits for at most one step of another session), peak RSS - RSS after the unloaded phase <=
cache_mb (the session byte budget), after the restart every label complete and no
temporary file left.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from medvl.server import DEFAULT_STUDIES
from medvl.server.bench_load_work import (DICE_TOLERANCE, KINDS, LESION, TEXT, LoadClient, ServerHandle, Shared,
                                          dice, digest, make_cases, plan, read_bytes_mask)

logger = logging.getLogger(__name__)

IMAGES = ("lung1", "lung2", "brain1", "lung2_rot")
GOAL_INFO_P95_S = 0.2
INFO_EVERY_S = 0.25
KILL_WAIT_FOR_SAVE_S = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", help="also write the JSON here")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--images", default=",".join(IMAGES),
                        help="comma-separated cases of sample_data/; NAME_rot = NAME rotated in plane")
    parser.add_argument("--corrections", type=int, default=3, help="most correction points on one object")
    parser.add_argument("--refine", default="hu", choices=["hu", "engine", "auto"],
                        help="refine of text, report and VQA requests (hu: Hounsfield solvers only)")
    parser.add_argument("--no-kill", action="store_true", help="no kill -9 and restart")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", help="refused (a non-loopback one as such): bench-load starts, kills and restarts "
                                      "its own server on 127.0.0.1")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (studies, logs) and print it")
    parser.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="server setting passed through (--conf cache_mb 512, ...)")


def check_loopback(url: str) -> None:
    from medvl.server.settings import ConfigError

    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"--url {url!r} is not a loopback address: bench-load only talks to 127.0.0.1 / ::1 / "
                          "localhost")
    raise ConfigError(f"--url {url!r}: bench-load kills and restarts the server it measures, so it starts its own; "
                      "run it without --url")


def check_counts(args: argparse.Namespace, names: list[str]) -> None:
    from medvl.server.settings import ConfigError

    for flag in ("clients", "requests", "corrections"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} {getattr(args, flag)} must be >= 1")
    missing = [n for n in names if not (Path(DEFAULT_STUDIES) / f"{n.removesuffix('_rot')}_label.nii.gz").is_file()]
    if not names or missing:
        raise ConfigError(f"--images {args.images!r}: no sample case {', '.join(missing) or '(none given)'}; "
                          f"use names of sample_data/cases.json, e.g. {','.join(IMAGES)}")


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50_s": None, "p95_s": None}
    ordered = sorted(values)
    rank = lambda q: ordered[max(0, min(len(ordered) - 1, -(-int(q * len(ordered) * 100) // 100) - 1))]  # noqa
    return {"p50_s": round(statistics.median(ordered), 4), "p95_s": round(rank(0.95), 4)}


# ---- phase 1: unloaded --------------------------------------------------------------------------
def unloaded(server: ServerHandle, cases, corrections: int, refine: str, scratch: Path) -> dict:
    """The expected mask of every state the clients can reach, and unloaded latencies."""
    from medvl.server.client import ServerClient

    api = ServerClient(server.url, client_id="bench-load-unloaded", timeout_s=600)
    expected, dice_expert, correction_s, encode_steps, decode_steps = {}, {}, [], [], []

    def mask_of(reply, key):
        if reply.status != 200 or reply.image is None:
            raise RuntimeError(f"unloaded request {key} failed: {reply.status} {reply.detail}")
        ext = "".join(Path(reply.filename).suffixes[-2:])
        expected[key] = read_bytes_mask(reply.image, ext, scratch).array > 0
        return reply.json

    for case in cases:
        generation = None
        for first in ("box", "point"):
            for n in range(corrections + 1):
                p = {"label": LESION, "medvl_session": generation} if generation else {"label": LESION}
                p.update({"boxes": [case.box], "foreground": case.points[1: n + 1]} if first == "box"
                         else {"foreground": case.points[: n + 1]})
                if n == 0:
                    p["reset_state"] = True
                request_id = f"unloaded-{case.image_id}-{first}-{n}".replace("_", "-")
                reply = api.infer(case.image_id, p, request_id=request_id)
                j = mask_of(reply, (case.image_id, first, n))
                generation = j["session"]["medvl_session"]
                dice_expert[f"{case.image_id}/{first}+{n}"] = round(dice(expected[(case.image_id, first, n)],
                                                                         case.label), 4)
                done = api.progress(request_id)  # slices propagated and their compute seconds
                step = done["compute_s"] / done["slices_done"] if done["slices_done"] else None
                if n:
                    correction_s.append(reply.seconds)
                    decode_steps += [step] if step is not None else []
                elif j.get("encoder_passes", 0) > 0 and step is not None:
                    encode_steps.append(step)
        if case.ct:
            reply = api.infer(case.image_id, {"text": TEXT, "refine": refine, "medvl_session": generation},
                              model="medvl_text")
            mask_of(reply, (case.image_id, "text"))
            dice_expert[f"{case.image_id}/text"] = round(dice(expected[(case.image_id, "text")], case.label), 4)
    info_s = []
    for _ in range(20):
        t0 = time.perf_counter()
        api.http.get(server.url + "/info/", timeout=60).raise_for_status()
        info_s.append(time.perf_counter() - t0)
    step = max([statistics.median(v) for v in (encode_steps, decode_steps) if v] or [0.0])
    return {"expected": expected, "summary": {
        "correction": {"n": len(correction_s), **percentiles(correction_s)},
        "slice_step_encode_s": round(statistics.median(encode_steps), 4) if encode_steps else None,
        "slice_step_decode_s": round(statistics.median(decode_steps), 4) if decode_steps else None,
        "slice_step_s": round(step, 4), "info": percentiles(info_s), "dice_to_expert_label": dice_expert}}


# ---- phase 2 and 3: load and fault ----------------------------------------------------------------
class Poller(threading.Thread):
    """GET /info/ every INFO_EVERY_S while the server is up; RSS of its process group, peak kept."""

    def __init__(self, server: ServerHandle, shared: Shared):
        super().__init__(daemon=True)
        self.server, self.shared = server, shared
        self.stop_event = threading.Event()
        self.info_while_clicks, self.info_all, self.info_failed = [], [], 0
        self.peak_rss_mb = 0.0

    def run(self) -> None:
        import requests

        http, epoch = requests.Session(), self.server.epoch
        while not self.stop_event.wait(INFO_EVERY_S):
            rss = self.server.rss_mb()
            self.peak_rss_mb = max(self.peak_rss_mb, rss or 0.0)
            if not self.server.up.is_set():
                continue
            if epoch != self.server.epoch:
                http, epoch = requests.Session(), self.server.epoch
            clicks = self.shared.clicks_running > 0
            t0 = time.perf_counter()
            try:
                ok = http.get(self.server.url + "/info/", timeout=30).status_code == 200
            except OSError:
                ok = False
            seconds = time.perf_counter() - t0
            if not ok or self.server.down.is_set():
                self.info_failed += not self.server.down.is_set()
                continue
            self.info_all.append(seconds)
            if clicks and self.shared.clicks_running > 0:
                self.info_while_clicks.append(seconds)


def killer(server: ServerHandle, shared: Shared, out: dict) -> None:
    """Half the requests done, then the next label save in flight: SIGKILL, restart."""
    while shared.completed < shared.total // 2:
        time.sleep(0.02)
    deadline = time.monotonic() + KILL_WAIT_FOR_SAVE_S
    while shared.saves_running == 0 and time.monotonic() < deadline:
        time.sleep(0.002)
    out.update(killed_at_request=shared.completed, save_in_flight=shared.saves_running > 0)
    t0 = time.perf_counter()
    port = server.process.port
    out["killed_at_unix"] = time.time()
    server.kill()
    try:
        server.start(port=port)  # the same URL for the clients
        out["same_port"] = True
    except RuntimeError as error:
        logger.warning("restart on port %s failed (%s); starting on a new port", port, error)
        server.start()
        out["same_port"] = False
    out["restart_s"] = round(time.perf_counter() - t0, 3)


def check_records(clients, cases, expected, scratch: Path) -> tuple[dict, list, list]:
    """Per kind {n, errors, ...}; the wrong masks and wrong answers, each with why."""
    from medvl.io import read_volume

    geometry = {c.image_id: read_volume(c.path).geometry for c in cases}
    shapes = {c.image_id: c.label.shape for c in cases}
    by_kind = {k: {"n": 0, "errors": 0, "session_lost": 0, "evicted": 0, "seconds": []} for k in KINDS}
    wrong_masks, wrong_answers, error_details = [], [], []
    for client in clients:
        for r in client.records:
            row = by_kind[r.kind]
            row["n"] += 1
            if r.outcome != "ok":
                row["errors" if r.outcome == "error" else r.outcome] += 1
                if r.outcome == "error":
                    error_details.append(f"client {r.client} {r.kind} on {r.image_id}: {r.status} {r.detail}")
                continue
            row["seconds"].append(r.seconds)
            where = f"client {r.client} {r.kind} on {r.image_id} (epoch {r.epoch})"
            if r.check.get("prompt_set_ok") is False:
                wrong_masks.append(f"{where}: prompt_set echoed differs from the client's")
            if "expected_voxels" in r.check and r.check["voxels"] != [r.check["expected_voxels"]]:
                wrong_answers.append(f"{where}: facts voxels {r.check['voxels']} != the lesion's "
                                     f"{r.check['expected_voxels']}")
            if r.expect is None or r.mask is None:
                continue
            mask = read_bytes_mask(r.mask, r.ext, scratch)
            if mask.array.shape != shapes[r.image_id] or not mask.geometry.same_as(geometry[r.image_id]):
                wrong_masks.append(f"{where}: geometry differs from the image: "
                                   f"{mask.geometry.describe_difference(geometry[r.image_id])}")
                continue
            d = dice(mask.array, expected[r.expect])
            if d < 1.0 - DICE_TOLERANCE:
                wrong_masks.append(f"{where}: Dice {d:.4f} to the unloaded mask of state {r.expect[1:]}")
    kinds = {}
    for kind, row in by_kind.items():
        kinds[kind] = {"n": row["n"], "errors": row["errors"], "session_lost": row["session_lost"],
                       "evicted": row["evicted"], **percentiles(row["seconds"])}
    return kinds, wrong_masks, wrong_answers, error_details


def files_left(studies: Path, tmp: Path, killed_at: float | None) -> dict:
    """Temporary files the servers left: in the studies folder and in their private TMPDIR.
    Those last written before `killed_at` (unix time of the kill) are also listed in
    `files_left_by_killed_server`."""
    left = [(str(p.relative_to(studies)), p) for p in sorted(studies.rglob("*"))
            if p.is_file() and (p.name.endswith(".part") or ".tmp-" in p.name or ".medvl-tmp" in p.parts)]
    other, reports = [], []
    for p in sorted(tmp.iterdir()):
        if p.name.startswith("medvl-reports-"):
            reports.append(p.name)  # kept reports (report_dir unset): not temporary files
        elif p.name.startswith("medvl-"):  # uploads, results, progress masks of our server code
            left.append((f"TMPDIR/{p.name}", p))
        else:  # not ours: MONAI Label's logging config per start (tmp*.json), torch's caches
            other.append(p.name)
    old = [name for name, p in left if killed_at is not None and p.stat().st_mtime <= killed_at]
    return {"files_left": [name for name, _ in left], "files_left_by_killed_server": old,
            "other_tmpdir_entries": other, "report_dirs_left": reports}


def run(args: argparse.Namespace) -> dict:
    from medvl.server.settings import ServerSettings

    if args.url:
        check_loopback(args.url)
    settings = ServerSettings.from_conf(dict(args.conf))  # a bad --conf fails here, named
    names = [n.strip() for n in args.images.split(",") if n.strip()]
    check_counts(args, names)
    work = Path(tempfile.mkdtemp(prefix="medvl-bench-load-"))
    studies, tmp, logs, scratch = work / "studies", work / "tmp", work / "logs", work / "scratch"
    for folder in (studies, tmp, logs, scratch):
        folder.mkdir()
    server = ServerHandle(studies, tmp, logs, args.conf)
    result = {"config": {
        "clients": args.clients, "requests_per_client": args.requests, "images": names, "seed": args.seed,
        "corrections": args.corrections, "refine": args.refine, "kill": not args.no_kill,
        "cache_mb": settings.cache_mb, "threads_conf": settings.threads, "torch_threads": _torch_threads(settings),
        "machine_cores": os.cpu_count(), "load_average_start": _load_average(), "mix": _mix(),
        "dice_tolerance": DICE_TOLERANCE}}
    try:
        cases = make_cases(Path(DEFAULT_STUDIES), studies, names, args.corrections, args.seed)
        result["config"]["image_notes"] = {c.image_id: c.note for c in cases}
        result["startup_s"] = round(server.start(), 3)
        result["rss_mb"] = {"startup": server.rss_mb()}
        t0 = time.perf_counter()
        ref = unloaded(server, cases, args.corrections, args.refine, scratch)
        result["unloaded"] = dict(ref["summary"], seconds=round(time.perf_counter() - t0, 1))
        result["rss_mb"]["after_unloaded"] = server.rss_mb()
        result.update(load(args, server, cases, ref["expected"], studies, tmp, scratch, result))
    finally:
        server.stop()
        if args.keep:
            result["work_dir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def load(args, server: ServerHandle, cases, expected, studies: Path, tmp: Path, scratch: Path, result) -> dict:
    shared = Shared(args.clients * args.requests)
    clients = [LoadClient(c, cases[c % len(cases)], plan(args.seed, c, args.requests), server, shared,
                          args.corrections, args.refine) for c in range(args.clients)]
    threads = [threading.Thread(target=c.run, name=f"client-{c.index}", daemon=True) for c in clients]
    poller, restart = Poller(server, shared), {}
    poller.peak_rss_mb = result["rss_mb"]["after_unloaded"] or 0.0
    kill = threading.Thread(target=killer, args=(server, shared, restart), daemon=True)
    for t in [poller, *threads] + ([] if args.no_kill else [kill]):
        t.start()
    t0 = time.perf_counter()
    shared.go.set()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if not args.no_kill:
        kill.join(timeout=600)
    poller.stop_event.set()
    poller.join()
    server.stop()  # graceful: what is left after this is left for good
    kinds, wrong_masks, wrong_answers, errors = check_records(clients, cases, expected, scratch)
    labels = check_labels_saved(studies, cases, shared, scratch)
    left = files_left(studies, tmp, restart.get("killed_at_unix"))
    unloaded_corr = result["unloaded"]["correction"]["p95_s"]
    step = result["unloaded"]["slice_step_s"]
    bound = round(2 * unloaded_corr + step, 4) if unloaded_corr is not None else None
    loaded_corr = kinds["correction"]["p95_s"]
    info = percentiles(poller.info_while_clicks)
    rss = dict(result["rss_mb"], peak=poller.peak_rss_mb)
    growth = round(rss["peak"] - (rss["after_unloaded"] or 0.0), 1)
    n_errors = sum(k["errors"] for k in kinds.values()) + poller.info_failed
    out = {
        "load_seconds": round(seconds, 1), "requests_done": shared.completed, "kinds": kinds,
        "errors": n_errors, "error_details": errors[:20], "info_failures": poller.info_failed,
        "during_outage": shared.outages, "wrong_masks": len(wrong_masks), "wrong_mask_details": wrong_masks[:20],
        "wrong_answers": len(wrong_answers), "wrong_answer_details": wrong_answers[:20],
        "info_while_clicks": {"n": len(poller.info_while_clicks), **info},
        "info_all": {"n": len(poller.info_all), **percentiles(poller.info_all)},
        "correction_bound": {"unloaded_p95_s": unloaded_corr, "slice_step_s": step, "bound_s": bound,
                             "loaded_p95_s": loaded_corr,
                             "met": None if None in (bound, loaded_corr) else loaded_corr <= bound},
        "rss_mb": dict(rss, growth_over_unloaded=growth, session_budget_mb=int(result["config"]["cache_mb"])),
        "peak_rss_mb": rss["peak"],
        "restart": None if args.no_kill else dict(restart, **labels),
        "labels": labels, **left, "load_average_end": _load_average(),
    }
    goals = {"errors_0": n_errors == 0, "wrong_masks_0": not wrong_masks and not wrong_answers,
             "info_p95_le_0.2s": info["p95_s"] is not None and info["p95_s"] <= GOAL_INFO_P95_S,
             "correction_p95_le_bound": bool(out["correction_bound"]["met"]),
             "memory_within_budget": growth <= result["config"]["cache_mb"],
             "labels_complete": labels["labels_incomplete"] == 0 and labels["labels_checked"] > 0,
             "no_files_left": not left["files_left"]}
    out["goals"] = goals
    out["goals_met"] = all(goals.values())
    return out


def check_labels_saved(studies: Path, cases, shared: Shared, scratch: Path) -> dict:
    """Every label file of the studies' labels folders: read completely in its image's grid, and
    equal to a mask that was saved (or attempted) for that tag and image: old or new, never torn."""
    from medvl.io import read_mask, read_volume

    volumes = {c.image_id: read_volume(c.path) for c in cases}
    checked, problems = 0, []
    for path in sorted((studies / "labels").rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        image_id, tag = path.name.split(".")[0], path.parent.name
        checked += 1
        try:
            mask = read_mask(path, like=volumes[image_id])
        except Exception as error:  # noqa: BLE001 - any failure to read counts as an incomplete label
            problems.append(f"{tag}/{path.name}: {type(error).__name__}: {str(error)[:200]}")
            continue
        saved = {digest(read_bytes_mask(data, ext, scratch).array) for data, ext, _ in
                 shared.saves.get((tag, image_id), [])}
        if digest(mask.array) not in saved:
            problems.append(f"{tag}/{path.name}: differs from every mask saved for {image_id} with this tag")
    return {"labels_checked": checked, "labels_incomplete": len(problems), "label_problems": problems[:20]}


def _mix() -> dict:
    from medvl.server.bench_load_work import MIX

    return dict(MIX)


def _torch_threads(settings) -> int | None:
    if settings.threads:
        return settings.threads
    try:
        import torch

        return torch.get_num_threads()  # the server's default: the same library on the same machine
    except ImportError:
        return None


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="medvl-bench-load", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    print(json.dumps(run(args), indent=2))  # run() writes --json
    return 0


if __name__ == "__main__":
    sys.exit(main())
