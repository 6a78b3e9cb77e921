"""Fixtures for the Slicer extension's tests: real MRML nodes from PyPI `slicer-core`.

`slicer-core` imports headless and has the MRML scene, volumes, markups and segmentation
nodes, but no Slicer application: no `slicer.app`, qt, ctk, `slicer.modules`. The
`mrml_scene` fixture gives `slicer` what the segmentation utilities need (see
../shared/ASSETS.md): the segmentation converter rules, `slicer.mrmlScene`, and
`slicer.modules.segmentations/volumes.logic()` bound to the scene.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODULE_DIR = ROOT / "MedVLSlicer"
SAMPLE_DIR = ROOT / "sample_data"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))  # MedVLSlicerLib, as Slicer's module path provides it


def _import_slicer_core():
    """Import slicer-core's `slicer` with this folder out of reach.

    slicer-core's `slicer/__init__.py` calls `pkgutil.extend_path` and imports every module
    of every `slicer/` folder found on sys.path. Whenever `tests/` is on sys.path (pytest
    run from inside tests/, or tests/ without an __init__.py) this very folder would join
    the package: its test files imported as `slicer.test_*` and copied into `slicer`.
    """
    if "slicer" in sys.modules:
        return sys.modules["slicer"]
    saved = sys.path[:]
    sys.path[:] = [p for p in saved if (Path(p or ".").resolve() / "slicer") != HERE]
    try:
        import slicer
    except ImportError:
        return None
    finally:
        sys.path[:] = saved
    return slicer


SLICER = _import_slicer_core()
_RULES_REGISTERED = False

# The real MONAI Label server is the session-scoped `server` fixture of tests/conftest.py.


def _register_converter_rules(slicer) -> None:
    global _RULES_REGISTERED
    if _RULES_REGISTERED:
        return
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    for rule in (
        "vtkBinaryLabelmapToClosedSurfaceConversionRule",
        "vtkClosedSurfaceToBinaryLabelmapConversionRule",
        "vtkClosedSurfaceToFractionalLabelmapConversionRule",
        "vtkFractionalLabelmapToClosedSurfaceConversionRule",
    ):
        if hasattr(slicer, rule):
            factory.RegisterConverterRule(getattr(slicer, rule)())
    _RULES_REGISTERED = True


@pytest.fixture
def slicer_mod():
    """The `slicer` package of slicer-core (visible skip when it is not installed)."""
    if SLICER is None:
        pytest.skip("slicer-core not installed: pip install -c requirements/constraints.txt -r requirements/slicer.txt")
    return SLICER


@pytest.fixture
def mrml_scene(slicer_mod):
    """A fresh MRML scene set as `slicer.mrmlScene`, with the module logics segmentations need."""
    slicer = slicer_mod
    _register_converter_rules(slicer)
    scene = slicer.vtkMRMLScene()
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLScene(scene)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    saved = {name: getattr(slicer, name, None) for name in ("mrmlScene", "modules")}
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(
        volumes=types.SimpleNamespace(logic=lambda: volumes),
        segmentations=types.SimpleNamespace(logic=lambda: segmentations),
    )
    yield scene
    scene.Clear(1)
    for name, value in saved.items():
        if value is None:
            delattr(slicer, name)
        else:
            setattr(slicer, name, value)


def load_volume(scene, path: Path, name: str, node_class="vtkMRMLScalarVolumeNode"):
    """Read a volume file into a new node of `scene` with Slicer's own storage node."""
    import slicer

    node = scene.AddNewNodeByClass(node_class, name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node), f"could not read {path}"
    return node


@pytest.fixture
def lung2(mrml_scene):
    """(image node, label array (k, j, i) uint8) of the real lung2 CT in `mrml_scene`."""
    image = SAMPLE_DIR / "lung2_image.nii.gz"
    label = SAMPLE_DIR / "lung2_label.nii.gz"
    if not image.exists():
        pytest.skip(f"{image} missing: run `python sample_data/make_sample_data.py`")
    import slicer

    volume = load_volume(mrml_scene, image, "lung2")
    label_node = load_volume(mrml_scene, label, "lung2_label", "vtkMRMLLabelMapVolumeNode")
    truth = (slicer.util.arrayFromVolume(label_node) > 0).astype(np.uint8)
    mrml_scene.RemoveNode(label_node)
    return volume, truth
