"""Reading volumes and masks from files, writing them back with the exact same geometry.

Formats: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd), a DICOM series
folder (one image series, or the one `series=` names; checked by `medvl.dicom.series`) or a
single DICOM file; pixels through SimpleITK.
Arrays are numpy order (k, j, i); geometry is `medvl.geometry.Geometry` (LPS, ITK order).
Writes are atomic: a temporary file in the target folder, then `os.replace`; only
single-file formats are written (.nii, .nii.gz, .nrrd, .mha).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medvl.errors import GeometryError, ImageReadError, ImageWriteError
from medvl.geometry import Geometry
from medvl.volume import Volume

logger = logging.getLogger(__name__)

_FORMATS = {  # extension -> format name stored in Volume.meta["format"]
    ".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd",
    ".mha": "metaimage", ".mhd": "metaimage", ".dcm": "dicom",
}
_WRITABLE = (".nii.gz", ".nii", ".nrrd", ".mha")  # single-file formats: atomic rename is safe
_MODALITY_TAG = "0008|0060"
_SERIES_UID_TAG = "0020|000e"


def _extension(path: Path) -> str:
    name = path.name.lower()
    return next((ext for ext in _FORMATS if name.endswith(ext)), path.suffix.lower())


def _stem(path: Path) -> str:
    ext = _extension(path)
    return path.name[: len(path.name) - len(ext)] if ext else path.name


def _sitk_reason(error: Exception) -> str:
    """The most specific line of a multi-line SimpleITK/ITK exception, for a one-line message."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    last = lines[-1] if lines else repr(error)
    if "Unable to determine ImageIO reader" in last:
        return "not a readable image (unknown format or corrupt file)"
    last = re.sub(r"^(sitk::ERROR:|ITK ERROR:[^:]*:|\[\w+\])\s*", "", last)
    return f"corrupt or unreadable ({last})"


def _check_3d(where: str, dimension: int, size, components: int) -> None:
    """Raise ImageReadError unless the header describes a single-channel 3D image."""
    dims = "x".join(str(s) for s in size)
    if dimension != 3:
        raise ImageReadError(f"{where} is {dimension}D ({dims}); MedVL needs a 3D volume")
    if components != 1:
        raise ImageReadError(
            f"{where} has {components} components per voxel (vector/RGB image, {dims}); "
            "MedVL needs a single-channel 3D volume"
        )


def _label_problem(array: np.ndarray) -> str | None:
    """None when every value is an integer 0..255 (a valid uint8 label), else what is wrong."""
    if array.size == 0 or array.dtype == bool:
        return None
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        return f"label values from {low} to {high}"
    if not np.issubdtype(array.dtype, np.integer) and not np.all(np.mod(array, 1) == 0):
        return "non-integer label values"
    return None


MODALITIES = ("CT", "MR")  # what a user may ask for (`--modality`, the server's `modality` param)
MODALITY_SOURCES = ("user", "dicom", "metadata", "inferred")  # Volume.meta["modality_source"]
_META_KEYS = ("descrip", "intent_name", "aux_file", "Modality", "modality", "ITK_FileNotes", "content",
              "0008|103e", "0018|0015")  # NIfTI header strings, NRRD/MetaImage fields that may name it
_META_WORDS = {"CT": re.compile(r"\b(ct|met_mod_ct|computed tomography|cta|hu)\b", re.I),
               "MR": re.compile(r"\b(mr|mri|met_mod_mr|magnetic resonance|t1w?|t2w?|flair|mprage|spgr|dwi)\b",
                                re.I)}


def parse_modality(value) -> str:
    """'CT' or 'MR' from a user's value (any case; 'MRI' is MR); ValueError naming the bad value."""
    text = str(value).strip().upper()
    text = "MR" if text == "MRI" else text
    if text not in MODALITIES:
        raise ValueError(f"modality {value!r} is not one of {', '.join(MODALITIES)}")
    return text


def _metadata_modality(reader_meta: dict) -> str | None:
    """The modality the image's own header names (NIfTI descrip/intent_name, NRRD or
    MetaImage 'modality' field), or None when it names none or both."""
    found = set()
    for key in _META_KEYS:
        value = str(reader_meta.get(key, "") or "")
        found.update(m for m, rx in _META_WORDS.items() if rx.search(value))
    return found.pop() if len(found) == 1 else None


