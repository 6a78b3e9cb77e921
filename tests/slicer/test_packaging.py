"""Extension metadata points at files of this repository; user-facing strings are translatable."""

from __future__ import annotations

import ast
import json
import re

import pytest

from .conftest import MODULE_DIR, ROOT


def test_metadata_paths_exist_in_the_repository():
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    values = dict(re.findall(r'set\((EXTENSION_\w+) "([^"]*)"\)', top))
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for path in values[key].split():
            assert (ROOT / path.split("#")[0]).is_file(), f"{key}: {path} is not a file of the repository"
    assert "#use-it-from-3d-slicer" in values["EXTENSION_HOMEPAGE"]
    assert "## Use it from 3D Slicer" in (ROOT / "README.md").read_text(encoding="utf-8")
    entry = json.loads((MODULE_DIR / "MedVLSlicer.json").read_text(encoding="utf-8"))
    assert (ROOT / entry["scm_url"] / entry["build_subdirectory"] / "CMakeLists.txt").is_file()


@pytest.mark.parametrize("path", ["MedVLSlicer.py", "MedVLSlicerLib/widget_assist.py"])
def test_user_facing_strings_go_through_the_translate_function(path):
    """Status lines, labels, messages: a string literal handed to them directly is untranslatable."""
    tree = ast.parse((MODULE_DIR / path).read_text(encoding="utf-8"))
    shown = {"_status", "setText", "setFormat", "setPlaceholderText", "setToolTip", "getSaveFileName"}
    bare = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in shown:
            for arg in node.args:
                if (isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.strip()
                        and not re.fullmatch(r"[\w.-]+\.\w+", arg.value)):  # a file name is not translated
                    bare.append((node.lineno, arg.value))
                if isinstance(arg, ast.JoinedStr):
                    bare.append((node.lineno, "f-string"))
    assert not bare, f"{path}: wrap these in _(): {bare}"
