"""What the entry points call: a label map or a report of a DICOM-read Volume -> SEG (+ SR) files.

    write_labels_seg(path, labels, volume, names, algorithm)       # medvl segment, batch, server
    write_report_dicom(report, volume, sr_path, algorithm)          # medvl report --dicom-sr
    is_dicom_volume(volume)

`volume` must come from `medvl.io.read_volume` on a DICOM series folder (its
`meta["dicom_files"]` name the slices the SEG references); otherwise ImageReadError says to give
the DICOM folder. `labels` is numpy (k, j, i) on the volume's grid; `names` maps each label value
to its object name (values without voxels are left out of the SEG).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medvl.dicom.seg import AlgorithmInfo, SegmentSpec, save_dataset, write_dicom_seg
from medvl.dicom.series import source_headers


def is_dicom_volume(volume) -> bool:
    """True when `volume` was read from a DICOM series folder (a SEG can reference it)."""
    return bool(volume.meta.get("dicom_files"))


def label_segments(labels: np.ndarray, names: dict[int, str] | None = None, kinds: dict[str, str] | None = None
                   ) -> list[SegmentSpec]:
    """One SegmentSpec per label value present in `labels` (ascending), named from `names`."""
    counts = np.bincount(np.asarray(labels).ravel().astype(np.intp, copy=False))  # np.unique sorts: 10x slower
    present = [int(v) for v in np.flatnonzero(counts) if v != 0]
    names = names or {}
    out = []
    for v in present:
        name = names.get(v) or f"object {v}"
        out.append(SegmentSpec(label=name, value=v, name=name, kind=(kinds or {}).get(name, "unknown"),
                               tracking_id=name))
    return out


def write_labels_seg(path, labels: np.ndarray, volume, names: dict[int, str] | None, algorithm: AlgorithmInfo,
                     kinds: dict[str, str] | None = None) -> Path:
    """Write the label map as a DICOM SEG referencing the volume's series; returns the path."""
    source = source_headers(volume)
    segments = label_segments(labels, names, kinds)
    seg = write_dicom_seg(labels, source, segments, algorithm, geometry=volume.geometry)
    return save_dataset(seg, path)


def report_segments(report) -> tuple[np.ndarray, list[SegmentSpec]]:
    """(bool (k, j, i, S) masks, specs) of a report's objects, in report order; overlaps kept."""
    specs, masks = [], []
    for o in report.objects:
        specs.append(SegmentSpec(label=o.label, name=o.name, kind=o.kind, side=o.side, tracking_id=o.name))
        masks.append(report.masks[o.name])
    return np.stack(masks, axis=-1), specs


def write_report_dicom(report, volume, sr_path, algorithm: AlgorithmInfo, seg_path=None) -> dict[str, Path]:
    """The report's SEG (`seg_path`, default: SR_NAME.seg.dcm next to the SR) and its SR."""
    from medvl.dicom.sr import write_dicom_sr
    from medvl.errors import ImageWriteError

    if not report.objects:
        raise ImageWriteError("the report has no objects to store in a DICOM SEG/SR; give --mask or --text")
    sr_path = Path(sr_path)
    seg_path = Path(seg_path) if seg_path else sr_path.with_name(sr_path.name.removesuffix(".dcm") + ".seg.dcm")
    source = source_headers(volume)
    stack, specs = report_segments(report)
    seg = write_dicom_seg(stack, source, specs, algorithm, geometry=volume.geometry)
    sr = write_dicom_sr(report, seg, source, algorithm)
    return {"seg": save_dataset(seg, seg_path), "sr": save_dataset(sr, sr_path)}


def require_dicom(volume, out) -> None:
    """ImageReadError (one line) unless `volume` was read from a DICOM series folder (checked before model work)."""
    from medvl.errors import ImageReadError

    if not is_dicom_volume(volume):
        raise ImageReadError(f"{out}: a DICOM SEG references its source images, but {volume.meta.get('path')} is "
                             f"not a DICOM series folder ({volume.meta.get('format')}); give the DICOM folder, or "
                             "write .nii.gz/.nrrd/.mha")
