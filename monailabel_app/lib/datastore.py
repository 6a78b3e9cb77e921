"""MONAI Label's local datastore, with uploads checked and label files written atomically.

- `add_image` (PUT /datastore/image) refuses a file that is not a readable 3D image (400).
- `save_label` (PUT /datastore/label) refuses an unknown image (404), and a label that is
  not a readable 3D integer image in the image's exact grid (400, naming the difference);
  the file is written to a hidden temporary name in the labels folder, then renamed over
  the old one (`os.replace`), so readers and the folder watcher never see half a label.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid

from fastapi import HTTPException
from monailabel.datastore.local import DataModel, LocalDatastore

from medvl.io import read_mask, read_volume
from medvl.server.http import as_http

logger = logging.getLogger(__name__)


class CheckedLocalDatastore(LocalDatastore):
    def add_image(self, image_id, image_filename, image_info):
        with as_http(upload=image_filename):
            read_volume(image_filename)
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id, label_filename, label_tag, label_info):
        obj = self._datastore.objects.get(image_id)
        if not obj:
            raise HTTPException(404, f"unknown image {image_id!r}: a label needs an image of the datastore")
        with as_http(upload=label_filename):
            read_mask(label_filename, like=read_volume(self.get_image_uri(image_id)))

        _, label_ext = self._to_id(os.path.basename(label_filename))
        name = self._filename(image_id, label_ext)
        folder = self._datastore.label_path(label_tag)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.part")  # matches no watched pattern
        try:
            shutil.copyfile(label_filename, tmp)
            with self._file_lock():
                os.replace(tmp, os.path.join(folder, name))
                label_info = dict(label_info or {}, ts=int(time.time()), name=name)
                obj.labels[label_tag] = DataModel(info=label_info, ext=label_ext)
                self._update_datastore_file(lock=False)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        logger.info("label %s/%s saved for image %s", label_tag, name, image_id)
        return image_id

    def _file_lock(self):
        from filelock import FileLock

        return FileLock(self._lock_file)
