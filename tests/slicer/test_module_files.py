"""The extension's files agree with each other (no Slicer needed): the .ui has every widget
the module uses, its parameter bindings name real parameters, CMake lists every script,
the catalog entry follows the ExtensionsIndex schema, the icon is a 128x128 PNG."""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "MedVLSlicer"
SOURCE = (MODULE / "MedVLSlicer.py").read_text(encoding="utf-8")
UI = ET.parse(MODULE / "Resources" / "UI" / "MedVLSlicer.ui")


def ui_widgets() -> dict:
    return {w.get("name"): w.get("class") for w in UI.iter("widget")}


def parameter_fields() -> set:
    tree = ast.parse(SOURCE)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "MedVLSlicerParameterNode")
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_module_has_template_classes_and_stays_small():
    classes = {n.name for n in ast.parse(SOURCE).body if isinstance(n, ast.ClassDef)}
    assert {"MedVLSlicer", "MedVLSlicerParameterNode", "MedVLSlicerWidget", "MedVLSlicerLogic", "MedVLSlicerTest"} <= classes
    assert len(SOURCE.splitlines()) < 500
    imported = {a.name.split(".")[0] for n in ast.walk(ast.parse(SOURCE)) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(ast.parse(SOURCE)) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"urllib", "requests", "http", "socket"}  # network lives in MedVLSlicerLib.client


def test_every_widget_the_module_uses_is_in_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", SOURCE))
    missing = used - set(ui_widgets())
    assert not missing, f"MedVLSlicer.py uses widgets missing from MedVLSlicer.ui: {sorted(missing)}"


def test_ui_parameter_bindings_name_parameter_node_fields():
    bound = {}
    for widget in UI.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[widget.get("name")] = prop.find("string").text
    fields = parameter_fields()
    assert set(bound.values()) <= fields, f"unknown parameters: {set(bound.values()) - fields}"
    assert {"serverUrl", "inputVolume", "objectId", "axis", "autoPropagate", "textPrompt"} <= set(bound.values())


def test_ui_has_each_prompt_tool_and_control():
    widgets = ui_widgets()
    for name in ("foregroundPlaceWidget", "backgroundPlaceWidget", "roiPlaceWidget"):
        assert widgets[name] == "qSlicerMarkupsPlaceWidget"
    for name in ("connectButton", "segmentButton", "propagateButton", "undoButton", "resetButton", "acceptButton",
                 "cancelButton", "textSegmentButton", "reportButton"):
        assert widgets[name] == "QPushButton"
    assert widgets["progressBar"] == "QProgressBar" and widgets["reportTextBrowser"] == "QTextBrowser"
    receivers = {c.find("receiver").text for c in UI.iter("connection")}
    mrml = {n for n, cls in widgets.items() if cls in ("qMRMLNodeComboBox", "qSlicerMarkupsPlaceWidget")}
    assert mrml <= receivers, f"widgets without the scene: {mrml - receivers}"


def test_cmake_lists_every_script_and_resource():
    cmake = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    for path in sorted((MODULE / "MedVLSlicerLib").glob("*.py")):
        assert f"${{MODULE_NAME}}Lib/{path.name}" in cmake, f"{path.name} missing from MODULE_PYTHON_SCRIPTS"
    for resource in re.findall(r"Resources/\S+", cmake):
        assert (MODULE / resource.replace("${MODULE_NAME}", "MedVLSlicer")).is_file(), resource
    assert "WITH_GENERIC_TESTS" in cmake and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in cmake
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert f"set({key} " in top
    assert "add_subdirectory(MedVLSlicer)" in top and "find_package(Slicer REQUIRED)" in top


def test_catalog_entry_follows_the_extensions_index_schema():
    entry = json.loads((MODULE / "MedVLSlicer.json").read_text(encoding="utf-8"))
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}  # schema v1.0.2, additionalProperties false
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert entry["scm_type"] in ("git", "local") and 1 <= entry["tier"] <= 5


def test_icon_is_a_128_pixel_png():
    with Image.open(MODULE / "Resources" / "Icons" / "MedVLSlicer.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
