"""MONAI Label's local datastore, contained in its studies folder, with checked uploads and atomic writes.

Every method that takes an id or tag checks it (`medvl.server.containment`): existing
images and labels are found by exact datastore membership (unknown -> 404), new image
ids and label tags must follow the safe-name rule (else 400), and every path is checked
to lie inside the studies folder before it is read, written or deleted.

- `add_image` (PUT /datastore/image) refuses a file that is not a bounded, complete 3D
  image (`medvl.server.uploads.check_image_file`, then a full decode) and copies it in
  atomically (hidden `.part` name, then `os.replace`).
- `save_label` (PUT /datastore/label, `save_label` of an inference) refuses an unknown
  image (404), and a label that is not a readable 3D integer image in the image's exact
  grid (400, naming the difference); written atomically the same way, so readers, the
  folder watcher and a server killed mid-write never leave half a label.
- At start, `.part` files and `.medvl-tmp/` uploads a killed server left are removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid

from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.interfaces.exception import ImageNotFoundException, LabelNotFoundException

from medvl.io import read_mask, read_volume
from medvl.server.containment import check_name, inside, shown, upload_extension
from medvl.server.http import as_http
from medvl.server.uploads import PART_SUFFIX, check_image_file, clean_stale

logger = logging.getLogger(__name__)


class CheckedLocalDatastore(LocalDatastore):
    def __init__(self, datastore_path: str, max_voxels: int, **kwargs):
        clean_stale(datastore_path)
        self._max_voxels = max_voxels
        super().__init__(datastore_path, **kwargs)
        self._root = os.path.realpath(datastore_path)

    # -- lookups: exact membership, paths checked ------------------------------------------
    def _image(self, image_id):
        obj = self._datastore.objects.get(image_id) if isinstance(image_id, str) else None
        if obj is None:
            raise ImageNotFoundException(f"unknown image {shown(image_id)}; GET /datastore/?output=all lists the ids")
        return obj

    def _label_path(self, image_id, tag) -> str:
        obj = self._image(image_id)
        label = obj.labels.get(tag) if isinstance(tag, str) else None
        if label is None:
            raise LabelNotFoundException(f"image {shown(image_id)} has no label tagged {shown(tag)}; it has: "
                                         f"{', '.join(sorted(obj.labels)) or 'none'}")
        return str(inside(self._root, os.path.join(self._datastore.label_path(tag), self._filename(image_id, label.ext))))

    def get_image_uri(self, image_id: str) -> str:
        obj = self._datastore.objects.get(image_id) if isinstance(image_id, str) else None
        if obj is None:
            return ""
        return str(inside(self._root, os.path.join(self._datastore.image_path(),
                                                   self._filename(image_id, obj.image.ext))))

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        try:
            return self._label_path(label_id, label_tag)
        except (ImageNotFoundException, LabelNotFoundException):
            return ""

    def get_image_info(self, image_id: str):
        self._image(image_id)
        return super().get_image_info(image_id)

    def get_label_info(self, label_id: str, label_tag: str):
        self._label_path(label_id, label_tag)
        return super().get_label_info(label_id, label_tag)

    def get_dataset_archive(self, limit_cases):
        if not self.datalist():  # the stock code asserts (HTTP 500)
            raise LabelNotFoundException("no image has a final label yet: save labels before downloading the dataset")
        return super().get_dataset_archive(limit_cases)

    # -- writes ------------------------------------------------------------------------------
    def add_image(self, image_id, image_filename, image_info):
        ext = upload_extension(os.path.basename(image_filename))
        image_id = check_name(image_id, "image id")
        with as_http(upload=image_filename):
            check_image_file(image_filename, self._max_voxels)
            read_volume(image_filename)  # every pixel decodes
        name = self._filename(image_id, ext)
        dest = str(inside(self._root, os.path.join(self._datastore.image_path(), name)))
        old = self._datastore.objects.get(image_id)
        with self._copy_in(image_filename, dest):
            info = dict(image_info or {}, ts=int(time.time()), name=name)
            labels = old.labels if old is not None and old.image.ext == ext else {}
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext), labels=labels)
        if old is not None and old.image.ext != ext:  # same id, other format: the old file goes
            self._unlink(os.path.join(self._datastore.image_path(), self._filename(image_id, old.image.ext)))
        logger.info("image %s added (%s)", image_id, name)
        return image_id

    def save_label(self, image_id, label_filename, label_tag, label_info):
        obj = self._image(image_id)
        label_tag = check_name(label_tag, "label tag")
        ext = upload_extension(os.path.basename(label_filename))
        with as_http(upload=label_filename):
            check_image_file(label_filename, self._max_voxels, name="the label file")
            read_mask(label_filename, like=read_volume(self.get_image_uri(image_id)))
        name = self._filename(image_id, ext)
        folder = inside(self._root, self._datastore.label_path(label_tag))
        dest = str(inside(self._root, folder / name))
        with self._copy_in(label_filename, dest):
            obj.labels[label_tag] = DataModel(info=dict(label_info or {}, ts=int(time.time()), name=name), ext=ext)
        logger.info("label %s/%s saved for image %s", label_tag, name, image_id)
        return image_id

    def remove_image(self, image_id: str) -> None:
        obj = self._image(image_id)
        for tag in list(obj.labels):
            self._unlink(self._label_path(image_id, tag))
        self._unlink(self.get_image_uri(image_id))
        logger.info("image %s removed with its labels", image_id)
        self.refresh()

    def remove_label(self, label_id: str, label_tag: str) -> None:
        self._unlink(self._label_path(label_id, label_tag))
        logger.info("label %s/%s removed", label_tag, label_id)
        self.refresh()

    def _unlink(self, path: str) -> None:
        path = inside(self._root, path)
        if path.is_file():
            path.unlink()

    @contextlib.contextmanager
    def _copy_in(self, source: str, dest: str):
        """Copy `source` to a hidden `.part` next to `dest`, then, under the datastore's file lock,
        rename it over `dest`; the block records it and the datastore file is saved. The `.part`
        never survives (and a killed server's are removed at start)."""
        folder, name = os.path.split(dest)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")  # matches no watched pattern
        try:
            shutil.copyfile(source, tmp)
            with FileLock(self._lock_file):
                os.replace(tmp, dest)
                yield
                self._update_datastore_file(lock=False)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
