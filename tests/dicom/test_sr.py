"""medvl.dicom.sr: a report -> SEG + Comprehensive 3D SR (TID 1500); values read back equal the report's."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from medvl.cli import main
from medvl.dicom.export import write_report_dicom
from medvl.dicom.seg import AlgorithmInfo, read_dicom_seg
from medvl.dicom.sr import read_sr_measurements
from medvl.geometry import Geometry
from medvl.io import read_volume, write_mask
from medvl.language.report import build_report
from tests.dicom.conftest import requires_lung2
from medvl.bench.dicom_series import write_series

CROP = np.s_[12:28, 316:412, 304:416]  # lung2's tumour (slices 15-25) with a margin: 16 x 96 x 112


@pytest.fixture(scope="module")
def crop(lung2, tmp_path_factory):
    """(DICOM-read Volume, tumour mask) of a lung2 crop written as a DICOM CT series."""
    image, label = lung2
    k, j, i = (s.start for s in CROP)
    geometry = Geometry(image.geometry.index_to_physical((i, j, k)), image.geometry.spacing, image.geometry.direction)
    folder = tmp_path_factory.mktemp("crop") / "ct"
    write_series(folder, image.array[CROP], geometry, order="reversed")
    return read_volume(folder), label.array[CROP] > 0


@requires_lung2
def test_sr_values_equal_the_report(crop, tmp_path):
    import highdicom as hd

    volume, tumour = crop
    region = np.zeros_like(tumour)
    region[2:4, 5:20, 5:30] = True  # a second object, overlapping nothing, not a lesion
    report = build_report(volume, {"tumour": tumour, "box": region}, kinds={"tumour": "lesion", "box": "unknown"})
    paths = write_report_dicom(report, volume, tmp_path / "report.dcm", AlgorithmInfo("hu", interactive=False))
    assert paths["seg"].name == "report.seg.dcm"
    values, texts = read_sr_measurements(paths["sr"])
    for o in report.objects:
        want = {"volume_ml": o.volume_ml, "mean": o.mean, "sd": o.sd}
        if o.kind == "lesion":
            want.update(long_axis_mm=o.long_axis_mm, short_axis_mm=o.short_axis_mm)
        assert values[o.name] == want  # exact: FloatingPointValue keeps the float64
    assert texts == {"Impression": report.impression, "Narrative Summary": report.narrative}
    # highdicom reads it back through its TID 1500 template classes
    sr = hd.sr.srread(str(paths["sr"]))
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR Storage
    groups = sr.content.get_volumetric_roi_measurement_groups()
    seg = pydicom.dcmread(str(paths["seg"]))
    by_number = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert len(groups) == 2
    for group in groups:
        ref = group.referenced_segment
        (number,) = ref.referenced_segment_numbers
        assert str(group.tracking_identifier) == by_number[number].TrackingID
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        units = {m.name.meaning: m.unit.value for m in group.get_measurements()}
        assert units["Volume"] == "ml" and units["Attenuation Coefficient"] == "[hnsf'U]"
    tumour_group = next(g for g in groups if str(g.tracking_identifier) == "tumour")
    assert tumour_group.finding_type.value == "4147007"  # a 55 mm lesion: "Mass" (lung mass)
    # the SR's evidence lists the CT series and the SEG
    evidence = {s.SeriesInstanceUID for e in sr.CurrentRequestedProcedureEvidenceSequence
                for s in e.ReferencedSeriesSequence}
    assert evidence == {volume.name, seg.SeriesInstanceUID}
    labels, names = read_dicom_seg(seg, volume)
    np.testing.assert_array_equal(labels == 1, tumour)
    np.testing.assert_array_equal(labels == 2, region)


@requires_lung2
def test_cli_report_dicom_sr(crop, tmp_path, capsys):
    volume, tumour = crop
    write_mask(tmp_path / "tumour.nii.gz", tumour, like=volume)
    folder = volume.meta["path"]
    code = main(["report", folder, "--mask", str(tmp_path / "tumour.nii.gz"), "--out", str(tmp_path / "r"),
                 "--dicom-sr", str(tmp_path / "r" / "findings.dcm"), "--refine", "hu"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["files"]["dicom_seg"].endswith("findings.seg.dcm")
    facts = json.loads((tmp_path / "r" / "report.json").read_text())["objects"]
    values, _ = read_sr_measurements(tmp_path / "r" / "findings.dcm")
    assert {f["name"]: f["volume_ml"] for f in facts} == {k: v["volume_ml"] for k, v in values.items()}
    assert all(values[f["name"]]["mean"] == f["mean"] for f in facts)
    # not a DICOM image: one line, non-zero, before any work
    code = main(["report", str(tmp_path / "tumour.nii.gz"), "--out", str(tmp_path / "r2"), "--dicom-sr",
                 str(tmp_path / "x.dcm")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "is not a DICOM series folder" in err and not (tmp_path / "r2").exists()


def test_mr_report_uses_signal_intensity_without_units(tmp_path):
    from tests.conftest import make_synthetic_volume

    synthetic = make_synthetic_volume(shape_kji=(6, 16, 16), modality="MR", seed=7)
    write_series(tmp_path / "mr", synthetic.array, synthetic.geometry, modality="MR")
    volume = read_volume(tmp_path / "mr")
    report = build_report(volume, {"ball": synthetic.meta["truth"]}, kinds={"ball": "unknown"})
    paths = write_report_dicom(report, volume, tmp_path / "mr.dcm", AlgorithmInfo("hu", interactive=False))
    values, _ = read_sr_measurements(paths["sr"])
    o = report.objects[0]
    assert values == {"ball": {"volume_ml": o.volume_ml, "mean": o.mean, "sd": o.sd}}  # no RECIST axes: no lesion
    ds = pydicom.dcmread(str(paths["sr"]))
    nums = [i for i in _items(ds) if i.ValueType == "NUM"]
    assert {i.ConceptNameCodeSequence[0].CodeMeaning for i in nums} == {"Volume", "MR signal intensity"}
    assert {i.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue for i in nums} == {"ml", "1"}


def _items(ds):
    for item in getattr(ds, "ContentSequence", []):
        yield item
        yield from _items(item)
