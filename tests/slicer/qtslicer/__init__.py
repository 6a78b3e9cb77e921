"""Run a Slicer scripted module's Widget without Slicer: real Qt (PyQt5, offscreen), real MRML.

No 3D Slicer application can be installed here; PyPI `slicer-core` has MRML and
`slicer.util` but not Slicer's GUI layer. This package supplies that layer's few names the
MedVLSlicer module uses, mapped onto a real Qt 5 (the Qt major version Slicer 5 ships):

- `qt`: PyQt5's classes under PythonQt's conventions (`pythonqt.py`);
- `ctk` and the Slicer widgets of the .ui file (`widgets.py`), loaded from the real .ui by
  Slicer's own `slicer.util.loadUI` through a `qt.QUiLoader` over PyQt5's uic;
- `slicer.ScriptedLoadableModule` (`module.py`), `slicer.parameterNodeWrapper`
  (`params.py`, fields in a real vtkMRMLScriptedModuleNode), `slicer.i18n`.

What this proves and what it does not is written in docs/slicer_widget_harness.md.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PyQt5 import QtCore, QtGui, QtPrintSupport, QtWidgets  # noqa: E402

from . import module, params, widgets  # noqa: E402
from .pythonqt import QtNamespace, unwrap, wrap  # noqa: E402

_APP = None
ERRORS: list = []  # exceptions raised inside slots (PyQt5 would abort the process on them)


def application() -> QtWidgets.QApplication:
    """The process's QApplication (offscreen), created once."""
    global _APP
    if _APP is None:
        _APP = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["medvl-widget-tests"])
    return _APP


def modules(slicer) -> dict:
    """The sys.modules entries (name -> module) that make `import qt`, `ctk`, ... work."""
    qt = QtNamespace([QtCore, QtGui, QtWidgets, QtPrintSupport],
                     {"QUiLoader": widgets.QUiLoader, **{k: v for k, v in widgets.CUSTOM.items()}})
    ctk = types.ModuleType("ctk")
    ctk.ctkCollapsibleButton = widgets.ctkCollapsibleButton
    sl = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in module.__all__:
        setattr(sl, name, getattr(module, name))
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper, pnw.Choice, pnw.WithinRange = params.parameterNodeWrapper, params.Choice, params.WithinRange
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: QtCore.QCoreApplication.translate("MedVLSlicer", text)
    i18n.translate = lambda context, text: QtCore.QCoreApplication.translate(context, text)
    return {"qt": qt, "ctk": ctk, "slicer.ScriptedLoadableModule": sl, "slicer.parameterNodeWrapper": pnw,
            "slicer.i18n": i18n}


def install(slicer, monkeypatch) -> None:
    """Put the harness in place for one test (monkeypatch undoes it)."""
    application()
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: ERRORS.append(value))
    for name, mod in modules(slicer).items():
        monkeypatch.setitem(sys.modules, name, mod)
        if name.startswith("slicer."):
            monkeypatch.setattr(slicer, name.split(".", 1)[1], mod, raising=False)
    monkeypatch.setattr(slicer, "qSlicerMarkupsPlaceWidget", widgets.qSlicerMarkupsPlaceWidget, raising=False)


def load_module(path, name: str = "MedVLSlicer"):
    """Import a scripted module file as Slicer does (its folder on sys.path)."""
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def process_until(condition, timeout_s: float, step_ms: int = 10) -> bool:
    """Run the Qt event loop until `condition()` is true or `timeout_s` passes."""
    import time

    app, deadline = application(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app.processEvents(QtCore.QEventLoop.AllEvents, step_ms)
        if condition():
            return True
        time.sleep(step_ms / 1000)
    app.processEvents()
    return bool(condition())


def screenshot(widget, path) -> str:
    """Save what `widget` draws as PNG (its real Qt rendering, offscreen)."""
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    w = unwrap(widget)
    w.repaint()
    if not w.grab().save(str(path)):
        raise OSError(f"could not write {path}")
    return str(path)


__all__ = ["ERRORS", "application", "install", "load_module", "process_until", "screenshot", "wrap", "unwrap"]
