"""What a vision-language checkpoint folder must hold, checked without loading it.

`inspect_checkpoint(path)` reads only small files and the safetensors headers (no weights):

- config.json with a supported `model_type` (qwen2_5_vl, qwen3_vl, gemma3): the family; or a
  [SEG]-token model (`sa2va_chat`, `citrus_v`: family "segtoken", a Qwen2.5-VL chat model +
  projector + SAM 2; `segtoken_layout` says which tensors and config it must hold);
- a tokenizer: tokenizer.json (or tokenizer.model) and tokenizer_config.json, and a chat
  template (in tokenizer_config.json, chat_template.jinja or chat_template.json - released
  checkpoints use each of these);
- preprocessor_config.json whose image processor belongs to the family
  (Qwen2VLImageProcessor* for both Qwen families - or the Qwen2_5_VL / Qwen3VL names that
  released folders write - and Gemma3ImageProcessor* for Gemma 3);
- weights: model.safetensors, or model.safetensors.index.json with every shard it names
  (pytorch_model.bin[.index.json] accepted, size from the files), whose tensor names carry
  the family's vision tower (`visual.` for Qwen, `vision_tower` + `multi_modal_projector`
  for Gemma 3; both the released layout and transformers' newer `model.` prefix).

Anything missing or mismatched is one `CheckpointError` line naming the folder, what is
wrong, the expected files and the family detected. `CheckpointInfo.weight_bytes` (from the
headers: numel x dtype size) is what loading needs in memory (`dtype="auto"` keeps the
stored dtype); `check_memory` compares it with what is free.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from medvl.errors import EngineError

MODEL_TYPES = ("qwen2_5_vl", "qwen3_vl", "gemma3")
SEG_MODEL_TYPES = ("sa2va_chat", "citrus_v")  # [SEG]-token models: family "segtoken" (segtoken_layout)
EXPECTED = ("config.json (model_type qwen2_5_vl, qwen3_vl, gemma3, or sa2va_chat / citrus_v for a [SEG]-model), "
            "tokenizer.json or tokenizer.model + "
            "tokenizer_config.json with a chat template, preprocessor_config.json, model.safetensors "
            "(or model.safetensors.index.json + its shards)")
# image_processor_type prefixes per family: released Qwen2.5-VL folders write "Qwen2_5_VLImageProcessor" (a class
# transformers 5 dropped; the adapter loads Qwen2VLImageProcessor* by class, which reads the same keys)
PROCESSORS = {"qwen2_5_vl": ("Qwen2VLImageProcessor", "Qwen2_5_VLImageProcessor"),
              "qwen3_vl": ("Qwen2VLImageProcessor", "Qwen3VLImageProcessor"),
              "gemma3": ("Gemma3ImageProcessor",),
              "segtoken": ("Qwen2VLImageProcessor", "Qwen2_5_VLImageProcessor")}
WEIGHT_MARKERS = {"qwen2_5_vl": ("visual.",), "qwen3_vl": ("visual.",),
                  "gemma3": ("vision_tower", "multi_modal_projector")}
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
HEADROOM = 1.15  # activations, tokenizer, allocator slack on top of the weights


class CheckpointError(EngineError):
    """A vision-language checkpoint folder that is missing, incomplete, of another family, or too
    large for this machine's memory (one line: folder, problem, expected files, family found)."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    family: str  # qwen2_5_vl / qwen3_vl / gemma3 / segtoken
    weight_files: tuple[Path, ...]
    weight_bytes: int  # bytes the tensors take in their stored dtype
    dtypes: tuple[str, ...]  # stored dtypes (safetensors names), most bytes first
    tensors: int


def _fail(path: Path, problem: str, family: str | None, model_type: str | None = None) -> CheckpointError:
    found = family or (f"none (model_type {model_type!r})" if model_type is not None else "none")
    return CheckpointError(f"VLM checkpoint {path}: {problem}; expected {EXPECTED}; family detected: {found}")


def safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file (tensor name -> dtype, shape, data_offsets)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file shorter than its 8-byte header length")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise ValueError(f"header length {n} is not plausible")
        return json.loads(f.read(n))


