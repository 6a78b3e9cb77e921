"""`output=dicom_seg` on `POST /infer/<model>`: the mask as a DICOM SEG referencing the image's series.

MONAI Label clients ask `output=dicom_seg` and expect `application/dicom`. The SEG needs the
source series, so the image must be a datastore image backed by a DICOM series folder:

- the datastore's image URI is itself a DICOM folder (a DICOMweb datastore that does not convert), or
- a folder named like the image id sits next to the image file (`<id>.nii.gz` + `<id>/`): the
  layout of MONAI Label's DICOMweb cache (series folder + its NIfTI), also usable in a local
  studies folder.

Anything else (an upload, a NIfTI without its series) is a 400 naming the alternative, checked
before any model work. The same lookup serves `dicom_sr: true` on `medvl_report` (`write_report_sr`:
the report's SR and SEG next to its report.json, served by the report route). The task's label file (full or a crop) is placed on the series' grid
by its geometry (`medvl.geometry`); label names and the engine come from the task's JSON.
"""

from __future__ import annotations

import logging
import os
import tempfile

logger = logging.getLogger(__name__)


def source_series_dir(datastore, image_id: str, uploaded: bool, what: str = "output=dicom_seg") -> str:
    """The DICOM series folder behind `image_id`; ValueError (-> 400) when there is none. `what` names
    the request in the message ("output=dicom_seg", "dicom_sr")."""
    if uploaded or not image_id:
        raise ValueError(f"{what} needs ?image=<datastore id> of a DICOM series: an uploaded file has no "
                         "series for the SEG to reference; ask output=image, json or all")
    uri = datastore.get_image_uri(image_id) or ""
    return series_dir_of(uri, image_id, what)


def series_dir_of(uri: str, image_id: str, what: str) -> str:
    """The DICOM series folder of the image file/folder `uri` (itself, or `<stem>/` next to it);
    ValueError naming the image when there is none."""
    from medvl.batch.inputs import _holds_dicom
    from pathlib import Path

    candidates = [Path(uri)] if uri else []
    if uri and Path(uri).is_file():
        name = Path(uri).name
        stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(uri).stem
        candidates.append(Path(uri).parent / stem)
    for folder in candidates:
        if folder.is_dir() and _holds_dicom(folder):
            return str(folder)
    raise ValueError(f"{what}: image {(image_id or os.path.basename(uri))[:80]!r} is not backed by a DICOM series "
                     f"(no DICOM folder {'next to ' + os.path.basename(uri) if uri else 'for it'}); "
                     f"{'ask output=image, json or all' if what.startswith('output=') else 'leave ' + what + ' out'}")


def report_series_dir(value, image_path: str, image_id: str, datastore) -> str:
    """The DICOM series of a report's `dicom_sr`: `true` -> the request's own image's; a string -> that
    datastore image's (a report on a MONAI Label session made from it). ValueError (-> 400) when none."""
    if isinstance(value, str) and value.strip().lower() not in ("true", "1", "yes", "on"):
        if datastore is None:
            raise ValueError("dicom_sr names a datastore image, but this request has no datastore")
        return source_series_dir(datastore, value.strip(), uploaded=False, what="dicom_sr")
    return series_dir_of(image_path or "", image_id, "dicom_sr")


def write_report_sr(report, volume, series_dir: str, folder, algorithm) -> dict:
    """The report's SR and SEG (`medvl.dicom.export.write_report_dicom`) as `folder`/report.sr.dcm and
    report.seg.dcm, referencing the series in `series_dir`; {"sr": path, "seg": path}.

    The report's masks are on the session volume's grid (the datastore image), which must be the
    series' grid (GeometryError naming the difference otherwise)."""
    from pathlib import Path

    from medvl.errors import GeometryError
    from medvl.io import read_volume

    series = read_volume(series_dir)
    if series.array.shape != volume.array.shape or not series.geometry.same_as(volume.geometry):
        raise GeometryError(f"dicom_sr: the image's grid is not its DICOM series' ({series_dir}): "
                            f"{volume.geometry.describe_difference(series.geometry)}, shape (k, j, i) "
                            f"{volume.array.shape} vs {series.array.shape}; leave dicom_sr out")
    import numpy as np

    if not np.allclose(series.array, volume.array, atol=0.5):  # a session volume must be that image's voxels
        raise GeometryError(f"dicom_sr: the session's voxels differ from DICOM series {series_dir} (same grid); "
                            "name the datastore image the session was made from, or leave dicom_sr out")
    from medvl.dicom.export import write_report_dicom

    return write_report_dicom(report, series, Path(folder) / "report.sr.dcm", algorithm, Path(folder) / "report.seg.dcm")


def write_result_seg(result: dict, series_dir: str, out_dir: str | None) -> str:
    """Write the result's label file as a DICOM SEG on the series' grid; returns the temp file path."""
    from medvl.dicom.export import label_file_to_seg
    from medvl.dicom.seg import AlgorithmInfo

    params = result.get("params") or {}
    path = result.get("file") or result.get("label")
    if not path or not os.path.exists(path):
        raise ValueError("output=dicom_seg: the request changed no voxels (no mask file), and a DICOM SEG needs "
                         "at least one segment")
    names = {int(v): str(n) for n, v in (params.get("label_names") or {}).items()}
    engine = params.get("engine") or {}
    algorithm = AlgorithmInfo(str(engine.get("name") or "medvl"), str(engine.get("model") or ""))
    fd, out = tempfile.mkstemp(prefix="medvl-seg-", suffix=".dcm", dir=out_dir)
    os.close(fd)
    try:
        return str(label_file_to_seg(path, series_dir, out, names, algorithm))
    except BaseException:
        os.unlink(out)
        raise
