"""`slicer.parameterNodeWrapper` for the harness: typed fields stored in a real
vtkMRMLScriptedModuleNode (plain values as parameters, nodes as node references, so they
are saved with the scene as in Slicer), and `connectGui` binding every widget whose
`SlicerParameterName` property names a field, both ways.
"""

from __future__ import annotations

import typing

from PyQt5 import QtWidgets

from .pythonqt import PQ, unwrap
from .widgets import qMRMLNodeComboBox


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)


class WithinRange:
    def __init__(self, low, high):
        self.low, self.high = low, high


def _field(hint):
    """(base type, choices or None, (low, high) or None) of an annotation."""
    choices = bounds = None
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
        for extra in extras:
            if isinstance(extra, Choice):
                choices = extra.choices
            if isinstance(extra, WithinRange):
                bounds = (extra.low, extra.high)
        return base, choices, bounds
    return hint, None, None


def _is_node_type(base) -> bool:
    return isinstance(base, type) and hasattr(base, "GetNodeTagName")


def parameterNodeWrapper(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {name: _field(hint) for name, hint in hints.items()}
    defaults = {name: getattr(cls, name, None) for name in fields}

    class Wrapper:
        def __init__(self, node):
            object.__setattr__(self, "_node", node)
            object.__setattr__(self, "_guis", {})
            for name, (base, _, _) in fields.items():
                if not _is_node_type(base) and not node.GetParameter(name) and defaults[name] is not None:
                    setattr(self, name, defaults[name])

        @property
        def parameterNode(self):
            return self._node

        def __getattr__(self, name):
            if name not in fields:
                raise AttributeError(f"{cls.__name__} has no parameter {name!r}")
            base = fields[name][0]
            node = object.__getattribute__(self, "_node")
            if _is_node_type(base):
                return node.GetNodeReference(name)
            raw = node.GetParameter(name)
            if base is bool:
                return raw == "true"
            return base(raw) if raw != "" or base is str else defaults[name]

        def __setattr__(self, name, value):
            if name not in fields:
                raise AttributeError(f"{cls.__name__} has no parameter {name!r}")
            base, choices, bounds = fields[name]
            if _is_node_type(base):
                self._node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
                return
            if choices is not None and value not in choices:
                raise ValueError(f"{name}={value!r} is not one of {choices}")
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                raise ValueError(f"{name}={value!r} is outside {bounds}")
            self._node.SetParameter(name, ("true" if value else "false") if base is bool else str(value))

        # --- GUI binding ----------------------------------------------------------------
        def connectGui(self, ui):
            widgets = {}
            for widget in vars(ui).values():
                if isinstance(widget, PQ):
                    name = unwrap(widget).property("SlicerParameterName")
                    if name in fields:
                        widgets[name] = unwrap(widget)
            state = {"updating": False}

            def toGui(*args):
                state["updating"] = True
                try:
                    for name, w in widgets.items():
                        _set_widget(w, getattr(self, name), fields[name][1])
                finally:
                    state["updating"] = False

            def fromGui(name, value):
                if not state["updating"]:
                    setattr(self, name, value)

            for name, w in widgets.items():
                _connect_widget(w, lambda value, name=name: fromGui(name, value))
            tag = self._node.AddObserver("ModifiedEvent", toGui)
            toGui()
            self._guis[tag] = widgets
            return tag

        def disconnectGui(self, tag):
            if tag in self._guis:
                self._node.RemoveObserver(tag)
                for w in self._guis.pop(tag).values():
                    _disconnect_widget(w)

    Wrapper.__name__ = Wrapper.__qualname__ = cls.__name__
    return Wrapper


def _set_widget(w, value, choices):
    if isinstance(w, qMRMLNodeComboBox):
        if w.currentNode() is not value:
            w.setCurrentNode(value)
    elif isinstance(w, QtWidgets.QComboBox):
        if choices is not None and w.count() != len(choices):
            w.clear()
            w.addItems(choices)
        w.setCurrentText(str(value))
    elif isinstance(w, QtWidgets.QLineEdit):
        if w.text() != value:
            w.setText(value)
    elif isinstance(w, QtWidgets.QSpinBox):
        w.setValue(int(value))
    elif isinstance(w, QtWidgets.QAbstractButton):
        w.setChecked(bool(value))


def _signal(w):
    if isinstance(w, qMRMLNodeComboBox):
        return w.currentNodeChanged
    if isinstance(w, QtWidgets.QComboBox):
        return w.currentTextChanged
    if isinstance(w, QtWidgets.QLineEdit):
        return w.textChanged
    if isinstance(w, QtWidgets.QSpinBox):
        return w.valueChanged
    return w.toggled


_CONNECTED = {}  # id(widget) -> the slot connected by connectGui


def _connect_widget(w, fn):
    _CONNECTED[id(w)] = fn
    _signal(w).connect(fn)


def _disconnect_widget(w):
    fn = _CONNECTED.pop(id(w), None)
    if fn is not None:
        _signal(w).disconnect(fn)
