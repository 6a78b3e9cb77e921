"""DICOM in and out: checked series reading (`series`), SNOMED CT segment codes (`codes`), DICOM SEG
(`seg`), Comprehensive 3D SR / TID 1500 (`sr`) and what the entry points call (`export`). See docs/dicom.md."""
