"""Small, distinct chest-CT volumes for the Ray batch tests, cut from the two sample lung scans.

Each volume is a 16-slice slab of lung1 or lung2 at a different start slice, every 4th voxel
in-plane (128 x 128 x 16, about 2.3-2.5 x 2.3-2.5 x 5 mm): whole slices, so the body and the
air around it are there and `lungs` (HU-only, `--refine hu`) succeeds in about 0.1 s per volume
once a worker is warm. Written with `medvl.io.write_volume`, so each file's geometry is the
scan's own grid at that slab (origin of its first voxel, spacing scaled by the stride).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medvl.batch.jobs import BatchSettings, VolumeJob, text_objects
from medvl.geometry import Geometry
from medvl.io import read_volume, write_volume
from medvl.volume import Volume

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_data"
STRIDE = 4  # in-plane: every 4th voxel of i and j
SLICES = 16
# (scan, first slice k): every slab holds both lungs (checked by the tests: every volume must end ok)
SLABS = (("lung1", 16), ("lung2", 4), ("lung1", 22), ("lung2", 10), ("lung1", 28), ("lung2", 16),
         ("lung1", 32), ("lung2", 22))
SETTINGS = BatchSettings(objects=text_objects(["lungs"]), refine="hu")


def slab(volume: Volume, k0: int, slices: int = SLICES, stride: int = STRIDE) -> Volume:
    """Slices k0 .. k0+slices-1 of `volume` (numpy (k, j, i)), every `stride`-th voxel along i and j.

    The geometry keeps the scan's direction; its origin is the LPS point of ITK index (0, 0, k0)
    and its spacing along i and j is multiplied by `stride`, so every kept voxel stays where it was.
    """
    if k0 + slices > volume.array.shape[0]:
        raise ValueError(f"slab k0={k0} + {slices} slices passes the scan's {volume.array.shape[0]} slices")
    g = volume.geometry
    geometry = Geometry(origin=g.index_to_physical((0, 0, k0)),
                        spacing=(g.spacing[0] * stride, g.spacing[1] * stride, g.spacing[2]),
                        direction=g.direction)
    array = np.ascontiguousarray(volume.array[k0:k0 + slices, ::stride, ::stride])
    return Volume(array, geometry, volume.modality, name=f"{volume.name}_k{k0}")


def make_jobs(folder: Path, count: int = len(SLABS)) -> list[VolumeJob]:
    """Write the first `count` slabs into `folder` -> one VolumeJob per file (case id = file stem)."""
    folder.mkdir(parents=True, exist_ok=True)
    scans: dict[str, Volume] = {}
    jobs = []
    for name, k0 in SLABS[:count]:
        if name not in scans:
            scans[name] = read_volume(SAMPLE_DIR / f"{name}_image.nii.gz")
        case_id = f"{name}_k{k0:02d}"
        path = write_volume(folder / f"{case_id}.nii.gz", slab(scans[name], k0))
        jobs.append(VolumeJob(case_id=case_id, source=str(path)))
    return jobs
