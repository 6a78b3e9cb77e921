"""DICOM Comprehensive 3D SR (TID 1500 Measurement Report) from a `medvl.language.report.Report`.

    write_dicom_sr(report, seg, source, algorithm) -> pydicom Dataset
    read_sr_measurements(path_or_dataset) -> {tracking id: {measurement: value}}, texts

One TID 1410 volumetric ROI group per report object, referencing the object's segment in the SEG
(`ReferencedSegment`: SEG instance + segment number + source series) and tracked by the
segment's TrackingID / TrackingUID. Measurements (TID 1419), each with its UCUM unit:

- "Volume" (SCT 118565006) in mL;
- "Long axis" / "Short axis" (SCT 103339001 / 103340004) in mm: RECIST longest diameter and the
  longest perpendicular to it (lesions only, as in the report);
- intensity "Mean" and "Standard Deviation" (derivations SCT 373098007 / 386136009) of
  "Attenuation Coefficient" (DCM 112031) in HU for CT, of "MR signal intensity" (DCM 110852),
  no units, otherwise.

The finding type is the segment's coded property type; finding site = the lesion's anatomic
region. The impression and the narrative go into a TID 1500 "Qualitative Evaluations" container
as TEXT items ("Impression", "Narrative Summary"). highdicom builds every template with its
checks; values are the report's numbers unrounded (float64 in the DS-free NUM values).
"""

from __future__ import annotations

import logging

from highdicom.sr import CodedConcept

from medvl.dicom.seg import MANUFACTURER, AlgorithmInfo

logger = logging.getLogger(__name__)

ML = CodedConcept("ml", "UCUM", "milliliter")
MM = CodedConcept("mm", "UCUM", "millimeter")
HU = CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")
NO_UNITS = CodedConcept("1", "UCUM", "no units")
VOLUME = CodedConcept("118565006", "SCT", "Volume")
LONG_AXIS = CodedConcept("103339001", "SCT", "Long axis")
SHORT_AXIS = CodedConcept("103340004", "SCT", "Short axis")
MEAN = CodedConcept("373098007", "SCT", "Mean")
SD = CodedConcept("386136009", "SCT", "Standard Deviation")
ATTENUATION = CodedConcept("112031", "DCM", "Attenuation Coefficient")
MR_SIGNAL = CodedConcept("110852", "DCM", "MR signal intensity")
QUALITATIVE = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
IMPRESSION = CodedConcept("121073", "DCM", "Impression")
NARRATIVE = CodedConcept("111412", "DCM", "Narrative Summary")

# what read_sr_measurements calls each measurement (the keys tests compare with the report's facts)
KEYS = {("118565006", None): "volume_ml", ("103339001", None): "long_axis_mm", ("103340004", None): "short_axis_mm",
        ("112031", "373098007"): "mean", ("112031", "386136009"): "sd", ("110852", "373098007"): "mean",
        ("110852", "386136009"): "sd"}


def _measurements(o, modality: str) -> list:
    from highdicom.sr import Measurement

    out = [Measurement(name=VOLUME, value=float(o.volume_ml), unit=ML)]
    if o.long_axis_mm is not None:
        out.append(Measurement(name=LONG_AXIS, value=float(o.long_axis_mm), unit=MM))
        out.append(Measurement(name=SHORT_AXIS, value=float(o.short_axis_mm), unit=MM))
    name, unit = (ATTENUATION, HU) if modality.upper() == "CT" else (MR_SIGNAL, NO_UNITS)
    out.append(Measurement(name=name, value=float(o.mean), unit=unit, derivation=MEAN))
    out.append(Measurement(name=name, value=float(o.sd), unit=unit, derivation=SD))
    return out


