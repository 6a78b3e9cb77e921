"""SAM 2 / SAM 2.1 / MedSAM2 models: named configs, checkpoint -> config, loading and checking.

The model is `sam2.sam2_video_predictor.SAM2VideoPredictor` from the `sam2` package
(PyPI `sam2==1.1.0`, a third-party upload of Meta's SAM 2.1 code, pinned exactly),
built from the package's own YAML configs without Hydra's global state, with the same
inference overrides as `sam2.build_sam.build_sam2_video_predictor`. Two departures:

- `image_size` is configurable (512 for MedSAM2-style checkpoints, 1024 for SAM 2.x); the
  memory attention's RoPE grid follows it (image_size / 16).
- hole filling of low-resolution masks (`fill_hole_area`) is done by this engine on the
  CPU (`medvl.engines.sam2.tracking.fill_holes`), so the package's optional CUDA extension
  is never asked for and never warns.

Nothing is downloaded: a checkpoint is a local `.pt` path. `random_tiny_model` builds a
small random-weight model for tests only.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from medvl.errors import EngineError

log = logging.getLogger(__name__)

PREDICTOR_TARGET = "sam2.sam2_video_predictor.SAM2VideoPredictor"


@dataclass(frozen=True)
class ConfigPreset:
    yaml: str  # config file inside the sam2 package
    image_size: int  # input side the checkpoints were trained at
    file_patterns: tuple[str, ...]  # checkpoint file names (fnmatch, case-insensitive) that mean this config


PRESETS: dict[str, ConfigPreset] = {
    "sam2_hiera_t": ConfigPreset("configs/sam2/sam2_hiera_t.yaml", 1024, ("sam2_hiera_tiny*.pt", "sam2_hiera_t.pt")),
    "sam2_hiera_s": ConfigPreset("configs/sam2/sam2_hiera_s.yaml", 1024, ("sam2_hiera_small*.pt", "sam2_hiera_s.pt")),
    "sam2_hiera_b+": ConfigPreset("configs/sam2/sam2_hiera_b+.yaml", 1024,
                                  ("sam2_hiera_base_plus*.pt", "sam2_hiera_b+.pt")),
    "sam2_hiera_l": ConfigPreset("configs/sam2/sam2_hiera_l.yaml", 1024, ("sam2_hiera_large*.pt", "sam2_hiera_l.pt")),
    "sam2.1_hiera_t": ConfigPreset("configs/sam2.1/sam2.1_hiera_t.yaml", 1024,
                                   ("sam2.1_hiera_tiny*.pt", "sam2.1_hiera_t.pt")),
    "sam2.1_hiera_s": ConfigPreset("configs/sam2.1/sam2.1_hiera_s.yaml", 1024,
                                   ("sam2.1_hiera_small*.pt", "sam2.1_hiera_s.pt")),
    "sam2.1_hiera_b+": ConfigPreset("configs/sam2.1/sam2.1_hiera_b+.yaml", 1024,
                                    ("sam2.1_hiera_base_plus*.pt", "sam2.1_hiera_b+.pt")),
    "sam2.1_hiera_l": ConfigPreset("configs/sam2.1/sam2.1_hiera_l.yaml", 1024,
                                   ("sam2.1_hiera_large*.pt", "sam2.1_hiera_l.pt")),
    # MedSAM2 (bowang-lab, 2025): SAM 2.1 tiny fine-tuned at 512 px (their sam2.1_hiera_t512.yaml).
    "medsam2": ConfigPreset("configs/sam2.1/sam2.1_hiera_t.yaml", 512, ("medsam2*.pt",)),
}

RANDOM_TINY = "random-tiny-for-tests"  # name of the random-weight test model; never a real checkpoint


@dataclass(frozen=True)
class ModelSpec:
    """Which model to build: where its config and weights come from."""

    config: str  # a PRESETS name, a .yaml path, or RANDOM_TINY
    checkpoint: Path | None  # .pt file; None only for random weights (tests, benchmark)
    image_size: int  # square input side in pixels (multiple of 32)
    device: str = "cpu"


def _predictor_params() -> set[str]:
    from sam2.modeling.sam2_base import SAM2Base
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    names = set(inspect.signature(SAM2Base.__init__).parameters)
    names |= set(inspect.signature(SAM2VideoPredictor.__init__).parameters)
    return names - {"self", "args", "kwargs"}


def config_for_checkpoint(path: Path) -> str | None:
    """The preset a checkpoint file name stands for (e.g. sam2.1_hiera_small.pt), or None."""
    name = path.name.lower()
    for preset, spec in PRESETS.items():
        if any(fnmatch.fnmatch(name, pattern.lower()) for pattern in spec.file_patterns):
            return preset
    return None


def default_image_size(config: str) -> int:
    if config in PRESETS:
        return PRESETS[config].image_size
    if config == RANDOM_TINY:
        return 64
    return int(_model_dict(config).get("image_size", 1024))


def _resources_text(preset: str) -> str:
    """The YAML text of a preset's config file inside the sam2 package."""
    return resources.files("sam2").joinpath(PRESETS[preset].yaml).read_text()


