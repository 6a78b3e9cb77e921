"""App-local modules of the MedVLSlicer MONAI Label app (MONAI Label imports them as `lib`)."""