def write_dicom_sr(report, seg, source, algorithm: AlgorithmInfo, series_number: int = 301):
    """A Comprehensive 3D SR of `report`; `seg` is the SEG whose segments are the report's objects,
    labelled by their TrackingID = object name (`medvl.dicom.seg.SegmentSpec.tracking_id`);
    `source` the series' slice headers. Objects without a segment raise ImageWriteError."""
    import highdicom as hd
    from highdicom.sr import (ContainerContentItem, DeviceObserverIdentifyingAttributes, FindingSite,
                              MeasurementReport, ObservationContext, ObserverContext, ReferencedSegment,
                              TextContentItem, TrackingIdentifier, VolumetricROIMeasurementsAndQualitativeEvaluations)
    from highdicom.sr.enum import RelationshipTypeValues
    from pydicom.sr.codedict import codes

    from medvl.errors import ImageWriteError

    by_id = {str(s.TrackingID): s for s in seg.SegmentSequence}
    modality = str(report.image.get("modality") or "CT")
    groups = []
    for o in report.objects:
        segment = by_id.get(o.name)
        if segment is None:
            raise ImageWriteError(f"report object {o.name!r} has no segment in the SEG (segments: "
                                  f"{', '.join(by_id) or 'none'}); write the SEG from the same report")
        ref = ReferencedSegment.from_segmentation(seg, int(segment.SegmentNumber))
        finding = CodedConcept.from_dataset(segment.SegmentedPropertyTypeCodeSequence[0])
        sites = [FindingSite(CodedConcept.from_dataset(segment.AnatomicRegionSequence[0]))] \
            if "AnatomicRegionSequence" in segment else None
        groups.append(VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=str(segment.TrackingUID), identifier=o.name),
            referenced_segment=ref, finding_type=finding, finding_sites=sites,
            measurements=_measurements(o, modality)))
    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=MANUFACTURER, manufacturer_name=MANUFACTURER,
            model_name=algorithm.model or algorithm.engine))
    content = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device),
        procedure_reported=codes.cid100.CTUnspecifiedBodyRegion if modality.upper() == "CT" else
        codes.cid100.MRIUnspecifiedBodyRegion,
        imaging_measurements=groups, title=codes.cid7021.ImagingMeasurementReport)
    texts = [(IMPRESSION, report.impression), (NARRATIVE, report.narrative)]
    items = [TextContentItem(name=n, value=t, relationship_type=RelationshipTypeValues.CONTAINS)
             for n, t in texts if t]
    if items:
        container = ContainerContentItem(name=QUALITATIVE, relationship_type=RelationshipTypeValues.CONTAINS)
        container.ContentSequence = items
        content[0].ContentSequence.append(container)
    return hd.sr.Comprehensive3DSR(
        evidence=[*source, seg], content=content[0], series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        is_final=False, is_verified=False, series_description="MedVLSlicer measurement report")


def _code(item, attr: str) -> str | None:
    seq = getattr(item, attr, None)
    return str(seq[0].CodeValue) if seq else None


def read_sr_measurements(path_or_ds) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """({tracking identifier: {"volume_ml", "long_axis_mm", "short_axis_mm", "mean", "sd": value}},
    {"Impression"/"Narrative Summary": text}) read back from an SR written by `write_dicom_sr`."""
    from medvl.dicom.seg import _dataset

    ds = _dataset(path_or_ds)
    values: dict[str, dict[str, float]] = {}
    texts: dict[str, str] = {}

    def walk(items, tracking):
        for item in items:
            name = _code(item, "ConceptNameCodeSequence")
            if item.ValueType == "TEXT" and name == "112039":  # Tracking Identifier
                tracking = str(item.TextValue)
            elif item.ValueType == "TEXT" and name in (IMPRESSION.value, NARRATIVE.value):
                texts[str(item.ConceptNameCodeSequence[0].CodeMeaning)] = str(item.TextValue)
            if "ContentSequence" in item and item.ValueType == "CONTAINER":
                inner = next((str(c.TextValue) for c in item.ContentSequence if c.ValueType == "TEXT"
                              and _code(c, "ConceptNameCodeSequence") == "112039"), tracking)
                walk(item.ContentSequence, inner)
            elif item.ValueType == "NUM" and tracking is not None:
                deriv = next((_code(c, "ConceptCodeSequence") for c in getattr(item, "ContentSequence", [])
                              if _code(c, "ConceptNameCodeSequence") == "121401"), None)
                key = KEYS.get((name, deriv)) or KEYS.get((name, None)) or name
                values.setdefault(tracking, {})[key] = float(item.MeasuredValueSequence[0].FloatingPointValue) \
                    if "FloatingPointValue" in item.MeasuredValueSequence[0] else \
                    float(item.MeasuredValueSequence[0].NumericValue)

    walk(ds.ContentSequence, None)
    return values, texts