def infer_modality(array: np.ndarray) -> tuple[str, str]:
    """CT or MR from the intensities of a numpy (k, j, i) array, with the reason.

    CT is calibrated in Hounsfield units: air at about -1000 (outside the body, in the
    lungs), fat near -100, soft tissue and water near 0..100, all integers. MR is in
    arbitrary non-negative units (or a z-score with small negatives). Rules, in order:
    1. CT when at least 1 % of voxels lie in air's HU band [-1100, -850] (or below: padding
       -2048/-3024 outside the scan circle) AND at least 5 % of the others lie in
       soft tissue's band [-150, 150];
    2. CT (cropped inside the body, no air) when the values are integers, at least 3 % lie in
       fat's band [-150, -50] and at least 20 % in soft tissue's band [-50, 150];
    3. MR when no voxel is below -500 (no air in HU);
    4. otherwise the old rule: CT when the darkest voxel is below -500, flagged as weak.
    Checked on the sample cases (lung1, lung2 CT; brain1 MR) and seeded synthetic volumes
    (tests/test_io.py).
    """
    if not array.size:
        return "MR", "empty image"
    v = array.ravel()
    if v.size > 2_000_000:  # a strided sample is enough for fractions (deterministic)
        v = v[:: v.size // 2_000_000]
    v = v.astype(np.float32)
    air = float(np.mean(v <= -850))
    rest = v[v > -850]
    soft = float(np.mean((rest >= -150) & (rest <= 150))) if rest.size else 0.0
    if air >= 0.01 and soft >= 0.05:
        return "CT", f"{air:.0%} of voxels at air's HU (<= -850) and {soft:.0%} of the rest at soft tissue's"
    integer = bool(np.all(np.mod(v[: 100_000], 1) == 0))
    fat = float(np.mean((v >= -150) & (v <= -50)))
    soft = float(np.mean((v > -50) & (v <= 150)))
    if integer and fat >= 0.03 and soft >= 0.2:
        return "CT", f"integer values with {fat:.0%} at fat's HU and {soft:.0%} at soft tissue's (no air)"
    low = float(v.min())
    if low >= -500:
        return "MR", f"no air in Hounsfield units (darkest voxel {low:g}): arbitrary MR units"
    return ("CT" if low < -500 else "MR"), f"weak: darkest voxel {low:g} but no clear air/tissue HU peaks"


def _read_dicom_series(folder: Path, series_uid: str | None = None) -> tuple[sitk.Image, dict]:
    """The checked series of `folder` (`medvl.dicom.series.read_series`: one-line errors for
    several series, missing slices, uneven gaps, ...), pixels read by SimpleITK in that order."""
    from medvl.dicom.series import read_series

    series = read_series(folder, series_uid)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(f"{folder}: DICOM series {series.uid} is {_sitk_reason(error)}") from None
    if not Geometry.from_sitk(image).same_as(series.geometry, tol=1e-3):
        logger.warning("%s: SimpleITK's geometry differs from the slice headers' (%s); using the headers'",
                       folder, Geometry.from_sitk(image).describe_difference(series.geometry))
    series.geometry.apply_to_sitk(image)
    meta = {"format": "dicom", "series_uid": series.uid, "files": len(series.files),
            "dicom_files": [str(f) for f in series.files]}
    if series.modality:
        meta["dicom_modality"] = series.modality
    return image, meta


def _read_file(path: Path) -> tuple[sitk.Image, dict]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise ImageReadError(f"{path} is {_sitk_reason(error)}") from None
    _check_3d(str(path), reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents())
    meta = {"format": _FORMATS.get(_extension(path), "other")}
    if reader.HasMetaDataKey(_MODALITY_TAG):
        meta["format"] = "dicom"
        meta["dicom_modality"] = reader.GetMetaData(_MODALITY_TAG).strip().upper()
    if reader.HasMetaDataKey(_SERIES_UID_TAG):
        meta["series_uid"] = reader.GetMetaData(_SERIES_UID_TAG).strip()
    named = _metadata_modality({k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys() if k in _META_KEYS})
    if named:
        meta["header_modality"] = named
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(f"{path} is {_sitk_reason(error)}") from None
    return image, meta


def _read_image(path, series_uid: str | None = None) -> tuple[sitk.Image, Geometry, dict]:
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path} does not exist; give a NIfTI, NRRD, MHA file or a DICOM folder")
    if series_uid is not None and not path.is_dir():
        raise ImageReadError(f"--series {series_uid} needs a DICOM folder, but {path} is a file")
    image, meta = _read_dicom_series(path, series_uid) if path.is_dir() else _read_file(path)
    _check_3d(str(path), image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel())
    meta["path"] = str(path)
    try:
        geometry = Geometry.from_sitk(image)
    except GeometryError as error:
        raise ImageReadError(f"{path} has a degenerate geometry: {error}") from None
    return image, geometry, meta


