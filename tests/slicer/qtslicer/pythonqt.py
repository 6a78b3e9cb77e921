"""PythonQt's calling conventions on top of PyQt5 objects.

Slicer's Python sees Qt through PythonQt, which differs from PyQt5 in three ways the module
relies on:

- a Qt property reads and writes as an attribute (`button.enabled = False`,
  `lineEdit.text.strip()`, `label.toolTip = "..."`), taking precedence over a method of the
  same name;
- `obj.connect("clicked(bool)", slot)` connects by signature, and a slot that takes fewer
  arguments than the signal sends gets the first ones;
- `obj.name` is the object name.

`PQ` wraps a PyQt5 object with those rules; every QObject that comes out of a call is
wrapped again, every argument going in is unwrapped, so code written for PythonQt runs
unchanged. `QtNamespace` is the `qt` module: its classes construct wrapped objects.
"""

from __future__ import annotations

import inspect

from PyQt5 import QtCore


def unwrap(value):
    if isinstance(value, PQ):
        return object.__getattribute__(value, "_o")
    if isinstance(value, (list, tuple)):
        return type(value)(unwrap(v) for v in value)
    return value


def wrap(value):
    if isinstance(value, QtCore.QObject) and not isinstance(value, PQ):
        return PQ(value)
    if isinstance(value, list):
        return [wrap(v) for v in value]
    return value


def _accepted(fn) -> int | None:
    """How many positional arguments `fn` takes (None: any number)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def slot(fn):
    """`fn` called as PythonQt calls a slot: wrapped arguments, extra ones dropped."""
    n = _accepted(fn)

    def call(*args):
        args = [wrap(a) for a in args]
        return fn(*(args if n is None else args[:n]))

    return call


def _is_property(obj, name: str) -> bool:
    return not name.startswith("_") and obj.metaObject().indexOfProperty(name) >= 0


class PQ:
    """A PyQt5 object seen the way PythonQt shows it (see the module docstring)."""

    __slots__ = ("_o",)

    def __init__(self, obj):
        object.__setattr__(self, "_o", obj)

    def __getattr__(self, name):
        obj = object.__getattribute__(self, "_o")
        if name == "name":
            return obj.objectName()
        if _is_property(obj, name):
            return wrap(obj.property(name))
        attr = getattr(obj, name)
        if callable(attr) and not isinstance(attr, (QtCore.pyqtBoundSignal,)):
            def method(*args, **kwargs):
                return wrap(attr(*unwrap(list(args)), **{k: unwrap(v) for k, v in kwargs.items()}))
            return method
        return attr

    def __setattr__(self, name, value):
        obj = object.__getattribute__(self, "_o")
        if _is_property(obj, name):
            if not obj.setProperty(name, unwrap(value)):
                raise AttributeError(f"{type(obj).__name__}.{name} could not be set to {value!r}")
        else:
            setattr(obj, name, value)

    def connect(self, signature: str, fn):
        """PythonQt's `obj.connect("signal(args)", slot)`."""
        obj = object.__getattribute__(self, "_o")
        name = signature.split("(", 1)[0]
        signal = getattr(obj, name, None)
        if not isinstance(signal, QtCore.pyqtBoundSignal):
            raise AttributeError(f"{type(obj).__name__} has no signal {signature!r}")
        signal.connect(slot(fn))

    def __eq__(self, other):
        return object.__getattribute__(self, "_o") is unwrap(other)

    def __hash__(self):
        return id(object.__getattribute__(self, "_o"))

    def __repr__(self):
        obj = object.__getattribute__(self, "_o")
        return f"PQ({type(obj).__name__} {obj.objectName()!r})"


class QtClass:
    """A Qt class as PythonQt's `qt.X`: calling it makes a wrapped object; constants pass."""

    def __init__(self, cls):
        self._cls = cls

    def __call__(self, *args, **kwargs):
        return wrap(self._cls(*unwrap(list(args)), **kwargs))

    def __getattr__(self, name):
        return wrap(getattr(self._cls, name))


class QtNamespace:
    """The `qt` module: every class of the given PyQt5 modules, plus `extra` names."""

    def __init__(self, modules, extra: dict):
        self._modules, self._extra = modules, extra

    def __getattr__(self, name):
        if name in self._extra:
            return self._extra[name]
        for module in self._modules:
            value = getattr(module, name, None)
            if value is None:
                continue
            if isinstance(value, type) and issubclass(value, QtCore.QObject):
                return QtClass(value)
            return value
        raise AttributeError(f"qt has no {name!r} in this harness (tests/slicer/qtslicer)")
