"""Small distinct CT volumes for the local batch tests: crops of the sample lung2 scan around its
expert-labelled nodule (8 slices, so one box propagates in a few seconds), and the box of that
nodule on its largest slice in voxel and LPS coordinates of each crop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvl.geometry import Geometry
from medvl.io import read_mask, read_volume, write_mask, write_volume
from medvl.slicing import bbox2d
from medvl.volume import Volume

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@dataclass
class Case:
    path: Path
    label: Path
    box_voxel: list[int]  # i0, j0, k0, i1, j1, k1 on the label's largest slice
    box_lps: list[float]


def crop(volume: Volume, k0, k1, j0, j1, i0, i1) -> Volume:
    g = volume.geometry
    origin = g.index_to_physical((i0, j0, k0))
    geometry = Geometry(origin=tuple(float(v) for v in origin), spacing=g.spacing, direction=g.direction)
    return Volume(volume.array[k0:k1, j0:j1, i0:i1].copy(), geometry, volume.modality, volume.name)


def make_cases(folder: Path, offsets=((0, 0), (8, -6), (-6, 10))) -> list[Case]:
    """One crop per (dj, di) offset of an 8 x 112 x 128 window around lung2's nodule."""
    image = read_volume(SAMPLE / "lung2_image.nii.gz")
    label = read_mask(SAMPLE / "lung2_label.nii.gz").array > 0
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for n, (dj, di) in enumerate(offsets):
        window = (16, 24, 310 + dj, 422 + dj, 300 + di, 428 + di)
        vol, lab = crop(image, *window), crop(Volume(label.astype(np.uint8), image.geometry, "OT"), *window)
        path, lpath = folder / f"crop{n}.nii.gz", folder.parent / f"{folder.name}_labels" / f"crop{n}_label.nii.gz"
        write_volume(path, vol)
        write_mask(lpath, lab.array, like=vol)
        k = int(np.argmax(lab.array.sum(axis=(1, 2))))
        x0, y0, x1, y1 = bbox2d(lab.array[k] > 0)
        box = [x0, y0, k, x1, y1, k]
        lps = [*vol.geometry.index_to_physical(box[:3]), *vol.geometry.index_to_physical(box[3:])]
        cases.append(Case(path, lpath, box, [float(v) for v in lps]))
    return cases
