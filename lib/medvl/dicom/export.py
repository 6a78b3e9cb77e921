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
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    present = [v for v in range(1, top + 1) if (labels == v).any()]  # few labels: faster than np.unique's sort
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


def label_file_to_seg(label_path, series_dir, out_path, names: dict[int, str] | None = None,
                      algorithm: AlgorithmInfo | None = None, series_uid: str | None = None) -> Path:
    """A label file (NIfTI/NRRD/MHA: the whole grid, or a crop of it) -> DICOM SEG referencing the series
    in `series_dir` (what a datastore's save_label or the server's output=dicom_seg needs).

    The label is placed on the series' grid by its own geometry (`medvl.geometry`); a label whose
    grid is not a sub-grid of the series' (other spacing, direction, or off the voxel lattice)
    raises GeometryError naming the difference; an empty label raises ImageWriteError.
    """
    from medvl.dicom.series import read_series
    from medvl.errors import GeometryError, ImageWriteError
    from medvl.io import read_mask

    series = read_series(series_dir, series_uid)
    mask = read_mask(label_path)
    geometry = series.geometry
    offset = geometry.physical_to_index(mask.geometry.origin)
    start = np.round(offset).astype(int)
    same_axes = np.allclose(mask.geometry.direction, geometry.direction, atol=1e-4) and \
        np.allclose(mask.geometry.spacing, geometry.spacing, atol=1e-4)
    i0, j0, k0 = (int(v) for v in start)
    kk, jj, ii = mask.array.shape
    k, j, i = series.size_ijk[::-1]
    if not same_axes or np.max(np.abs(offset - start)) > 1e-3 or min(i0, j0, k0) < 0 or \
            k0 + kk > k or j0 + jj > j or i0 + ii > i:
        raise GeometryError(f"{label_path}: the label's grid is not (part of) DICOM series {series.uid}'s: "
                            f"{mask.geometry.describe_difference(geometry)}, shape (k, j, i) {mask.array.shape} "
                            f"at index (i, j, k) {tuple(start)}")
    labels = np.zeros((k, j, i), np.uint8)
    labels[k0:k0 + kk, j0:j0 + jj, i0:i0 + ii] = mask.array
    if not labels.any():
        raise ImageWriteError(f"{label_path} is empty; a DICOM SEG needs at least one segment with voxels")
    seg = write_dicom_seg(labels, series.headers, label_segments(labels, names), algorithm or AlgorithmInfo("medvl"),
                          geometry=geometry)
    return save_dataset(seg, out_path)