def _weights(path: Path, family: str) -> tuple[list[Path], int, dict[str, int], int, list[str]]:
    """(files, bytes, bytes per dtype, tensors, tensor names) of the folder's weights."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        files = [path / n for n in names]
        missing = [n for n in names if not (path / n).is_file()]
        if missing or not files:
            raise _fail(path, f"model.safetensors.index.json names missing shards {', '.join(missing[:3]) or '(none)'}",
                        family)
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    else:
        files = sorted(path.glob("*.safetensors"))
    if files:
        total, by_dtype, count, keys = 0, {}, 0, []
        for f in files:
            try:
                header = safetensors_header(f)
            except (OSError, ValueError) as err:
                raise _fail(path, f"{f.name} is not a safetensors file ({err})", family) from None
            for key, t in header.items():
                if key == "__metadata__":
                    continue
                n = 1
                for d in t.get("shape", []):
                    n *= int(d)
                size = n * _DTYPE_BYTES.get(t.get("dtype", ""), 4)
                total += size
                by_dtype[t.get("dtype", "?")] = by_dtype.get(t.get("dtype", "?"), 0) + size
                count += 1
                keys.append(key)
        return files, total, by_dtype, count, keys
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        return bins, sum(f.stat().st_size for f in bins), {"?": 0}, 0, []
    raise _fail(path, "no weights (model.safetensors missing)", family)


def inspect_checkpoint(path) -> CheckpointInfo:
    """Check the folder as the module docstring says; CheckpointError names what is wrong."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise _fail(path, "not a folder" if path.exists() else "folder not found", None)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise _fail(path, "config.json missing", None)
    try:
        cfg = json.loads(cfg_file.read_text())
    except ValueError as err:
        raise _fail(path, f"config.json is not JSON ({err})", None) from None
    model_type = str(cfg.get("model_type", ""))
    family = model_type if model_type in MODEL_TYPES else "segtoken" if model_type in SEG_MODEL_TYPES else None
    if family == "segtoken":
        from medvl.language.vlm.segtoken_layout import config_problem

        problem = config_problem(cfg)
        if problem:
            raise _fail(path, f"config.json describes {problem}", None, model_type)
    if family is None:
        raise _fail(path, f"model_type {model_type!r} is not a supported vision-language family", None, model_type)
    have = {p.name for p in path.iterdir()}
    if not ({"tokenizer.json", "tokenizer.model"} & have) or "tokenizer_config.json" not in have:
        raise _fail(path, "tokenizer files missing (tokenizer.json or tokenizer.model, and tokenizer_config.json)",
                    family)
    try:
        tok_cfg = json.loads((path / "tokenizer_config.json").read_text())
    except ValueError as err:
        raise _fail(path, f"tokenizer_config.json is not JSON ({err})", family) from None
    if not (tok_cfg.get("chat_template") or {"chat_template.jinja", "chat_template.json"} & have):
        raise _fail(path, "no chat template (tokenizer_config.json, chat_template.jinja or chat_template.json)", family)
    if "preprocessor_config.json" not in have:
        raise _fail(path, "preprocessor_config.json missing", family)
    try:
        proc = json.loads((path / "preprocessor_config.json").read_text())
    except ValueError as err:
        raise _fail(path, f"preprocessor_config.json is not JSON ({err})", family) from None
    proc_type = str(proc.get("image_processor_type", ""))
    if proc_type and not proc_type.startswith(PROCESSORS[family]):
        raise _fail(path, f"preprocessor_config.json has image_processor_type {proc_type!r}, not "
                          f"{' or '.join(PROCESSORS[family])} as {family} needs (mismatched files)", family)
    files, total, by_dtype, count, keys = _weights(path, family)
    if family == "segtoken":
        _check_segtoken(path, model_type, keys)
    elif keys:
        markers = WEIGHT_MARKERS[family]
        absent = [m for m in markers if not any(m in k for k in keys)]
        if absent:
            raise _fail(path, f"the weights hold no {' / '.join(absent)} tensors: not {family} weights "
                              "(mismatched config.json and weights)", family)
    dtypes = tuple(d for d, _ in sorted(by_dtype.items(), key=lambda kv: -kv[1]))
    return CheckpointInfo(path, family, tuple(files), total, dtypes, count)


def _check_segtoken(path: Path, model_type: str, keys: list[str]) -> None:
    """A [SEG]-model's weights hold its three parts, and its tokenizer [SEG] (Sa2VA adds it as a token)."""
    from medvl.language.vlm.segtoken_layout import LAYOUTS, SEG_TOKEN, weights_problem

    layout = LAYOUTS[model_type]
    found = f"segtoken ({layout.name})"
    if not keys:
        raise _fail(path, "a [SEG]-model's weights must be safetensors (tensor names are checked)", found)
    problem = weights_problem(layout, keys)
    if problem:
        raise _fail(path, problem, found)
    if model_type == "sa2va_chat":
        tok = path / "tokenizer.json"
        if tok.is_file() and f'"{SEG_TOKEN}"' not in tok.read_text(errors="replace"):
            raise _fail(path, f"tokenizer.json has no {SEG_TOKEN} token (Sa2VA adds it to the tokenizer)", found)


def available_bytes(device: str) -> int:
    """Free memory where the weights will live: RAM (psutil) for cpu, the GPU's free memory for cuda."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(info: CheckpointInfo, device: str = "cpu", available: int | None = None) -> None:
    """CheckpointError when the weights (x HEADROOM) do not fit in the free memory of `device`."""
    free = available_bytes(device) if available is None else int(available)
    need = int(info.weight_bytes * HEADROOM)
    if need > free:
        where = "GPU memory" if device.startswith("cuda") else "memory"
        hint = " or --device cuda" if not device.startswith("cuda") else ""
        raise CheckpointError(
            f"VLM checkpoint {info.path} ({info.family}) needs {info.weight_bytes / 1e9:.2f} GB for its weights "
            f"({'/'.join(info.dtypes) or 'unknown dtype'}, about {need / 1e9:.2f} GB with headroom) but only "
            f"{free / 1e9:.2f} GB of {where} is free on {device}: free memory, use a smaller checkpoint{hint}")
