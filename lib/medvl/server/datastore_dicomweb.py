"""`PacsDatastore`: MONAI Label's DICOMweb datastore with MedVLSlicer's containment and checks.

MONAI Label's `DICOMWebDatastore` lists CT series by QIDO-RS, fetches a series by WADO-RS
into a local cache and converts it to NIfTI there (SimpleITK/GDCM), and stores a `final`
label back as a DICOM SEG by STOW-RS. This subclass keeps that and:

- takes its settings typed (URL checked by `medvl.server.pacs.check_url`, cache folder from
  `--conf pacs_cache`), and builds the DICOMweb client itself, so MONAI Label's start-time
  download of the dcmqi tools (`itkimage2segimage`, from GitHub) never runs;
- answers an id that is not a listed SeriesInstanceUID with "" (-> 404), so no id is ever
  joined onto the cache folder before it is known; every cache path is checked to lie
  inside the cache folder (`medvl.server.containment.inside`);
- checks a saved label like the folder datastore does: a bounded 3D integer image in the
  image's exact grid (else 400 naming the difference); an empty `final` label is refused
  (a SEG needs a segment);
- writes the SEG through `medvl.server.pacs.label_to_dicom_seg` (MedVLSlicer's highdicom writer);
- lists the PACS series in `GET /datastore/?output=all` (the stock one lists only what is
  already cached);
- refuses `PUT /datastore/image` with 400: images enter through the PACS (STOW-RS, or
  Orthanc's `POST /instances`); `/infer` uploads and `/session/` uploads work as with a folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time

import requests

from monailabel.config import settings as ml_settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.exception import ImageNotFoundException
from pydicom import dcmread

from medvl.io import read_mask, read_volume
from medvl.server.containment import check_name, inside, shown
from medvl.server.http import as_http
from medvl.server.pacs import PacsUnavailableError, cache_base, check_url, credentials, label_to_dicom_seg
from medvl.server.protocol import BadRequestError
from medvl.server.uploads import check_image_file, clean_stale

logger = logging.getLogger(__name__)

RETRY_ATTEMPTS, RETRY_WAIT_MS = 3, 250  # DICOMweb requests: 3 tries, 0.5 s then 1 s apart
UID_RULE = re.compile(r"[0-9]+(\.[0-9]+)*")  # a DICOM UID: digits and dots, at most 64 characters


class PacsDatastore(DICOMWebDatastore):
    def __init__(self, url: str, cache_dir: str, labels: tuple[str, ...], max_voxels: int):
        self.url = check_url(url)
        self._labels = tuple(labels)  # segment names for label values 1..n (the server's labels)
        self._max_voxels = max_voxels
        session = None
        if credentials():
            from dicomweb_client.session_utils import create_session_from_user_pass

            session = create_session_from_user_pass(*credentials())
        client = DICOMwebClientX(url=self.url, session=session, qido_url_prefix=ml_settings.MONAI_LABEL_QIDO_PREFIX,
                                 wado_url_prefix=ml_settings.MONAI_LABEL_WADO_PREFIX,
                                 stow_url_prefix=ml_settings.MONAI_LABEL_STOW_PREFIX)
        # dicomweb-client retries every failed request 5 times, 2+4+8+16 s apart (also a refused
        # connection): an interactive server answers a PACS that is down within ~1.5 s instead
        client.set_http_retry_params(max_attempts=RETRY_ATTEMPTS, wait_exponential_multiplier=RETRY_WAIT_MS)
        super().__init__(client, search_filter=dict(ml_settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER),
                         cache_path=str(cache_base(cache_dir)), fetch_by_frame=False, convert_to_nifti=True)
        self._root = os.path.realpath(self._datastore_path)  # <cache base>/<md5(url)>: every cache path stays inside
        clean_stale(self._root)  # uploads and .part files a killed server left
        logger.info("PACS datastore %s, cache %s", self.url, self._root)

    @property
    def cache_root(self) -> str:
        """The local folder of this PACS (series, NIfTI conversions, labels; the server's uploads)."""
        return self._root

    @contextlib.contextmanager
    def _pacs(self, what: str):
        """A PACS that stops answering mid-run: PacsUnavailableError (HTTP 502), one line."""
        try:
            yield
        except requests.RequestException as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            reason = f"HTTP {status}" if status else type(exc).__name__
            raise PacsUnavailableError(f"PACS {self.url} did not answer while {what} ({reason}): check that it "
                                       "runs; cached series keep working") from None

    # -- lookups: exact membership, paths checked --------------------------------------------
    def list_images(self):
        with self._pacs("listing series"):
            return super().list_images()

    def get_labeled_images(self, label_tag=None, labels=None):
        with self._pacs("listing SEG series"):
            return super().get_labeled_images(label_tag, labels)

    def _known(self, image_id) -> bool:
        return (isinstance(image_id, str) and len(image_id) <= 64 and UID_RULE.fullmatch(image_id) is not None
                and image_id in self.list_images())

    def get_image_uri(self, image_id: str) -> str:
        if not self._known(image_id):
            return ""
        inside(self._root, os.path.join(self._datastore.image_path(), image_id))
        start = time.monotonic()
        with self._pacs(f"fetching series {image_id}"):
            path = super().get_image_uri(image_id)
        cached = os.path.join(self._datastore.image_path(), f"{image_id}.nii.gz")
        if os.path.realpath(path) != os.path.realpath(cached) and os.path.isfile(cached):
            # the first fetch returns MONAI Label's temporary conversion (in the system temp folder)
            # after copying it into the cache: use the cached copy, drop the temporary one
            os.unlink(path)
            path = cached
        logger.info("series %s ready in %.2f s: %s", image_id, time.monotonic() - start, path)
        return str(inside(self._root, path))

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """A label saved here, by image id (any tag); else, for `final` with `image_id` (MONAI Label's
        datalist), the SEG series `label_id` fetched from the PACS and converted."""
        if not isinstance(label_id, str) or not UID_RULE.fullmatch(label_id) or not isinstance(label_tag, str):
            return ""
        check_name(label_tag, "label tag")
        path = LocalDatastore.get_label_uri(self, label_id, label_tag)
        if not path and label_tag == DefaultLabelTag.FINAL and image_id:
            with self._pacs(f"fetching SEG series {label_id}"):
                path = super().get_label_uri(label_id, label_tag, image_id)
        return str(inside(self._root, path)) if path else ""

    def json(self):
        """The cached entries, plus every series the PACS lists (not fetched yet: empty info)."""
        listing = super().json()
        objects = listing.setdefault("objects", {})
        for series in self.list_images():
            objects.setdefault(series, {"image": {"ext": "", "info": {"source": "pacs"}}, "labels": {}})
        return listing

    # -- writes --------------------------------------------------------------------------------
    def add_image(self, image_id, image_filename, image_info):
        raise BadRequestError(f"this server's datastore is the PACS {self.url}: send the DICOM series to the PACS "
                              "(STOW-RS, or Orthanc's POST /instances), or /infer with an uploaded file")

    def save_label(self, image_id, label_filename, label_tag, label_info, label_id=""):
        image_uri = self.get_image_uri(image_id)
        if not image_uri:
            raise ImageNotFoundException(f"unknown image {shown(image_id)}; GET /datastore/?output=all lists the ids")
        label_tag = check_name(label_tag, "label tag")
        label_info = dict(label_info or {})
        with as_http(upload=label_filename):
            check_image_file(label_filename, self._max_voxels, name="the label file")
            mask = read_mask(label_filename, like=read_volume(image_uri))
        if label_tag == DefaultLabelTag.FINAL:
            if not mask.array.any():
                raise BadRequestError(f"label for {image_id} has no foreground voxel: a DICOM SEG needs at least "
                                      "one segment (save it under another tag, e.g. ?tag=draft)")
            label_info.update(self._store_seg(image_id, label_filename, label_info))
        return LocalDatastore.save_label(self, image_id, label_filename, label_tag, label_info)

    def _store_seg(self, image_id: str, label_filename: str, label_info: dict) -> dict:
        """Convert the label to DICOM SEG, STOW it to the PACS; the info recorded with the label."""
        series_dir = str(inside(self._root, os.path.join(self._datastore.image_path(), image_id)))
        segments = label_info.get("label_info") or [{"name": name} for name in self._labels]
        start = time.monotonic()
        seg_file = label_to_dicom_seg(series_dir, label_filename, segments)
        try:
            dataset = dcmread(seg_file)
            with self._pacs("storing a DICOM SEG"):
                self._client.store_instances([dataset])
        finally:
            if seg_file and os.path.exists(seg_file):
                os.unlink(seg_file)
        logger.info("label of %s stored in the PACS as SEG series %s (%.2f s)", image_id,
                    dataset.SeriesInstanceUID, time.monotonic() - start)
        image_info = self.get_image_info(image_id)
        return {"SeriesInstanceUID": str(dataset.SeriesInstanceUID), "SOPInstanceUID": str(dataset.SOPInstanceUID),
                "Modality": "SEG", "PatientID": image_info.get("PatientID"),
                "StudyInstanceUID": image_info.get("StudyInstanceUID")}
