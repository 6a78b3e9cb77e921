"""Helpers of the Widget tests: the module under real Qt (qtslicer), clicks, waits, screenshots."""

from __future__ import annotations

import os
import time
from pathlib import Path

from . import qtslicer
from .conftest import MODULE_DIR, ROOT

ARTIFACTS = Path(os.environ.get("MEDVL_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts") / "slicer_widget"


def make_widget(slicer, monkeypatch):
    """(module, widget) with the harness installed, setup() run and three slice views' nodes
    in the scene (what Slicer's layout would create)."""
    qtslicer.install(slicer, monkeypatch)
    qtslicer.ERRORS.clear()
    for name in ("Red", "Yellow", "Green"):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode", name)
        node.SetLayoutName(name)
        {"Red": node.SetOrientationToAxial, "Yellow": node.SetOrientationToSagittal,
         "Green": node.SetOrientationToCoronal}[name]()
    module = qtslicer.load_module(MODULE_DIR / "MedVLSlicer.py")
    widget = module.MedVLSlicerWidget()
    widget.setup()
    qtslicer.unwrap(widget.parent).resize(440, 1500)
    qtslicer.unwrap(widget.parent).show()
    return module, widget


def click(button) -> None:
    assert button.enabled, f"{button.name} is disabled"
    button.click()


def wait_idle(widget, timeout_s: float = 60.0) -> float:
    """Run the event loop until the Widget's request is answered; seconds it took."""
    t0 = time.monotonic()
    assert qtslicer.process_until(lambda: widget._job is None, timeout_s), \
        f"request still running after {timeout_s} s: {widget.ui.statusLabel.text}"
    assert not qtslicer.ERRORS, qtslicer.ERRORS
    return time.monotonic() - t0


def status(widget) -> str:
    return widget.ui.statusLabel.text


def shot(widget, name: str) -> str:
    return qtslicer.screenshot(widget.parent, ARTIFACTS / f"{name}.png")
