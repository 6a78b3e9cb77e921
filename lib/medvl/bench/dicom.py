"""`medvl bench-dicom --json OUT`: DICOM in and out on sample_data lung2, as one JSON.

lung2 (512 x 512 x 61 CT) is written as a DICOM CT series (files in shuffled order, unsigned 16 bit
with RescaleIntercept -1024: `medvl.bench.dicom_series`), then:
- read back by our checked series reader: pixels and geometry against the NIfTI;
- the expert label -> DICOM SEG (`medvl.dicom`), timed against writing the same label as NIfTI
  (side by side, `--repeats` times each, medians), read back by our reader, highdicom and pydicom-seg;
- a box on the label's largest axial slice -> LiteMedSAM with propagation -> SEG -> read back
  (the click -> DICOM SEG goal), Dice to the expert label;
- a report of the tumour -> Comprehensive 3D SR (TID 1500) -> its measurements read back against
  the report's numbers;
- three broken series (a missing slice, a single frame, two series in one folder): the one-line errors.
The machine's fp32 matmul peak is measured in the same run.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from medvl.bench import emit_json

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "sample_data"


def add_arguments(parser) -> None:
    parser.add_argument("--json", metavar="OUT", help="also write the JSON here")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each write (default 3)")
    parser.add_argument("--no-click", action="store_true", help="skip the LiteMedSAM click (no model run)")


def _timed(fn, repeats: int) -> tuple[float, object]:
    runs, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t0)
    return round(statistics.median(runs), 4), out


def _readback(path, volume, want: np.ndarray) -> dict:
    from medvl.bench.dicom_series import read_with_highdicom, read_with_pydicom_seg
    from medvl.dicom.seg import read_dicom_seg
    from medvl.dicom.series import source_headers

    ours, _ = read_dicom_seg(path, volume)
    return {"ours": bool(np.array_equal(ours, want)),
            "highdicom": bool(np.array_equal(read_with_highdicom(path, source_headers(volume)), want)),
            "pydicom_seg": bool(np.array_equal(read_with_pydicom_seg(path, volume.geometry, want.shape), want))}


def _error_line(fn) -> str:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the message is what is measured
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def _broken_series(work: Path, image) -> dict:
    from medvl.bench.dicom_series import write_series
    from medvl.io import read_volume

    crop = image.array[20:26, 200:264, 200:264]
    write_series(work / "missing", crop, image.geometry, skip=(3,))
    write_series(work / "single", crop[:1], image.geometry)
    write_series(work / "two", crop, image.geometry, description="first")
    for f in write_series(work / "second", crop[:4], image.geometry, description="second"):
        f.rename(work / "two" / f"second_{f.name}")
    return {name: _error_line(lambda n=name: read_volume(work / n)) for name in ("missing", "single", "two")}


def run(args) -> dict:
    from medvl.bench.dicom_series import write_series
    from medvl.bench.machine import matmul_gflops
    from medvl.dicom.export import write_labels_seg, write_report_dicom
    from medvl.dicom.seg import AlgorithmInfo
    from medvl.dicom.sr import read_sr_measurements
    from medvl.io import read_mask, read_volume, write_mask
    from medvl.language.report import build_report
    from medvl.metrics import dice
    from medvl.slicing import bbox2d

    out = {"benchmark": "bench-dicom", "data": "sample_data lung2 (512x512x61 CT) as a 61-slice DICOM series",
           "machine": {"matmul_gflops_fp32": round(matmul_gflops(2048), 1)}}
    nifti = read_volume(SAMPLE_DIR / "lung2_image.nii.gz")
    label = read_mask(SAMPLE_DIR / "lung2_label.nii.gz", like=nifti).array > 0
    work = Path(tempfile.mkdtemp(prefix="medvl-bench-dicom-"))
    try:
        t0 = time.perf_counter()
        write_series(work / "ct", nifti.array, nifti.geometry, order="shuffled", unsigned=True)
        out["series_write_s"] = round(time.perf_counter() - t0, 3)
        read_s, volume = _timed(lambda: read_volume(work / "ct"), args.repeats)
        out["series_read"] = {"seconds": read_s, "pixels_equal": bool(np.array_equal(volume.array, nifti.array)),
                              "geometry_equal": bool(volume.geometry.same_as(nifti.geometry, tol=1e-6))}
        labels = label.astype(np.uint8)
        algo = AlgorithmInfo("expert", "sample_data label")
        seg_s, seg = _timed(lambda: write_labels_seg(work / "label.dcm", labels, volume, {1: "tumour"}, algo),
                            args.repeats)
        nii_s, _ = _timed(lambda: write_mask(work / "label.nii.gz", labels, like=volume), args.repeats)
        out["expert_label_seg"] = {"seg_write_s": seg_s, "nifti_write_s": nii_s,
                                   "seg_over_nifti": round(seg_s / nii_s, 2), "seg_bytes": seg.stat().st_size,
                                   "voxels": int(labels.sum()), "slices": int(labels.any(axis=(1, 2)).sum()),
                                   "voxel_exact": _readback(seg, volume, labels)}
        if not args.no_click:
            from medvl.session import VolumeSession

            k = int(np.argmax(label.sum(axis=(1, 2))))
            x0, y0, x1, y1 = bbox2d(label[k])
            session = VolumeSession("litemedsam")
            session.set_volume(volume)
            t0 = time.perf_counter()
            session.add_box((x0, y0, k), (x1, y1, k))
            session.run_propagation(1)
            mask = session.labels()
            t_seg = time.perf_counter() - t0
            write_mask(work / "click.nii.gz", mask, like=volume)
            t0 = time.perf_counter()
            path = write_labels_seg(work / "click.dcm", mask, volume, {1: "tumour"}, AlgorithmInfo("litemedsam"))
            t_dcm = time.perf_counter() - t0
            back = read_mask(work / "click.nii.gz").array
            out["box_click_seg"] = {"slice_k": k, "box_xy": [int(x0), int(y0), int(x1), int(y1)],
                                    "dice_to_expert": round(dice(mask > 0, label), 4),
                                    "segment_s": round(t_seg, 2), "seg_write_s": round(t_dcm, 3),
                                    "voxel_exact_vs_nifti": _readback(path, volume, back)}
        report = build_report(volume, {"tumour": label}, kinds={"tumour": "lesion"})
        t0 = time.perf_counter()
        paths = write_report_dicom(report, volume, work / "report.dcm", AlgorithmInfo("expert", interactive=False))
        sr_s = time.perf_counter() - t0
        values, _ = read_sr_measurements(paths["sr"])
        o = report.objects[0]
        want = {"volume_ml": o.volume_ml, "mean": o.mean, "sd": o.sd, "long_axis_mm": o.long_axis_mm,
                "short_axis_mm": o.short_axis_mm}
        out["report_sr"] = {"sr_and_seg_write_s": round(sr_s, 3), "report": want, "sr": values.get("tumour"),
                            "equal": values.get("tumour") == want}
        out["broken_series_errors"] = _broken_series(work, nifti)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["goals"] = {
        "series_round_trip": out["series_read"]["pixels_equal"] and out["series_read"]["geometry_equal"],
        "seg_voxel_exact_all_readers": all(out["expert_label_seg"]["voxel_exact"].values())
        and all(out.get("box_click_seg", {}).get("voxel_exact_vs_nifti", {True: True}).values()),
        "sr_equals_report": out["report_sr"]["equal"],
        "broken_series_one_line": all(v != "no error" and "\n" not in v for v in out["broken_series_errors"].values()),
    }
    return out


def main(args) -> int:
    result = run(args)
    print(emit_json(result, args.json))
    return 0 if all(result["goals"].values()) else 1
