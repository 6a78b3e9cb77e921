"""The few CTK and Slicer widgets MedVLSlicer.ui uses, as small PyQt5 widgets over real MRML.

Each keeps the API the module and the .ui file call (`setMRMLScene`, `currentNode`,
`nodeTypes`, `collapsed`, `placeMultipleMarkups`, ...); what they draw is plain Qt. A
`qMRMLNodeComboBox` lists the real scene's nodes of its types and follows the scene's
node added / removed events.
"""

from __future__ import annotations

import io
import re
import sys
import types

from PyQt5 import QtCore, QtWidgets, uic

from .pythonqt import wrap


class ctkCollapsibleButton(QtWidgets.QGroupBox):
    """A checkable group box: unchecked = collapsed (children hidden)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setCheckable(True)
        self.setChecked(True)
        self.toggled.connect(self._show)

    def _show(self, expanded: bool):
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
            child.setVisible(expanded)

    def showEvent(self, event):  # children are added after `collapsed` is set from the .ui
        self._show(self.isChecked())
        super().showEvent(event)

    def setText(self, text):
        self.setTitle(text)

    def getCollapsed(self) -> bool:
        return not self.isChecked()

    def setCollapsed(self, value: bool):
        self.setChecked(not value)

    collapsed = QtCore.pyqtProperty(bool, getCollapsed, setCollapsed)


class qMRMLWidget(QtWidgets.QWidget):
    mrmlSceneChanged = QtCore.pyqtSignal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene):
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


qSlicerWidget = qMRMLWidget


class qMRMLNodeComboBox(QtWidgets.QComboBox):
    """Nodes of `nodeTypes` in the scene; `currentNodeChanged(node)` on a change."""

    currentNodeChanged = QtCore.pyqtSignal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene, self._types, self._tags = None, [], []
        self._none, self._showChildren, self._add, self._remove = False, True, False, False
        self.currentIndexChanged.connect(lambda index: self.currentNodeChanged.emit(self.currentNode()))

    def setNodeTypes(self, types_):
        self._types = list(types_)
        self._refill()

    def setNoneEnabled(self, value):
        self._none = bool(value)
        self._refill()

    def setShowChildNodeTypes(self, value):
        self._showChildren = bool(value)

    def setAddEnabled(self, value):
        self._add = bool(value)

    def setRemoveEnabled(self, value):
        self._remove = bool(value)

    def setMRMLScene(self, scene):
        if self._scene is not None:
            for tag in self._tags:
                self._scene.RemoveObserver(tag)
        self._scene, self._tags = scene, []
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent):
                self._tags.append(scene.AddObserver(event, lambda *a: self._refill()))
        self._refill()

    def _nodes(self):
        if self._scene is None:
            return []
        out = []
        for cls in self._types:
            for i in range(self._scene.GetNumberOfNodesByClass(cls)):
                node = self._scene.GetNthNodeByClass(i, cls)
                if (self._showChildren or node.GetClassName() == cls) and node.GetHideFromEditors() == 0:
                    out.append(node)
        return out

    def _refill(self):
        current = self.currentNode()
        self.blockSignals(True)
        self.clear()
        if self._none:
            self.addItem("None", "")
        for node in self._nodes():
            self.addItem(node.GetName(), node.GetID())
        index = self.findData(current.GetID() if current is not None else "")
        self.setCurrentIndex(max(index, 0) if self.count() else -1)
        self.blockSignals(False)
        if self.currentNode() is not current:
            self.currentNodeChanged.emit(self.currentNode())

    def currentNode(self):
        node_id = self.currentData()
        return self._scene.GetNodeByID(node_id) if self._scene is not None and node_id else None

    def currentNodeID(self):
        node = self.currentNode()
        return node.GetID() if node is not None else ""

    def setCurrentNode(self, node):
        index = self.findData(node.GetID() if node is not None else "")
        if index < 0 and node is not None:
            self._refill()
            index = self.findData(node.GetID())
        self.setCurrentIndex(index)


class qSlicerMarkupsPlaceWidget(QtWidgets.QWidget):
    """A 'place' toggle and a 'delete all' button for the current markups node."""

    ForcePlaceSingleMarkup, ForcePlaceMultipleMarkups, HidePlaceMultipleMarkupsOption, ShowPlaceMultipleMarkupsOption = 0, 1, 2, 3

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.placeButton = QtWidgets.QToolButton(self)
        self.placeButton.setObjectName("placeButton")
        self.placeButton.setText("Place")
        self.placeButton.setCheckable(True)
        self.deleteButton = QtWidgets.QToolButton(self)
        self.deleteButton.setObjectName("deleteButton")
        self.deleteButton.setText("Delete all")
        self.deleteButton.clicked.connect(self._deleteAll)
        self.countLabel = QtWidgets.QLabel("0 points", self)
        for w in (self.placeButton, self.deleteButton, self.countLabel):
            layout.addWidget(w)
        self._node, self._tag, self._multiple, self._buttons = None, None, 0, True

    def setMRMLScene(self, scene):
        pass

    def setCurrentNode(self, node):
        if self._node is not None and self._tag is not None:
            self._node.RemoveObserver(self._tag)
        self._node, self._tag = node, None
        if node is not None:
            self._tag = node.AddObserver(node.PointModifiedEvent if hasattr(node, "PointModifiedEvent")
                                         else "ModifiedEvent", lambda *a: self._count())
            node.AddObserver("ModifiedEvent", lambda *a: self._count())
        self._count()

    def currentNode(self):
        return self._node

    def _count(self):
        n = self._node.GetNumberOfControlPoints() if self._node is not None else 0
        self.countLabel.setText(f"{n} points")

    def _deleteAll(self):
        if self._node is not None:
            self._node.RemoveAllControlPoints()

    def getPlaceMultiple(self) -> int:
        return self._multiple

    def setPlaceMultiple(self, value: int):
        self._multiple = int(value)

    def getButtonsVisible(self) -> bool:
        return self._buttons

    def setButtonsVisible(self, value: bool):
        self._buttons = bool(value)
        self.placeButton.setVisible(self._buttons)
        self.deleteButton.setVisible(self._buttons)

    placeMultipleMarkups = QtCore.pyqtProperty(int, getPlaceMultiple, setPlaceMultiple)
    buttonsVisible = QtCore.pyqtProperty(bool, getButtonsVisible, setButtonsVisible)


CUSTOM = {cls.__name__: cls for cls in (ctkCollapsibleButton, qMRMLWidget, qMRMLNodeComboBox,
                                        qSlicerMarkupsPlaceWidget)}
CUSTOM["qSlicerWidget"] = qSlicerWidget


def register_headers() -> None:
    """uic imports a custom widget's class from the module named by its header file."""
    for name, cls in CUSTOM.items():
        module = sys.modules.setdefault(name, types.ModuleType(name))
        setattr(module, name, cls)


class QUiLoader:
    """PythonQt's `qt.QUiLoader().load(qfile)` over PyQt5's `uic`."""

    def load(self, qfile, parent=None):
        register_headers()
        with open(qfile.fileName(), encoding="utf-8") as f:
            text = f.read()
        # a VTK pointer in a signal signature is a Python object to PyQt5
        text = re.sub(r"\((vtk\w+)\*\)", "(PyQt_PyObject)", text)
        return wrap(uic.loadUi(io.StringIO(text)))
