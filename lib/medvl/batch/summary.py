"""`summary.csv` and `summary.parquet`: one row per volume and object, from the published `status.json` files.

The table is rebuilt from disk (the one source of truth) at the end of every run, resumed or
not, so it always lists each volume exactly once with its latest result. Columns are flat
(lists joined as "a;b;c") so the CSV and the Parquet file hold the same table; a volume with
no object (failed, or refused before any object) has one row with empty object columns.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from medvl.batch.annotator import FACT_KEYS
from medvl.batch.publish import read_status

VOLUME_COLUMNS = ("case_id", "source", "volume_status", "volume_reason", "modality", "seconds")
OBJECT_COLUMNS = ("label", "object", "prompt", "object_status", "object_reason", *FACT_KEYS)
COLUMNS = VOLUME_COLUMNS + OBJECT_COLUMNS
NUMERIC = {"seconds", "label", "voxels", "volume_ml", "long_axis_mm", "short_axis_mm", "axis_slice_k", "mean", "sd"}


def _flat(value):
    if isinstance(value, (list, tuple)):
        return ";".join(str(round(v, 3) if isinstance(v, float) else v) for v in value)
    return value


def rows_for(case_id: str, status: dict | None) -> list[dict]:
    if status is None:
        return [{"case_id": case_id, "volume_status": "missing",
                 "volume_reason": "no status.json: not run yet (interrupted batch)"}]
    base = {"case_id": case_id, "source": status.get("source"), "volume_status": status.get("status"),
            "volume_reason": status.get("reason", ""), "modality": (status.get("image") or {}).get("modality"),
            "seconds": (status.get("timings_s") or {}).get("total")}
    objects = status.get("objects") or []
    if not objects:
        return [base]
    out = []
    for o in objects:
        row = dict(base, label=o.get("label"), object=o.get("name"), prompt=o.get("prompt"),
                   object_status=o.get("status"), object_reason=o.get("reason", ""))
        row.update({k: _flat(v) for k, v in (o.get("facts") or {}).items()})
        out.append(row)
    return out


def build_rows(out_dir: Path, case_ids) -> list[dict]:
    rows = []
    for cid in case_ids:
        rows += rows_for(cid, read_status(Path(out_dir) / cid))
    return rows


def write_summary(out_dir: Path, case_ids) -> dict[str, Path]:
    """Write summary.csv and summary.parquet atomically; -> their paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    rows = build_rows(out_dir, case_ids)
    csv_path, pq_path = out_dir / "summary.csv", out_dir / "summary.parquet"
    tmp_csv = csv_path.with_name(f".summary.csv.tmp-{os.getpid()}")
    with open(tmp_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp_csv, csv_path)
    columns = {}
    for c in COLUMNS:
        values = [r.get(c) for r in rows]
        if c in NUMERIC:
            columns[c] = pa.array([None if v in (None, "") else float(v) for v in values], pa.float64())
        else:
            columns[c] = pa.array([None if v is None else str(v) for v in values], pa.string())
    tmp_pq = pq_path.with_name(f".summary.parquet.tmp-{os.getpid()}")
    pq.write_table(pa.table(columns), tmp_pq)
    os.replace(tmp_pq, pq_path)
    return {"csv": csv_path, "parquet": pq_path}
