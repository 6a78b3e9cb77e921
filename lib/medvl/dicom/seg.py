"""DICOM SEG out (highdicom) and back in, in the source series' exact geometry.

    write_dicom_seg(labels, source, segments, algorithm) -> pydicom Dataset
    read_dicom_seg(path_or_dataset, like) -> (uint8 (k, j, i) segment numbers, {number: label})

`labels` is a numpy (k, j, i) integer label map (segment n's voxels: `labels == segments[n].value`)
or a bool (k, j, i, S) stack, one mask per segment (overlaps allowed: lungs and the nodule
inside them). `source` is the series' slice headers in ITK index order k (`DicomSeries.headers`,
`medvl.dicom.series.source_headers(volume)`): frame k of the SEG is placed on slice k, so the SEG
references those instances and has their geometry; a `geometry` argument (the mask's) must
equal the headers' (`GeometryError` names the difference otherwise). One segment per object,
coded by `medvl.dicom.codes`; frames only where an object is (highdicom's omit_empty_frames);
algorithm identification MedVLSlicer + engine + model (`AlgorithmInfo`).

The reader places every frame by its ImagePositionPatient through `medvl.geometry` and checks
orientation, pixel spacing and in-plane position against `like`; a SEG that does not fit the
grid raises GeometryError naming what differs. Where segments overlap the lower number wins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import medvl
from medvl.errors import GeometryError, ImageReadError, ImageWriteError
from medvl.geometry import Geometry, geometry_from_dicom, slice_normal

logger = logging.getLogger(__name__)

MANUFACTURER = "MedVLSlicer"


@dataclass(frozen=True)
class SegmentSpec:
    label: str  # SegmentLabel: the object's readable name ("lung nodule", "tumour")
    value: int = 1  # its value in a label map (ignored for a (k, j, i, S) stack)
    name: str = ""  # concept or object name for the codes ("nodule", "left_lung"); "" -> from the label
    kind: str = "unknown"  # "lesion", "anatomy" or "unknown" (the report's kind)
    side: str = ""  # "left" / "right": laterality of a sided structure
    tracking_id: str = ""  # TrackingID (the SR's tracking identifier refers to it); "" -> the label


@dataclass(frozen=True)
class AlgorithmInfo:
    engine: str  # medvl engine name ("litemedsam", "sam2", "hu" for the text solvers' HU rules)
    model: str = ""  # model / checkpoint name ("LiteMedSAM")
    version: str = field(default=medvl.__version__)  # MedVLSlicer version
    interactive: bool = True  # SEMIAUTOMATIC (prompted by a user) or AUTOMATIC (text / batch)

    def sequence(self):
        from highdicom import AlgorithmIdentificationSequence
        from highdicom.sr import CodedConcept

        params = {"engine": self.engine, **({"model": self.model} if self.model else {})}
        family = CodedConcept("123110", "DCM", "Artificial Intelligence")  # CID 7162
        return AlgorithmIdentificationSequence(name=MANUFACTURER, family=family,
                                               version=self.version, source=MANUFACTURER, parameters=params)


def headers_geometry(source) -> Geometry:
    """Geometry of slice headers given in index order k (checked: one regular stack along the normal)."""
    if len(source) < 1:
        raise ImageWriteError("a DICOM SEG needs the source series' slice headers; got none")
    first = source[0]
    orientation = [float(v) for v in first.ImageOrientationPatient]
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in source])
    along = positions @ slice_normal(orientation)
    gaps = np.diff(along)
    if gaps.size and (np.any(gaps <= 0) or np.ptp(gaps) > 0.01 * float(np.median(gaps))):
        raise GeometryError("source slice headers are not in index order k along the slice normal; pass "
                            "DicomSeries.headers (medvl.dicom.series) in its order")
    gap = float(np.mean(gaps)) if gaps.size else float(getattr(first, "SliceThickness", 1.0) or 1.0)
    return geometry_from_dicom(orientation, positions[0], [float(v) for v in first.PixelSpacing], gap)


def _stack(labels: np.ndarray, segments) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 3:
        return np.stack([labels == s.value for s in segments], axis=-1)
    if labels.ndim == 4 and labels.shape[-1] == len(segments):
        return labels.astype(bool, copy=False)
    raise ImageWriteError(f"labels must be a (k, j, i) label map or a (k, j, i, {len(segments)}) mask stack, "
                          f"got shape {labels.shape}")


def write_dicom_seg(labels: np.ndarray, source, segments, algorithm: AlgorithmInfo, geometry: Geometry | None = None,
                    series_number: int = 300, description: str = "MedVLSlicer segmentation"):
    """A DICOM SEG (pydicom Dataset) of `labels` on the `source` slices; see the module docstring.

    Raises ImageWriteError (no segments, an empty segment, a shape that is not the series')
    and GeometryError (the mask's geometry is not the series').
    """
    import highdicom as hd
    from highdicom.seg import SegmentAlgorithmTypeValues, SegmentDescription

    from medvl.dicom.codes import segment_codes

    segments = list(segments)
    if not segments:
        raise ImageWriteError("no segments to write: the DICOM SEG needs at least one non-empty object")
    source = list(source)
    stack = _stack(labels, segments)
    expected = (len(source), int(source[0].Rows), int(source[0].Columns))
    if stack.shape[:3] != expected:
        raise ImageWriteError(f"mask shape (k, j, i) {stack.shape[:3]} is not the source series' {expected}")
    if geometry is not None:
        series_geometry = headers_geometry(source)
        if not geometry.same_as(series_geometry, tol=1e-3):
            raise GeometryError(f"the mask's geometry is not the DICOM series': "
                                f"{geometry.describe_difference(series_geometry)}")
    empty = [s.label for n, s in enumerate(segments) if not stack[..., n].any()]
    if empty:
        raise ImageWriteError(f"segment(s) {', '.join(map(repr, empty))} have no voxels; leave them out of the SEG")
    algo_type = SegmentAlgorithmTypeValues.SEMIAUTOMATIC if algorithm.interactive else \
        SegmentAlgorithmTypeValues.AUTOMATIC
    descriptions = []
    for number, spec in enumerate(segments, start=1):
        codes = segment_codes(spec.name or spec.label, spec.kind, spec.side, spec.label)
        desc = SegmentDescription(
            segment_number=number, segment_label=spec.label[:64], segmented_property_category=codes.category,
            segmented_property_type=codes.type, algorithm_type=algo_type,
            algorithm_identification=algorithm.sequence(), tracking_uid=hd.UID(),
            tracking_id=(spec.tracking_id or spec.label)[:64],
            anatomic_regions=[codes.region] if codes.region is not None else None)
        if codes.modifier is not None:
            desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [codes.modifier]
        descriptions.append(desc)
    seg = hd.seg.Segmentation(
        source_images=source, pixel_array=stack.astype(np.uint8), segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.model or algorithm.engine, software_versions=algorithm.version,
        device_serial_number="0", content_description=description[:64], content_label="MEDVL_SEG",
        omit_empty_frames=True)
    logger.debug("DICOM SEG: %d segments, %d frames", len(segments), int(seg.NumberOfFrames))
    return seg


def save_dataset(ds, path) -> Path:
    """Write a DICOM dataset atomically (temp file in the folder, then rename)."""
    import os
    import uuid

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(str(tmp), write_like_original=False)
        os.replace(tmp, path)
    except OSError as exc:
        raise ImageWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _dataset(path_or_ds):
    import pydicom

    if isinstance(path_or_ds, (str, Path)):
        try:
            return pydicom.dcmread(str(path_or_ds))
        except (OSError, pydicom.errors.InvalidDicomError) as err:
            raise ImageReadError(f"{path_or_ds} is not a readable DICOM file: {err}") from None
    return path_or_ds


def read_dicom_seg(path_or_ds, like) -> tuple[np.ndarray, dict[int, str]]:
    """A SEG's segments on the grid of `like` (a Volume, or (Geometry, shape (k, j, i))).

    Returns (uint8 (k, j, i) array of segment numbers, 0 outside every segment; {number: SegmentLabel}).
    """
    ds = _dataset(path_or_ds)
    if str(getattr(ds, "Modality", "")) != "SEG":
        raise ImageReadError(f"{getattr(ds, 'filename', 'dataset')} is not a DICOM SEG (Modality "
                             f"{getattr(ds, 'Modality', None)!r})")
    geometry, shape = (like.geometry, like.array.shape) if hasattr(like, "geometry") else like
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    want = geometry.direction_matrix
    if not np.allclose(orientation, [*want[:, 0], *want[:, 1]], atol=1e-4):
        raise GeometryError(f"SEG orientation {orientation} is not the image's {[*want[:, 0], *want[:, 1]]}")
    if not np.allclose(spacing, [geometry.spacing[1], geometry.spacing[0]], atol=1e-4):
        raise GeometryError(f"SEG pixel spacing {spacing} is not the image's {list(geometry.spacing[1::-1])}")
    if (int(ds.Rows), int(ds.Columns)) != tuple(shape[1:]):
        raise GeometryError(f"SEG frames are {ds.Rows}x{ds.Columns}, the image's slices {shape[1]}x{shape[2]}")
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    out = np.zeros(shape, np.uint8)
    for frame, group in zip(pixels, ds.PerFrameFunctionalGroupsSequence):
        position = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        ijk = geometry.physical_to_index(position)
        k = int(round(ijk[2]))
        if np.max(np.abs(ijk - [0, 0, k])) > 1e-3 or not 0 <= k < shape[0]:
            raise GeometryError(f"SEG frame at {position} is not on a slice of the image (index {ijk.round(4)})")
        sl = out[k]
        sl[(frame > 0) & ((sl == 0) | (sl > number))] = number
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    return out, names
