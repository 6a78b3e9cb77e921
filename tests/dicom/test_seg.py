"""medvl.dicom.seg: label map -> DICOM SEG -> back with our reader, highdicom and pydicom-seg:
the same voxels in the same physical place, for axial, flipped, oblique series and any file order."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medvl.dicom.export import write_labels_seg
from medvl.dicom.seg import AlgorithmInfo, SegmentSpec, read_dicom_seg, save_dataset, write_dicom_seg
from medvl.dicom.series import source_headers
from medvl.errors import GeometryError, ImageWriteError
from medvl.geometry import Geometry
from medvl.io import read_volume
from tests.conftest import make_synthetic_volume
from tests.dicom.conftest import GEOMETRIES
from medvl.bench.dicom_series import read_with_highdicom, read_with_pydicom_seg, write_series

ALGO = AlgorithmInfo("litemedsam", "LiteMedSAM")


def _labels(shape, seed=0) -> np.ndarray:
    """Two blobs (labels 1 and 2) on some slices only, so the SEG is sparse."""
    k, j, i = np.indices(shape)
    labels = np.zeros(shape, np.uint8)
    labels[((k - 2) ** 2 / 2 + (j - 5) ** 2 + (i - 4) ** 2 <= 6) & (k >= 1)] = 1
    labels[(k >= 4) & (k <= 5) & (j >= 8) & (i >= 6)] = 2
    return labels


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_round_trip_three_readers(tmp_path, name, order):
    volume = make_synthetic_volume(shape_kji=(8, 12, 10), geometry=GEOMETRIES[name], seed=5)
    write_series(tmp_path / "ct", volume.array, volume.geometry, order=order)
    ct = read_volume(tmp_path / "ct")
    labels = _labels(ct.array.shape)
    path = write_labels_seg(tmp_path / "mask.dcm", labels, ct, {1: "nodule", 2: "region b"}, ALGO)
    ds = pydicom.dcmread(str(path))
    frames = sum(len(set(np.unique(labels[k]).tolist()) - {0}) for k in range(labels.shape[0]))
    assert ds.Modality == "SEG" and int(ds.NumberOfFrames) == frames  # sparse: a frame per segment and slice it is on
    ours, names = read_dicom_seg(path, ct)
    np.testing.assert_array_equal(ours, labels)
    assert names == {1: "nodule", 2: "region b"}
    np.testing.assert_array_equal(read_with_highdicom(path, source_headers(ct)), labels)
    np.testing.assert_array_equal(read_with_pydicom_seg(path, ct.geometry, ct.array.shape), labels)
    # references the source series, its frame of reference, each frame its source instance
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.name
    assert ds.FrameOfReferenceUID == source_headers(ct)[0].FrameOfReferenceUID
    uids = {h.SOPInstanceUID for h in source_headers(ct)}
    for frame in ds.PerFrameFunctionalGroupsSequence:
        assert frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID in uids


def test_segments_are_coded_and_identify_the_algorithm(tmp_path):
    volume = make_synthetic_volume(shape_kji=(6, 10, 10), geometry=GEOMETRIES["axial"])
    write_series(tmp_path / "ct", volume.array, volume.geometry)
    ct = read_volume(tmp_path / "ct")
    stack = np.zeros((*ct.array.shape, 3), bool)
    stack[2:5, 2:8, 2:8, 0] = True  # lungs
    stack[3, 4:6, 4:6, 1] = True  # a nodule inside them: overlapping segments
    stack[1, 0:2, 0:2, 2] = True
    specs = [SegmentSpec("left lung", name="left_lung", kind="anatomy"),
             SegmentSpec("lung nodule", name="nodule", kind="lesion", tracking_id="nodule"),
             SegmentSpec("my thing", kind="unknown")]
    seg = write_dicom_seg(stack, source_headers(ct), specs, ALGO, geometry=ct.geometry)
    s1, s2, s3 = seg.SegmentSequence
    assert (s1.SegmentedPropertyTypeCodeSequence[0].CodeValue, s1.SegmentedPropertyTypeCodeSequence[0]
            .SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning) == ("39607008", "Left")
    assert s2.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert s2.SegmentedPropertyTypeCodeSequence[0].CodeValue == "27925004" and s2.TrackingID == "nodule"
    assert s2.AnatomicRegionSequence[0].CodeMeaning == "Lung"
    assert s3.SegmentLabel == "my thing" and s3.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"
    algo = s1.SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "MedVLSlicer" and s1.SegmentAlgorithmType == "SEMIAUTOMATIC"
    assert "engine=litemedsam" in str(algo.AlgorithmParameters) and seg.ManufacturerModelName == "LiteMedSAM"
    assert int(seg.NumberOfFrames) == 3 + 1 + 1  # frames only where each object is
    back = pydicom.dcmread(str(save_dataset(seg, tmp_path / "seg.dcm")))
    ours, _ = read_dicom_seg(back, ct)
    assert ours[3, 4, 4] == 1 and ours[2, 4, 4] == 1 and ours[1, 0, 0] == 3  # overlap: the lower number wins


def test_bad_inputs_are_named(tmp_path):
    volume = make_synthetic_volume(shape_kji=(6, 10, 10), geometry=GEOMETRIES["axial"])
    write_series(tmp_path / "ct", volume.array, volume.geometry)
    ct = read_volume(tmp_path / "ct")
    labels = np.zeros(ct.array.shape, np.uint8)
    labels[2, 2, 2] = 1
    headers = source_headers(ct)
    with pytest.raises(ImageWriteError, match=r"segment\(s\) 'ghost' have no voxels"):
        write_dicom_seg(labels, headers, [SegmentSpec("a"), SegmentSpec("ghost", value=2)], ALGO)
    with pytest.raises(ImageWriteError, match=r"mask shape \(k, j, i\) \(5, 10, 10\) is not the source series'"):
        write_dicom_seg(labels[:5], headers, [SegmentSpec("a")], ALGO)
    moved = Geometry((0.0, 0.0, 0.0), ct.geometry.spacing, ct.geometry.direction)
    with pytest.raises(GeometryError, match="the mask's geometry is not the DICOM series': origin"):
        write_dicom_seg(labels, headers, [SegmentSpec("a")], ALGO, geometry=moved)
    seg = write_dicom_seg(labels, headers, [SegmentSpec("a")], ALGO)
    with pytest.raises(GeometryError, match="not on a slice of the image"):
        read_dicom_seg(seg, (Geometry((0.0, 0.0, 1.0), ct.geometry.spacing), ct.array.shape))


def test_label_file_to_seg_places_a_crop_and_refuses_other_grids(tmp_path):
    """The datastore-facing function: label file + series folder -> SEG file (what a PACS save_label uses)."""
    from medvl.dicom.export import label_file_to_seg
    from medvl.io import write_mask
    from medvl.server.results import crop_geometry

    volume = make_synthetic_volume(shape_kji=(6, 12, 10), geometry=GEOMETRIES["oblique"], seed=6)
    write_series(tmp_path / "ct", volume.array, volume.geometry, order="shuffled")
    ct = read_volume(tmp_path / "ct")
    labels = _labels(ct.array.shape)
    crop = labels[1:5, 3:11, 2:9]
    write_mask(tmp_path / "crop.nrrd", crop, like=crop_geometry(ct.geometry, (2, 3, 1)))
    path = label_file_to_seg(tmp_path / "crop.nrrd", tmp_path / "ct", tmp_path / "crop.dcm", {1: "a", 2: "b"})
    back, names = read_dicom_seg(path, ct)
    want = np.zeros_like(labels)
    want[1:5, 3:11, 2:9] = crop
    np.testing.assert_array_equal(back, want)
    assert names == {1: "a", 2: "b"}
    shifted = Geometry(ct.geometry.index_to_physical((0.5, 0, 0)), ct.geometry.spacing, ct.geometry.direction)
    write_mask(tmp_path / "off.nrrd", labels, like=shifted)
    with pytest.raises(GeometryError, match="the label's grid is not \\(part of\\) DICOM series"):
        label_file_to_seg(tmp_path / "off.nrrd", tmp_path / "ct", tmp_path / "off.dcm")