def read_volume(path, modality: str | None = None, series: str | None = None) -> Volume:
    """Read a 3D scalar image file or DICOM folder into a Volume (array numpy (k, j, i)).

    A DICOM folder must hold one image series, or `series` (a SeriesInstanceUID) picks one;
    its slices are checked (`medvl.dicom.series`) and `meta["dicom_files"]` lists them in
    index order k (what a DICOM SEG or SR references).

    Modality, first that applies (recorded in `volume.meta["modality_source"]`, with
    `meta["modality_reason"]`): the `modality` argument ("user"; CT or MR, else
    ImageReadError naming the value); the DICOM tag (0008,0060) ("dicom"; "OT" for other
    DICOM modalities); a header field naming it ("metadata": NIfTI descrip/intent_name,
    NRRD/MetaImage modality field); else `infer_modality` from the intensities
    ("inferred"). The pixel type is kept as stored (DICOM rescale applied).
    Raises ImageReadError (one line, naming the path) for missing, corrupt, 2D, 4D or
    multi-component images.
    """
    if modality is not None:
        try:
            modality = parse_modality(modality)
        except ValueError as err:
            raise ImageReadError(f"{err}; give --modality CT or MR (or leave it out to read it from the image)") \
                from None
    image, geometry, meta = _read_image(path, series)
    array = sitk.GetArrayFromImage(image)
    tag = meta.get("dicom_modality")
    if modality is not None:
        source, reason = "user", "given by the user"
    elif tag:
        modality, source, reason = (tag if tag in MODALITIES else "OT"), "dicom", f"DICOM tag (0008,0060) = {tag}"
    elif meta.get("header_modality"):
        modality, source, reason = meta["header_modality"], "metadata", "named in the image header"
    else:
        modality, reason = infer_modality(array)
        source = "inferred"
    meta["modality_source"], meta["modality_reason"] = source, reason
    name = meta.get("series_uid") if meta["format"] == "dicom" and Path(path).is_dir() else _stem(Path(path))
    volume = Volume(array=array, geometry=geometry, modality=modality.upper(), name=name, meta=meta)
    logger.debug("read %s: %s %s, %s (%s)", path, volume.size_ijk, array.dtype, volume.modality, source)
    return volume


def read_mask(path, like: Volume | Geometry | None = None) -> Volume:
    """Read a label image as a Volume with a uint8 (k, j, i) array (modality "OT").

    With `like`, the mask's geometry must match it (and its shape, when `like` is a Volume),
    else GeometryError naming both. Labels outside 0..255 or non-integer -> ImageReadError.
    """
    image, geometry, meta = _read_image(path)
    array = sitk.GetArrayFromImage(image)
    problem = _label_problem(array)
    if problem:
        raise ImageReadError(f"{path} has {problem}; masks must be integers 0..255")
    mask = Volume(array.astype(np.uint8), geometry, "OT", _stem(Path(path)), meta)
    if like is not None:
        _check_like(str(path), mask.array.shape, mask.geometry, like)
    return mask


def _check_like(what: str, shape, geometry: Geometry, like: Volume | Geometry) -> None:
    like_geometry = like.geometry if isinstance(like, Volume) else like
    if isinstance(like, Volume) and tuple(shape) != like.array.shape:
        raise GeometryError(
            f"{what} has shape (k, j, i) {tuple(shape)} but the image has {like.array.shape}"
        )
    if not geometry.same_as(like_geometry):
        raise GeometryError(f"{what} geometry differs from the image: {geometry.describe_difference(like_geometry)}")


def check_writable(path) -> Path:
    """Raise ImageWriteError unless `path` has an extension we write (checked before any work)."""
    path = Path(path)
    if _extension(path) not in _WRITABLE:
        raise ImageWriteError(f"cannot write {path}: use one of {', '.join(_WRITABLE)}")
    return path


def _write_atomic(image: sitk.Image, path) -> Path:
    path = check_writable(path)
    ext = _extension(path)
    tmp = path.with_name(f".{_stem(path)}.tmp-{uuid.uuid4().hex[:8]}{ext}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(tmp), useCompression=ext != ".nii")
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        raise ImageWriteError(f"cannot write {path}: {str(exc).strip().splitlines()[-1][:200]}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.debug("wrote %s", path)
    return path


def write_mask(path, mask: np.ndarray, like: Volume | Geometry) -> Path:
    """Write a label mask, numpy (k, j, i) bool or integers 0..255, as compressed uint8.

    The file gets exactly the geometry of `like`; when `like` is a Volume the mask shape
    must equal `like.array.shape` (GeometryError names both). Atomic: temp file + os.replace.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise GeometryError(f"mask must be 3D numpy (k, j, i), got shape {mask.shape}")
    problem = _label_problem(mask)
    if problem:
        raise ImageWriteError(f"mask has {problem}; give bool or integers 0..255")
    geometry = like.geometry if isinstance(like, Volume) else like
    _check_like("mask", mask.shape, geometry, like)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    return _write_atomic(geometry.apply_to_sitk(image), path)


def write_volume(path, volume: Volume) -> Path:
    """Write a Volume (array numpy (k, j, i), dtype kept) with its geometry; atomic, compressed."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    return _write_atomic(volume.geometry.apply_to_sitk(image), path)
