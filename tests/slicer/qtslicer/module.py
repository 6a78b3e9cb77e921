"""`slicer.ScriptedLoadableModule` for the harness: the base classes' parts the module uses.

The Widget's parent is a plain QWidget with a vertical layout, as Slicer's module panel
gives it; `isEntered` says whether the module is shown. The Logic's parameter node is the
scene's singleton vtkMRMLScriptedModuleNode tagged with the module's name, as in Slicer.
"""

from __future__ import annotations

import os
import unittest

from PyQt5 import QtWidgets

from .pythonqt import PQ, wrap


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = type(self).__name__


class ModuleParent:
    """What Slicer hands a module's __init__: a bag of title, categories, help text..."""

    def __init__(self):
        self.title, self.categories, self.dependencies, self.contributors = "", [], [], []
        self.helpText = self.acknowledgementText = ""


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.moduleName = type(self).__name__[: -len("Widget")]
        if parent is None:
            panel = QtWidgets.QWidget()
            QtWidgets.QVBoxLayout(panel)
            parent = wrap(panel)
        self.parent = parent
        self.parent.isEntered = True  # a Python attribute on the panel, as Slicer's qSlicer... has
        self.layout = None

    def setup(self):
        self.layout = self.parent.layout()

    def resourcePath(self, filename):
        return os.path.join(self._moduleDir(), "Resources", filename)

    def _moduleDir(self):
        import sys

        return os.path.dirname(os.path.abspath(sys.modules[type(self).__module__].__file__))

    def cleanup(self):
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = type(self).__name__[: -len("Logic")]

    def getParameterNode(self):
        import slicer

        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetName(self.moduleName)
            node = scene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, *args, **kwargs):
        print(message)


__all__ = ["PQ", "ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
           "ScriptedLoadableModuleTest", "ModuleParent"]
