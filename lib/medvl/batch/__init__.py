"""Batch annotation: `medvl annotate` over many volumes, locally or on a Ray cluster.

- `inputs.py`: a folder, glob or manifest -> `VolumeJob`s (paths and prompts, nothing read);
- `jobs.py`: `VolumeJob`, `ObjectPrompt`, `BatchSettings` (what decides a volume's outputs);
- `annotator.py`: one volume with a warm engine -> its outputs and `status.json`;
- `publish.py`: each volume's folder appears once, whole (atomic rename);
- `fingerprint.py`: the hashes behind `--resume`;
- `runner.py`: plan, run with an executor (`local.py`, `ray_pool.py`), progress, summary;
- `summary.py`: `summary.csv` / `summary.parquet`, one row per volume and object.
"""
