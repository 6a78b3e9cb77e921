"""medvl.dicom.series through medvl.io.read_volume: geometry kept for any file order and orientation;
bad series (missing slice, uneven gaps, inconsistent spacing/orientation, a single frame, several
series) give one line naming the folder, the series UID and the problem."""

from __future__ import annotations

import numpy as np
import pytest

from medvl.cli import main
from medvl.dicom.series import DicomSeriesError, SeveralSeriesError, list_series
from medvl.errors import ImageReadError
from medvl.io import read_volume
from tests.conftest import make_synthetic_volume
from tests.dicom.conftest import GEOMETRIES
from medvl.bench.dicom_series import copy_headers_with, write_series


@pytest.mark.parametrize("order", ["sorted", "reversed", "shuffled"])
@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_series_reads_back_with_exact_pixels_and_geometry(tmp_path, name, order):
    volume = make_synthetic_volume(shape_kji=(7, 12, 10), geometry=GEOMETRIES[name], seed=3)
    files = write_series(tmp_path / "s", volume.array, volume.geometry, order=order, series_uid="1.2.3.44")
    back = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry.same_as(volume.geometry, tol=1e-6), back.geometry.describe_difference(volume.geometry)
    assert back.meta["dicom_files"] == [str(f) for f in files]  # index order k, whatever the file order
    assert back.name == "1.2.3.44" and back.modality == "CT" and back.meta["modality_source"] == "dicom"


def test_left_handed_stack_is_read_along_its_normal(tmp_path):
    """A grid whose k axis runs against row x column: DICOM readers sort along the normal, so
    k is reversed, and every voxel keeps its physical place."""
    from medvl.geometry import Geometry

    geometry = Geometry((0.0, 0.0, 30.0), (1.0, 1.0, 2.0), (1, 0, 0, 0, 1, 0, 0, 0, -1))
    volume = make_synthetic_volume(shape_kji=(5, 6, 4), geometry=geometry, seed=4)
    write_series(tmp_path / "s", volume.array, geometry)
    back = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(back.array, volume.array[::-1])
    last = geometry.index_to_physical((0, 0, 4))
    assert np.allclose(back.geometry.origin, last) and np.allclose(back.geometry.direction_matrix[:, 2], (0, 0, 1))


def _series(tmp_path, **kw):
    volume = make_synthetic_volume(shape_kji=(6, 8, 8), geometry=GEOMETRIES["axial"], seed=1)
    return write_series(tmp_path / "s", volume.array, volume.geometry, series_uid="1.2.3.99", **kw)


def _error(tmp_path, cls=DicomSeriesError, **kw) -> str:
    with pytest.raises(cls) as err:
        read_volume(tmp_path / "s", **kw)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "s") in message
    return message


def test_missing_slice(tmp_path):
    _series(tmp_path, skip=(3,))
    message = _error(tmp_path)
    assert "1.2.3.99 has missing slices" in message and "gap of 5 mm" in message and "about 1 slice missing" in message


def test_uneven_gaps(tmp_path):
    files = _series(tmp_path)
    copy_headers_with(files[2], ImagePositionPatient=[-120.5, -80.25, -293.5])  # 1 mm off the 2.5 mm grid
    assert "has uneven slice spacing" in _error(tmp_path)


def test_inconsistent_pixel_spacing(tmp_path):
    files = _series(tmp_path)
    copy_headers_with(files[4], PixelSpacing=[0.8, 0.8])
    message = _error(tmp_path)
    assert "inconsistent pixel spacing" in message and files[4].name in message and "(0.8, 0.8)" in message


def test_inconsistent_orientation(tmp_path):
    files = _series(tmp_path)
    copy_headers_with(files[1], ImageOrientationPatient=[0.6, -0.8, 0, 0.8, 0.6, 0])
    assert "inconsistent orientation" in _error(tmp_path)


def test_single_frame(tmp_path):
    volume = make_synthetic_volume(shape_kji=(1, 8, 8), geometry=GEOMETRIES["axial"])
    write_series(tmp_path / "s", volume.array, volume.geometry, series_uid="1.2.3.5")
    assert "DICOM series 1.2.3.5 has a single frame (1 slice)" in _error(tmp_path)


def test_two_series_in_one_folder(tmp_path, capsys):
    volume = make_synthetic_volume(shape_kji=(6, 8, 8), geometry=GEOMETRIES["axial"], seed=2)
    write_series(tmp_path / "a", volume.array, volume.geometry, series_uid="1.2.3.7", description="chest")
    write_series(tmp_path / "b", volume.array[:3], GEOMETRIES["oblique"], series_uid="1.2.3.8", description="scout")
    (tmp_path / "s").mkdir()
    for sub in ("a", "b"):
        for f in (tmp_path / sub).iterdir():
            f.rename(tmp_path / "s" / f"{sub}_{f.name}")
    assert [s.uid for s in list_series(tmp_path / "s")] == ["1.2.3.7", "1.2.3.8"]
    message = _error(tmp_path, SeveralSeriesError)
    assert "holds 2 DICOM series: 1.2.3.7 'chest' (CT, 6 slices); 1.2.3.8 'scout' (CT, 3 slices)" in message
    assert message.endswith("pick one with --series UID")
    picked = read_volume(tmp_path / "s", series="1.2.3.8")
    assert picked.array.shape == (3, 8, 8) and picked.geometry.same_as(GEOMETRIES["oblique"], tol=1e-6)
    assert "has no DICOM series 9.9" in _error(tmp_path, SeveralSeriesError, series="9.9")
    # the CLI: one line, non-zero, and --series picks
    code = main(["report", str(tmp_path / "s"), "--out", str(tmp_path / "r"), "--text", "bone", "--refine", "hu"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "pick one with --series UID" in err
    with pytest.raises(ImageReadError, match="needs a DICOM folder"):
        read_volume(tmp_path / "s" / "a_IM0000.dcm", series="1.2.3.7")


def test_batch_manifest_picks_the_series_by_uid(tmp_path):
    from medvl.batch.inputs import discover

    volume = make_synthetic_volume(shape_kji=(4, 8, 8), geometry=GEOMETRIES["axial"], seed=2)
    write_series(tmp_path / "s", volume.array, volume.geometry, series_uid="1.2.3.7")
    for f in write_series(tmp_path / "b", volume.array[:2], volume.geometry, series_uid="1.2.3.8"):
        f.rename(tmp_path / "s" / f"b_{f.name}")
    (tmp_path / "s" / "notes.txt").write_text("not DICOM")
    (tmp_path / "m.json").write_text('[{"image": "s", "series": "1.2.3.8", "text": "bone"}]')
    (job,) = discover(str(tmp_path / "m.json"))
    assert job.series == "1.2.3.8" and job.to_dict()["series"] == "1.2.3.8"
    assert read_volume(job.source, job.modality, job.series).array.shape == (2, 8, 8)
