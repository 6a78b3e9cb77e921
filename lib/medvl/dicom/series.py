"""A DICOM series folder: its slices' headers sorted along the slice normal, checked, with its geometry.

`read_series(folder, series_uid=None)` reads every file's header with pydicom (no pixel data),
groups image slices by SeriesInstanceUID and returns the chosen series as a `DicomSeries`:
files and headers in ITK index order k (sorted by position along row x column, the order
SimpleITK reads them), the geometry (`medvl.geometry.geometry_from_dicom`), and the checks
that make a volume out of slices. A series that is not one regular stack raises
`DicomSeriesError`, one line naming the folder, the series UID and the problem:

- a single frame (one slice), a multi-frame (enhanced) object in a slice folder;
- slices whose orientation, pixel spacing or size differ from the first;
- two slices at one position, slices not stacked along the normal (gantry tilt);
- uneven gaps between slices: a missing slice (a gap about twice the others) or irregular spacing.

A folder holding several image series is never read silently: `SeveralSeriesError` lists
them (UID, description, slice count) and asks for `--series UID`. Non-image objects (SEG,
SR, presentation states: no ImagePositionPatient) are skipped, so a SEG written into the
series folder does not make it ambiguous. The headers keep what a SEG or SR needs to
reference the source images (`medvl.dicom.seg`, `medvl.dicom.sr`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medvl.errors import ImageReadError
from medvl.geometry import Geometry, geometry_from_dicom, slice_normal

logger = logging.getLogger(__name__)

GAP_TOLERANCE = 0.01  # relative: gaps between slices may differ by 1 % (rounding in the position strings)
ANGLE_TOLERANCE = 1e-4  # direction cosines that differ by more belong to another orientation
_NON_IMAGE = {"SEG", "SR", "PR", "KO", "RTSTRUCT", "DOC", "REG"}


class DicomSeriesError(ImageReadError):
    """A DICOM folder whose series is not one regular 3D stack (missing slice, uneven gaps, ...)."""


class SeveralSeriesError(DicomSeriesError):
    """A folder with several image series and no `--series UID` to pick one; `.series` lists them."""

    def __init__(self, message: str, series: list["SeriesSummary"]):
        super().__init__(message)
        self.series = series


@dataclass(frozen=True)
class SeriesSummary:
    uid: str  # SeriesInstanceUID
    description: str  # SeriesDescription ("" when absent)
    modality: str  # (0008,0060)
    slices: int  # image files of this series in the folder

    def describe(self) -> str:
        desc = f" {self.description!r}" if self.description else ""
        return f"{self.uid}{desc} ({self.modality}, {self.slices} slice{'s' if self.slices != 1 else ''})"


@dataclass
class DicomSeries:
    folder: Path  # the folder it was read from
    uid: str  # SeriesInstanceUID
    files: list[Path]  # one file per slice, in ITK index order k (ascending along the slice normal)
    headers: list = field(repr=False)  # pydicom Datasets of those files, same order, without pixel data
    geometry: Geometry  # origin = first slice's ImagePositionPatient; i, j, k = row, column, normal
    description: str = ""
    modality: str = ""

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        h = self.headers[0]
        return int(h.Columns), int(h.Rows), len(self.files)

    def summary(self) -> SeriesSummary:
        return SeriesSummary(self.uid, self.description, self.modality, len(self.files))


def _read_header(path: Path):
    """The file's header, or None when it is not DICOM. Files named .dcm/.ima or without a suffix
    are also read without the 128-byte preamble (old slices); other names must have it."""
    import warnings

    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except InvalidDicomError:
        if path.suffix.lower() not in ("", ".dcm", ".ima"):
            return None
    except Exception:  # noqa: BLE001 - whatever pydicom cannot parse is no slice
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001
        return None


def _headers(folder: Path) -> list[tuple[Path, object]]:
    out = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        ds = _read_header(path)
        if ds is None:
            continue
        try:
            if "SeriesInstanceUID" in ds and str(ds.SeriesInstanceUID):
                out.append((path, ds))
        except Exception:  # noqa: BLE001 - a forced read of a non-DICOM file can fail on first access
            continue
    return out


def _is_image(ds) -> bool:
    return str(getattr(ds, "Modality", "")).upper() not in _NON_IMAGE and "ImagePositionPatient" in ds


def list_series(folder) -> list[SeriesSummary]:
    """The image series in `folder` (not recursive), largest first."""
    groups = _group(Path(folder), _headers(Path(folder)))
    return sorted((_summary(uid, items) for uid, items in groups.items()), key=lambda s: (-s.slices, s.uid))


def _group(folder: Path, headers) -> dict[str, list]:
    groups: dict[str, list] = {}
    for path, ds in headers:
        if _is_image(ds):
            groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
        else:
            logger.debug("%s: skipping non-image object %s (%s)", folder, path.name, getattr(ds, "Modality", "?"))
    return groups


def _summary(uid: str, items) -> SeriesSummary:
    ds = items[0][1]
    return SeriesSummary(uid, str(getattr(ds, "SeriesDescription", "") or "").strip(),
                         str(getattr(ds, "Modality", "") or "").upper(), len(items))


def read_series(folder, series_uid: str | None = None) -> DicomSeries:
    """The (checked) image series of `folder`; `series_uid` picks one when there are several.

    Raises ImageReadError when the folder has no DICOM image series, SeveralSeriesError when it
    has several and `series_uid` is None (or names none of them), DicomSeriesError for a
    series that is not a regular stack (see the module docstring).
    """
    folder = Path(folder)
    groups = _group(folder, _headers(folder))
    if not groups:
        raise ImageReadError(f"{folder} is a folder without a DICOM series; give a file or a DICOM folder")
    summaries = sorted((_summary(uid, items) for uid, items in groups.items()), key=lambda s: (-s.slices, s.uid))
    if series_uid is not None and series_uid not in groups:
        raise SeveralSeriesError(f"{folder} has no DICOM series {series_uid}; it holds: "
                                 f"{'; '.join(s.describe() for s in summaries)}", summaries)
    if series_uid is None and len(groups) > 1:
        raise SeveralSeriesError(f"{folder} holds {len(groups)} DICOM series: "
                                 f"{'; '.join(s.describe() for s in summaries)}; pick one with --series UID",
                                 summaries)
    uid = series_uid or next(iter(groups))
    return _stack(folder, uid, groups[uid])


def _fail(folder: Path, uid: str, problem: str):
    raise DicomSeriesError(f"{folder}: DICOM series {uid} {problem}")


def _floats(ds, keyword: str, count: int, folder: Path, uid: str, path: Path) -> np.ndarray:
    value = getattr(ds, keyword, None)
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        arr = np.zeros(0)
    if arr.size != count:
        _fail(folder, uid, f"has no valid {keyword} in {path.name}; MedVL needs it to place the slice")
    return arr


def _stack(folder: Path, uid: str, items) -> DicomSeries:
    """Sort the slices along the normal and check that they form one regular 3D grid."""
    first_path, first = items[0]
    frames = int(getattr(first, "NumberOfFrames", 1) or 1)
    if frames > 1:
        _fail(folder, uid, f"is a multi-frame object ({frames} frames in {first_path.name}); MedVL reads "
                           "single-frame slice series: convert it (e.g. dcmtk/dicom3tools) or give the file")
    if len(items) == 1:
        _fail(folder, uid, "has a single frame (1 slice); MedVL needs a 3D series of at least 2 slices")
    orientation = _floats(first, "ImageOrientationPatient", 6, folder, uid, first_path)
    spacing = _floats(first, "PixelSpacing", 2, folder, uid, first_path)
    size = (int(first.Rows), int(first.Columns))
    normal = slice_normal(orientation)
    positions = []
    for path, ds in items:
        o = _floats(ds, "ImageOrientationPatient", 6, folder, uid, path)
        if not np.allclose(o, orientation, atol=ANGLE_TOLERANCE):
            _fail(folder, uid, f"has inconsistent orientation: {path.name} is {_fmt(o)}, {first_path.name} "
                               f"{_fmt(orientation)}")
        s = _floats(ds, "PixelSpacing", 2, folder, uid, path)
        if not np.allclose(s, spacing, rtol=0, atol=1e-4):
            _fail(folder, uid, f"has inconsistent pixel spacing: {path.name} is {_fmt(s)} mm, {first_path.name} "
                               f"{_fmt(spacing)} mm")
        if (int(ds.Rows), int(ds.Columns)) != size:
            _fail(folder, uid, f"has slices of different sizes: {path.name} is {ds.Rows}x{ds.Columns}, "
                               f"{first_path.name} {size[0]}x{size[1]} (rows x columns)")
        positions.append(_floats(ds, "ImagePositionPatient", 3, folder, uid, path))
    positions = np.asarray(positions)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along, positions = along[order], positions[order]
    items = [items[n] for n in order]
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        n = int(np.argmin(gaps))
        _fail(folder, uid, f"has two slices at the same position ({items[n][0].name} and {items[n + 1][0].name} "
                           f"at {along[n]:.3f} mm along the normal): duplicate or a second acquisition in one series")
    offsets = positions - positions[0] - np.outer(along - along[0], normal)
    if np.max(np.linalg.norm(offsets, axis=1)) > max(1e-3, 0.01 * float(np.min(spacing))):
        _fail(folder, uid, "has slices that are not stacked along their normal (gantry tilt or shifted slices); "
                           "resample it to a regular grid first")
    step = float(np.median(gaps))
    if np.max(np.abs(gaps - step)) > GAP_TOLERANCE * step:
        n = int(np.argmax(np.abs(gaps - step)))
        where = f"between {items[n][0].name} and {items[n + 1][0].name}"
        ratio = gaps[n] / step
        if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1:  # a whole number of steps: slices left out
            missing = int(round(ratio)) - 1
            _fail(folder, uid, f"has missing slices: a gap of {gaps[n]:.3g} mm {where} where the others are "
                               f"{step:.3g} mm (about {missing} slice{'s' if missing != 1 else ''} missing)")
        _fail(folder, uid, f"has uneven slice spacing: gaps from {gaps.min():.3g} to {gaps.max():.3g} mm "
                           f"(e.g. {gaps[n]:.3g} mm {where}); MedVL needs evenly spaced slices")
    geometry = geometry_from_dicom(orientation, positions[0], spacing, float(np.mean(gaps)))
    summary = _summary(uid, items)
    return DicomSeries(folder=folder, uid=uid, files=[p for p, _ in items], headers=[ds for _, ds in items],
                       geometry=geometry, description=summary.description, modality=summary.modality)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def source_headers(volume) -> list:
    """The slice headers (pydicom Datasets, ITK order k) of a Volume read from a DICOM folder.

    Raises ImageReadError naming the image when it was not read from a DICOM series folder.
    """
    files = volume.meta.get("dicom_files")
    if not files:
        raise ImageReadError(f"{volume.meta.get('path', volume.name)} is not a DICOM series folder; DICOM SEG and "
                             "SR reference their source images: give the DICOM folder as the image")
    import pydicom

    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