def _model_dict(config: str) -> dict:
    """The `model:` section of a preset or a user YAML, interpolations resolved, as a plain dict."""
    from omegaconf import OmegaConf

    if config in PRESETS:
        cfg = OmegaConf.create(_resources_text(config))
        where = config
    else:
        path = Path(config)
        if path.suffix not in (".yaml", ".yml") or not path.is_file():
            raise EngineError(f"SAM 2 config {config!r} is neither a known name ({', '.join(PRESETS)}) "
                              f"nor an existing .yaml file")
        try:
            cfg = OmegaConf.load(path)
        except Exception as exc:  # a YAML syntax error names its own line
            raise EngineError(f"SAM 2 config {path} could not be read: {exc}") from exc
        where = str(path)
    # package configs put the model at top level; training configs (MedSAM2's) under trainer.model
    node = cfg.get("model") if "model" in cfg else OmegaConf.select(cfg, "trainer.model")
    if node is None:
        raise EngineError(f"SAM 2 config {where} has no `model:` (or `trainer.model:`) section")
    return OmegaConf.to_container(node, resolve=True)


def _apply_overrides(model: dict, image_size: int) -> dict:
    """The inference overrides of build_sam2_video_predictor, plus our image size and CPU hole filling."""
    if image_size % 32:
        raise EngineError(f"SAM 2 image size {image_size} must be a multiple of 32 (e.g. 512 or 1024)")
    allowed = _predictor_params() | {"_target_", "image_encoder", "memory_attention", "memory_encoder"}
    model = {k: v for k, v in model.items() if k in allowed}  # drops training-only keys
    model["_target_"] = PREDICTOR_TARGET
    extra = dict(model.get("sam_mask_decoder_extra_args") or {})
    extra.update(dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=0.05,
                 dynamic_multimask_stability_thresh=0.98)
    model["sam_mask_decoder_extra_args"] = extra
    model["binarize_mask_from_pts_for_mem_enc"] = True
    model["fill_hole_area"] = 0  # done on the CPU by the engine, see tracking.fill_holes
    model["compile_image_encoder"] = False
    model["image_size"] = image_size
    grid = [image_size // 16, image_size // 16]
    layer = model.get("memory_attention", {}).get("layer", {})
    for attn in ("self_attention", "cross_attention"):
        if "feat_sizes" in layer.get(attn, {}):
            layer[attn]["feat_sizes"] = grid
    return model


def _instantiate(model: dict) -> torch.nn.Module:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    return instantiate(OmegaConf.create(model), _recursive_=True)


class _ScalarsOnCpu(torch.overrides.TorchFunctionMode):
    """Inside torch.device("meta"): Hiera's __init__ reads drop-path rates from a linspace with .item()."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.linspace:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def _instantiate_empty(model: dict) -> torch.nn.Module:
    """The module tree with unallocated (meta) weights: shapes only, no random init cost."""
    with torch.device("meta"), _ScalarsOnCpu():
        return _instantiate(model)


def _tiny_dict() -> dict:
    """SAM 2.1 architecture shrunk to a few thousand parameters per module (tests only)."""
    model = _model_dict("sam2.1_hiera_t")
    d, mem = 32, 16
    model["image_encoder"]["trunk"].update(embed_dim=8, num_heads=1, stages=[1, 2, 1, 1], global_att_blocks=[2],
                                           window_spec=[8, 4, 4, 2], window_pos_embed_bkg_spatial_size=[4, 4])
    neck = model["image_encoder"]["neck"]
    neck.update(d_model=d, backbone_channel_list=[64, 32, 16, 8])
    neck["position_encoding"]["num_pos_feats"] = d
    ma = model["memory_attention"]
    ma.update(d_model=d, num_layers=1)
    ma["layer"].update(d_model=d, dim_feedforward=2 * d)
    ma["layer"]["self_attention"]["embedding_dim"] = d
    ma["layer"]["cross_attention"].update(embedding_dim=d, kv_in_dim=mem)
    me = model["memory_encoder"]
    me.update(out_dim=mem, in_dim=d)
    me["mask_downsampler"]["embed_dim"] = d
    me["position_encoding"]["num_pos_feats"] = mem
    me["fuser"]["layer"]["dim"] = d
    me["fuser"]["num_layers"] = 1
    return model


def build_model(spec: ModelSpec, seed: int = 0) -> torch.nn.Module:
    """Build the predictor for `spec`, load and check its checkpoint; eval mode on `spec.device`."""
    if spec.config == RANDOM_TINY:
        raw = _tiny_dict()
    else:
        raw = _model_dict(spec.config)
    model_dict = _apply_overrides(raw, spec.image_size)
    if spec.checkpoint is None:
        torch.manual_seed(seed)  # random weights: tests and benchmarks only
        model = _instantiate(model_dict)
        log.info("SAM 2 %s at %d px with RANDOM weights (seed %d): for tests and benchmarks only",
                 spec.config, spec.image_size, seed)
    else:
        state = read_checkpoint(spec.checkpoint)
        model = _instantiate_empty(model_dict)
        check_fit(model, state, spec)
        model.load_state_dict(state, strict=True, assign=True)
        _materialize(model, spec.image_size // 16)
        log.info("SAM 2 %s at %d px from %s", spec.config, spec.image_size, spec.checkpoint)
    return model.to(spec.device).eval()


def build_model_from_state(config: str, state: dict[str, torch.Tensor], image_size: int, device: str = "cpu",
                           source: str = "a state dict") -> torch.nn.Module:
    """The predictor of `config` (a preset, a .yaml or RANDOM_TINY) holding `state` (tensors named as the
    `sam2` package names them, e.g. the `grounding_encoder.sam2_model.` part of a Sa2VA / Citrus-V
    checkpoint with that prefix removed); checked like a .pt file (`check_fit`), eval mode on `device`."""
    raw = _tiny_dict() if config == RANDOM_TINY else _model_dict(config)
    model = _instantiate_empty(_apply_overrides(raw, image_size))
    check_fit(model, state, ModelSpec(config, Path(source), image_size, device))
    model.load_state_dict(state, strict=True, assign=True)
    _materialize(model, image_size // 16)
    return model.to(device).eval()


def config_for_state(state: dict[str, torch.Tensor], first: tuple[str, ...] = ()) -> str | None:
    """The config whose weights have exactly the names and shapes of `state` (configs in `first` are
    tried first, then every preset, then RANDOM_TINY), or None."""
    order = list(dict.fromkeys([*first, *(n for n in PRESETS if n != "medsam2"), RANDOM_TINY]))
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    for name in order:
        if name not in PRESETS and name != RANDOM_TINY:
            continue
        trunk = (_tiny_dict() if name == RANDOM_TINY else _model_dict(name))["image_encoder"]["trunk"]
        if patch is not None and int(trunk.get("embed_dim", 96)) != patch.shape[0]:
            continue  # the Hiera width differs: no need to build this config to compare
        if name == RANDOM_TINY:
            shapes = {k: tuple(v.shape) for k, v in
                      _instantiate_empty(_apply_overrides(_tiny_dict(), 64)).state_dict().items()}
        else:
            shapes = _preset_shapes(name)
        if not any(_mismatch(shapes, state)):
            return name
    return None


def write_random_checkpoint(path: Path, config: str, image_size: int, seed: int = 0) -> Path:
    """TESTS AND BENCHMARKS ONLY: the random weights `build_model` gives `config` (a preset or
    RANDOM_TINY), saved as a SAM 2-style .pt ({"model": state_dict}) at `path`."""
    model = build_model(ModelSpec(config, None, image_size), seed=seed)
    torch.save({"model": model.state_dict()}, path)
    return Path(path)


def write_config_yaml(path: Path, config: str, image_size: int) -> Path:
    """`config` (a preset or RANDOM_TINY) as a package-style .yaml (`model:` at the top) for
    `image_size`, as `--sam2-config FILE.yaml` and the stock `build_sam2*` functions read it."""
    from omegaconf import OmegaConf

    model = _tiny_dict() if config == RANDOM_TINY else _model_dict(config)
    model["image_size"] = image_size
    layer = model.get("memory_attention", {}).get("layer", {})
    for attn in ("self_attention", "cross_attention"):
        if "feat_sizes" in layer.get(attn, {}):
            layer[attn]["feat_sizes"] = [image_size // 16, image_size // 16]
    OmegaConf.save(OmegaConf.create({"model": model}), path)
    return Path(path)


def _materialize(model: torch.nn.Module, grid: int) -> None:
    """After building on the meta device and loading weights, recompute what __init__ computed."""
    for module in model.modules():
        cis = getattr(module, "freqs_cis", None)  # RoPE tables of the memory attention
        if isinstance(cis, torch.Tensor) and cis.is_meta:
            module.freqs_cis = module.compute_cis(end_x=grid, end_y=grid)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise EngineError(f"internal: SAM 2 tensors not filled from the checkpoint: {', '.join(left[:3])}")


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a SAM 2 / MedSAM2 .pt file ({"model": state_dict} or a bare state dict)."""
    if not path.is_file():
        raise EngineError(f"SAM 2 checkpoint {path} does not exist: pass an existing .pt file "
                          f"(--checkpoint, MEDVL_SAM2_CHECKPOINT or sam2_checkpoint in the server --conf)")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # no second copy in RAM
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) .pt
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise EngineError(f"SAM 2 checkpoint {path} could not be read as a torch .pt file of weights "
                          f"(loaded with weights_only=True): {first}") from exc
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EngineError(f"SAM 2 checkpoint {path} holds no state dict (expected {{'model': state_dict}})")
    return state


