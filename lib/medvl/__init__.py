"""MedVLSlicer library: volumes and geometry, promptable 3D segmentation with slice
propagation, and the language layer. The public entry point is `medvl.session.VolumeSession`."""

__version__ = "0.1.0"
