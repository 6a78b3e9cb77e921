"""Run the module's MedVLSlicerTest inside 3D Slicer and exit with its result.

    medvl serve &                                   # the server the end-to-end test talks to
    Slicer --no-main-window --additional-module-paths MedVLSlicer \
           --python-script MedVLSlicer/Testing/run_selftest.py

MEDVL_SERVER_URL overrides the server (default http://127.0.0.1:8000). Exit code 0 = passed.
"""

import unittest

import slicer

from MedVLSlicer import MedVLSlicerTest

suite = unittest.defaultTestLoader.loadTestsFromTestCase(MedVLSlicerTest)
result = unittest.TextTestRunner(verbosity=2).run(suite)
slicer.util.exit(0 if result.wasSuccessful() else 1)
