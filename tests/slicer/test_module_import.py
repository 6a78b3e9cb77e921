"""MedVLSlicer.py itself on slicer-core: its Logic and its Test's geometry check run.

slicer-core lacks Slicer's GUI layer (qt, ScriptedLoadableModule, parameterNodeWrapper,
i18n), so those four are replaced by minimal stand-ins just for the import; everything the
Logic and the Test touch (MRML nodes, MedVLSlicerLib) is real. The Widget needs Qt and is
covered by the module test in a real Slicer (README: "Run the module's test inside Slicer").
"""

from __future__ import annotations

import importlib.util
import sys
import types
import unittest

import pytest

from .conftest import MODULE_DIR


def gui_stand_ins(slicer) -> dict:
    qt = types.ModuleType("qt")
    qt.QTimer = type("QTimer", (), {})

    sl = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            super().__init__()

        def getParameterNode(self):
            return slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, *args, **kwargs):
            print(message)

    sl.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {"__init__": lambda self, parent: None})
    sl.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (), {"__init__": lambda self, parent=None: None})
    sl.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    sl.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest

    pnw = types.ModuleType("slicer.parameterNodeWrapper")

    def parameterNodeWrapper(cls):
        """Stand-in: attributes start at the class defaults (None for nodes)."""

        class Wrapped:
            def __init__(self, node):
                for name in cls.__annotations__:
                    setattr(self, name, getattr(cls, name, None))

        Wrapped.__name__ = cls.__name__
        return Wrapped

    pnw.parameterNodeWrapper = parameterNodeWrapper
    pnw.Choice = lambda choices: ("Choice", tuple(choices))
    pnw.WithinRange = lambda low, high: ("WithinRange", low, high)

    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    return {"qt": qt, "slicer.ScriptedLoadableModule": sl, "slicer.parameterNodeWrapper": pnw, "slicer.i18n": i18n}


@pytest.fixture
def module(mrml_scene, slicer_mod, monkeypatch):
    for name, stand_in in gui_stand_ins(slicer_mod).items():
        monkeypatch.setitem(sys.modules, name, stand_in)
    spec = importlib.util.spec_from_file_location("MedVLSlicer_under_test", MODULE_DIR / "MedVLSlicer.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def test_logic_is_the_lib_logic_and_makes_prompt_nodes(module, mrml_scene):
    from MedVLSlicerLib.logic import InteractiveLogic

    logic = module.MedVLSlicerLogic()
    assert isinstance(logic, InteractiveLogic) and logic.state is None
    parameters = logic.getParameterNode()
    assert parameters.serverUrl == "http://127.0.0.1:8000" and parameters.axis == "k" and parameters.objectId == 1
    logic.createPromptNodes(parameters)
    assert parameters.foregroundPoints.GetName() == "MedVL +" and parameters.backgroundPoints.GetName() == "MedVL -"
    assert parameters.boxRoi.IsA("vtkMRMLMarkupsROINode")
    before = mrml_scene.GetNumberOfNodes()
    logic.createPromptNodes(parameters)  # idempotent
    assert mrml_scene.GetNumberOfNodes() == before
    logic.forget()  # no session: nothing to do, nothing raised


def test_module_test_geometry_check_runs(module, mrml_scene):
    result = unittest.TextTestRunner(verbosity=0).run(module.MedVLSlicerTest("test_click_lands_on_voxel"))
    assert result.wasSuccessful(), result.failures + result.errors
