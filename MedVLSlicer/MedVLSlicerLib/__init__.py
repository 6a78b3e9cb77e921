"""MedVLSlicer's behaviour, importable without Slicer's GUI (Slicer or PyPI `slicer-core`).

- `client`   torch-free HTTP client of the MedVL MONAI Label server (standard library only)
- `protocol` every endpoint, task, parameter and response key, in one place
- `geometry` click -> voxel: world RAS <-> ITK (i, j, k) through IJKToRAS and parent transforms
- `prompts`  markups -> `Prompt` (voxel indices) -> request parameters
- `masks`    mask files <-> arrays, masks and crops into segments
- `logic`    `InteractiveLogic`: one session's lifecycle (upload, prompts, undo, reset, accept)
- `selftest` the end-to-end check the module's Test and pytest both run

Nothing here imports qt, ctk or slicer.ScriptedLoadableModule.
"""
