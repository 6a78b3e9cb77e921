"""Regenerate the sample volumes (NIfTI) from the pyradiomics 3.0.1 source archive (BSD-3).

    python sample_data/make_sample_data.py                 # pip download the sdist, then convert
    python sample_data/make_sample_data.py --from DIR      # DIR = an extracted pyradiomics-3.0.1/

Needs numpy, SimpleITK, and for the download setuptools and versioneer in the same
environment (`--no-build-isolation`: otherwise pip tries to build numpy). Every converted
file is read back and checked voxel by voxel and for geometry against its NRRD source.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
VERSION = "3.0.1"
CASES = {  # case -> modality
    "lung1": "CT",
    "lung2": "CT",
    "brain1": "MR",
}
GEOMETRY_TOL = 1e-5  # mm; NIfTI stores spacing and origin as float32
NUMPY_TYPE = {sitk.sitkInt16: np.int16, sitk.sitkUInt8: np.uint8}
NOTICE_HEAD = f"""The sample volumes in this folder (lung1_*, lung2_*, brain1_*.nii.gz) are the files
data/<case>_image.nrrd and data/<case>_label.nrrd of the pyradiomics {VERSION} source archive
(PyPI sdist pyradiomics-{VERSION}.tar.gz, https://github.com/AIM-Harvard/pyradiomics),
converted to NIfTI by make_sample_data.py with SimpleITK: voxel values and geometry unchanged
(images stored as int16, labels as uint8; checked voxel by voxel after conversion).
They are redistributed under pyradiomics' license, reproduced below.

----------------------------------------------------------------------------------------
"""


def download(tmp: Path) -> Path:
    """pip-download the pyradiomics sdist into tmp and extract its data/*.nrrd and LICENSE.txt."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--no-build-isolation", "-d", str(tmp), f"pyradiomics=={VERSION}"],
        check=True,
    )
    archive = tmp / f"pyradiomics-{VERSION}.tar.gz"
    root = f"pyradiomics-{VERSION}"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers()
                   if (m.name.startswith(f"{root}/data/") and m.name.endswith(".nrrd"))
                   or m.name == f"{root}/LICENSE.txt"]
        tar.extractall(tmp, members=members, filter="data")
    return tmp / root


def convert(src: Path, dst: Path, pixel_type: int) -> sitk.Image:
    """NRRD -> NIfTI with a cast to pixel_type (checked lossless) and a read-back check."""
    image = sitk.ReadImage(str(src))
    array = sitk.GetArrayFromImage(image)
    info = np.iinfo(NUMPY_TYPE[pixel_type])
    if array.min() < info.min or array.max() > info.max:
        sys.exit(f"{src.name}: values {array.min()}..{array.max()} do not fit {info.dtype}")
    sitk.WriteImage(sitk.Cast(image, pixel_type), str(dst), useCompression=True)

    back = sitk.ReadImage(str(dst))
    if not np.array_equal(sitk.GetArrayFromImage(back), array):
        sys.exit(f"{dst.name}: voxel values changed in conversion")
    for name in ("Origin", "Spacing", "Direction"):
        a, b = getattr(image, f"Get{name}")(), getattr(back, f"Get{name}")()
        if not np.allclose(a, b, rtol=0, atol=GEOMETRY_TOL):
            sys.exit(f"{dst.name}: {name.lower()} changed in conversion: {a} -> {b}")
    return back


def describe_label(label: sitk.Image) -> dict:
    """Foreground voxel count and first/last slice index (k) holding label voxels."""
    array = sitk.GetArrayFromImage(label)
    slices = np.nonzero(array.any(axis=(1, 2)))[0]
    return {"label_voxels": int(np.count_nonzero(array)),
            "label_slices": [int(slices.min()), int(slices.max())],
            "label_values": [int(v) for v in np.unique(array) if v]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path,
                        help="extracted pyradiomics-3.0.1 folder (skips the download)")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: this folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or download(Path(tmp))
        cases = []
        for case, modality in CASES.items():
            image = convert(source / "data" / f"{case}_image.nrrd", args.out / f"{case}_image.nii.gz",
                            sitk.sitkInt16)
            label = convert(source / "data" / f"{case}_label.nrrd", args.out / f"{case}_label.nii.gz",
                            sitk.sitkUInt8)
            cases.append({
                "case": case, "image": f"{case}_image.nii.gz", "label": f"{case}_label.nii.gz",
                "modality": modality, "source": f"pyradiomics-{VERSION}/data/{case}_image.nrrd, {case}_label.nrrd",
                "size_ijk": list(image.GetSize()), "spacing": [round(s, 6) for s in image.GetSpacing()],
                **describe_label(label),
            })
            print(f"{case}: {cases[-1]}")
        license_text = (source / "LICENSE.txt").read_text()

    lines = ",\n    ".join(json.dumps(case) for case in cases)  # one case per line
    (args.out / "cases.json").write_text(f'{{\n  "cases": [\n    {lines}\n  ]\n}}\n')
    (args.out / "NOTICE").write_text(NOTICE_HEAD + license_text)
    print(f"wrote {len(cases)} cases, cases.json and NOTICE to {args.out}")


if __name__ == "__main__":
    main()