def _mismatch(model_shapes: dict[str, tuple], state: dict[str, torch.Tensor]) -> tuple[list, list, list]:
    missing = sorted(set(model_shapes) - set(state))
    unexpected = sorted(set(state) - set(model_shapes))
    shapes = sorted(k for k in set(model_shapes) & set(state) if tuple(state[k].shape) != model_shapes[k])
    return missing, unexpected, shapes


@functools.lru_cache(maxsize=None)
def _preset_shapes(config: str) -> dict[str, tuple]:
    model = _instantiate_empty(_apply_overrides(_model_dict(config), PRESETS[config].image_size))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_fit(model: torch.nn.Module, state: dict[str, torch.Tensor], spec: ModelSpec) -> None:
    """Raise EngineError naming the file, the config and the config that would fit, on any mismatch."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected, wrong = _mismatch(shapes, state)
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} of another shape (e.g. {k}: file {tuple(state[k].shape)}, config {shapes[k]})")
    fits = [name for name in PRESETS if name != "medsam2" and not any(_mismatch(_preset_shapes(name), state))]
    hint = (f"it fits config {' / '.join(fits)}: pass --sam2-config {fits[0]}" if fits else
            f"pass the config it was trained with (--sam2-config NAME or a .yaml; names: {', '.join(PRESETS)})")
    raise EngineError(f"SAM 2 checkpoint {spec.checkpoint} does not match config {spec.config}: "
                      f"{'; '.join(parts)}; {hint}")
