"""Training configuration: typed dataclasses, YAML load/save, presets and ``--set`` overrides.

A YAML config is just a saved `TrainConfig`: every key is checked against the dataclass fields
(unknown keys are an error naming the key and the known ones) and every value against the field's
type. Precedence when a run is configured: preset -> YAML file -> command-line flags -> ``--set
section.key=value``. The resolved config is written to ``RUN/config.yaml``.

Presets follow the authors' released training setup where it is known (Adam lr 1e-4,
β = (0.9, 0.99), cosine annealing with warm restarts, Charbonnier loss with 0.1 × VGG19
perceptual for low light, λ1 = 1); the rest are our choices and are marked so.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.priors.normalize import DEFAULT_NORMALIZE, NORMALIZE

MODES = ("baseline", "joint", "refine")
PRIOR_CONTROLS = ("real", "shuffle", "constant", "zero")
PRIOR_NORMALIZE = NORMALIZE  # the one list (ptg.pipeline.priors.normalize)
AMP_MODES = ("none", "bf16", "fp16")
LOSS_KINDS = ("charbonnier", "l1", "mse", "zero-dce")
AUGMENTS = ("store", "none", "flips", "d4")
IMAGE_SOURCES = ("auto", "store", "files")
CHECKPOINTING = ("none", "f", "r", "both")  # run.checkpointing (ptg.ptgrm.train.memory applies it)


@dataclass
class DataConfig:
    """What the trainer reads."""

    manifest: str = ""  # JSONL manifest (required)
    root: str | None = None  # folder the manifest's paths are relative to (None: the manifest's folder)
    allow_outside: bool = False  # manifest paths may lead outside the root (honoured only from the command line)
    priors: list[str] = field(default_factory=list)  # priors stores, one per prior g_i (needed unless mode=baseline)
    train_split: str = "train"  # manifest split trained on
    val_split: str = "auto"  # "auto": "val" rows if any, else "test"; "none": no validation
    crop: int = 128  # side of the random square training crop (images smaller than it are used whole)
    batch_size: int = 8  # global batch (split evenly across torchrun processes)
    augment: str = "store"  # dihedral views drawn per crop: "store" = those cached in the first --priors store (also in mode baseline, so every arm gets the same views; identity with a warning when no store is given) | none | flips | d4
    num_workers: int = 0  # DataLoader worker processes (0: load in the training process)
    prefetch: int = 2  # batches each worker prepares ahead (DataLoader prefetch_factor; with num_workers > 0)
    cache_images: bool = False  # keep decoded training images in RAM (per worker): no PNG decoding per step (data.images=files)
    images: str = "auto"  # pixels from: store (the image store, every image must be in it) | files (decode per read) | auto (the store when it holds every image, else build it now when it fits half the free disk, else files; one line says which)
    image_store: str = ""  # the image store ("": $PTG_CACHE/images, where `ptg data cache` writes)
    f_outputs: str = ""  # refine mode: F's cached outputs (a `ptg extract-outputs` store, or a folder of <id>.png): R trains with no F in memory
    priors_in_memory: bool | Literal["auto"] = "auto"  # priors in RAM (true), read lazily from a memory-mapped row cache (false), or auto: in RAM up to min(2 GiB, 1/8 of free memory)
    allow_missing_priors: bool = False  # drop manifest rows without a prior (with a warning) instead of failing
    val_max_images: int = 0  # validate on at most this many images (0: all)
    val_crop: int = 0  # centre-crop validation images to this side (0: whole images)


@dataclass
class ModelConfig:
    """Which networks are trained; the registry names of `ptg.ptgrm.models`."""

    baseline: str = "unet"  # F: a "restorer" (or a "-f" "feature-refiner", which takes the priors itself)
    baseline_args: dict[str, Any] = field(default_factory=dict)  # F's config overrides (e.g. {width: 32})
    refiner: str = "ptgrm"  # R for modes joint/refine ("ptgrm", "ptgrm-large" or "ptgrm-release")
    refiner_args: dict[str, Any] = field(default_factory=dict)  # R's ablation switches (e.g. {use_sve: false}); prior_dims come from the stores
    baseline_weights: str | None = None  # refine mode: a run folder or checkpoint of a trained F (or use baseline_args {pretrained: true}); with baseline spandrel: the checkpoint F is built from (any mode)
    refiner_weights: str | None = None  # modes joint/refine: R starts from this state dict (.pt/.pth read with weights_only, .safetensors, a `ptg train` checkpoint, or the authors' release file for ptgrm-release; params/state_dict wrappers unwrapped)

    def __post_init__(self) -> None:
        # spandrel builds F from the file itself: the path is F's config (recorded with its SHA-256)
        if self.baseline == "spandrel" and self.baseline_weights is not None:
            self.baseline_args = {**self.baseline_args, "weights": self.baseline_weights}
            self.baseline_weights = None


@dataclass
class LossConfig:
    """Lg of Eq. 8, applied to F's output and (weighted by lambda_r) to R's output."""

    kind: str = "charbonnier"  # charbonnier | l1 | mse (supervised) | zero-dce (non-reference, no targets)
    charbonnier_eps: float = 1e-3  # ε of sqrt((x - y)² + ε²) (BasicSR's default)
    perceptual_weight: float = 0.0  # weight of the VGG19 perceptual term (authors' low-light release: 0.1)
    perceptual_weights_file: str | None = None  # local VGG19 ImageNet weights (.pth); offline machines need it
    lambda_r: float = 1.0  # λ1 of Eq. 8 (paper: always 1)
    lambda_f: float = 1.0  # weight of Lg(Ihat, Ic) in joint mode (paper: 1)
    spatial_weight: float = 1.0  # zero-dce: spatial consistency (Zero-DCE: 1)
    exposure_weight: float = 10.0  # zero-dce: exposure control (Zero-DCE: 10)
    exposure_level: float = 0.6  # zero-dce: target mean exposure E (Zero-DCE: 0.6)
    color_weight: float = 5.0  # zero-dce: colour constancy (Zero-DCE: 5)
    smoothness_weight: float = 1.0  # zero-dce: illumination smoothness on the enhancement ratio (our choice; Zero-DCE puts 200 on its curve maps)


@dataclass
class OptimConfig:
    """Adam with cosine annealing and warm restarts (the authors' release)."""

    lr: float = 1e-4  # learning rate (authors: 1e-4)
    betas: tuple[float, float] = (0.9, 0.99)  # Adam betas (authors: (0.9, 0.99))
    weight_decay: float = 0.0  # Adam weight decay (authors: 0)
    restart_period: int = 0  # steps of the first cosine cycle, T_0 (0: the whole run is one cycle)
    restart_mult: int = 1  # cycle length multiplier T_mult after each restart
    eta_min: float = 1e-7  # lowest learning rate of a cycle (authors: 1e-7)
    grad_clip: float = 0.0  # clip the global gradient norm to this (0: no clipping)


@dataclass
class PriorConfig:
    """How the cached priors reach R, including the controls of the reproduction study."""

    control: str = "real"  # real | shuffle (a fixed seeded derangement: each image gets another's prior) | constant (one training image's normalised prior, drawn with the seed, for every image) | zero; applied alike in training, validation, eval and restore
    normalize: str = DEFAULT_NORMALIZE  # standardize (per-dimension mean/std of the training rows, saved with the run; why it is the default: docs/RESULTS.md) | l2 (each vector / its L2 norm, as the authors do for CLIP) | none
    dropout: float = 0.0  # training only: probability of zeroing a sample's prior vector
    noise: float = 0.0  # training only: std of Gaussian noise added to the (normalised) prior
    lr_mult: float = 1.0  # learning-rate multiplier for R's prior mappings T (narrower effective capacity if < 1)


@dataclass
class RunConfig:
    """Loop, logging, checkpoints and hardware."""

    save_every: int = 0  # also keep checkpoints/step_XXXXXX.pt every K steps (0: only last.pt and best.pt)
    checkpoint_every: int = 100  # refresh checkpoints/last.pt every K steps (resume point)
    val_every: int = 0  # validate every N steps (0: only at the end)
    log_every: int = 10  # write a log.csv / TensorBoard row every N steps
    best_metric: str = "psnr"  # validation metric whose best value selects best.pt (psnr | ssim)
    amp: str = "none"  # none | bf16 | fp16 mixed precision (CUDA only; ignored with a warning on CPU)
    ema: float = 0.0  # EMA decay of the trained weights (0: off; e.g. 0.999); validation and inference use the EMA
    max_nonfinite: int = 5  # stop after this many consecutive non-finite losses (each one's step is skipped)
    device: str = "auto"  # auto (cuda if present) | cpu | cuda | cuda:N
    deterministic: bool = True  # torch.use_deterministic_algorithms: bit-identical resume on CPU
    dist_backend: str = "auto"  # torch.distributed backend under torchrun: auto (nccl on GPU, gloo on CPU) | gloo | nccl
    threads: int = 0  # torch.set_num_threads (0: torch's default)
    val_images: int = 4  # at each validation, input | F | F + R | target strips of the first N validation images to RUN/val_images/ and TensorBoard (0: none; at most 16)
    val_image_side: int = 128  # the strips' panels are centre crops of at most this side (32..512): 4 noisy photos at 128 px add ~1.2 MB (files + TensorBoard) per validation, at 256 px ~4.7 MB
    wandb: str = ""  # also log scalars, validation images and the config to this wandb project ("": $PTG_WANDB_PROJECT if set, else no wandb; needs the wandb extra; WANDB_MODE=offline works without a network)
    micro_batch: int = 0  # split each process's batch into micro-batches of this many samples and add up their gradients (exact: the loss is weighted per sample); 0: the whole batch at once. data.batch_size stays the batch of one optimizer step
    checkpointing: str = "none"  # activation checkpointing of the blocks of: none | f | r | both (recomputed in backward: less memory, slower; see docs/training-small-gpu.md)
    max_memory: str = ""  # training memory budget: "" (none) | auto (what the device has free) | a size like 12GiB: one step is measured and micro_batch/checkpointing set to the fastest setting that fits
    memory_plan: dict[str, Any] = field(default_factory=dict)  # written by ptg, not by you: what max_memory measured and picked (a resumed run keeps it)
    channels_last: bool = False  # NHWC weights and inputs (off: slower on the CPU, see docs/training-small-gpu.md)
    compile: bool = False  # torch.compile F and R in place (state dicts keep their keys); off: minutes of compiling before the first step


@dataclass
class TrainConfig:
    """One training run."""

    out: str = ""  # run folder (required)
    mode: str = "joint"  # baseline (F only) | joint (F + R, Eq. 8) | refine (frozen F, R only)
    steps: int = 1000  # optimiser steps in total
    seed: int = 0  # seeds model init, data order, crops, views and prior regularisers
    resume: bool = False  # continue from out/checkpoints/last.pt
    preset: str | None = None  # the preset this config started from (informative)
    data: DataConfig = field(default_factory=DataConfig)  # inputs
    model: ModelConfig = field(default_factory=ModelConfig)  # networks
    loss: LossConfig = field(default_factory=LossConfig)  # Eq. 8
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimiser and schedule
    priors: PriorConfig = field(default_factory=PriorConfig)  # prior handling and study controls
    run: RunConfig = field(default_factory=RunConfig)  # loop and hardware


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check values that the types cannot (choices, ranges); return ``cfg``.

    Raises:
        PtgError: naming the bad value and the allowed ones.
    """
    def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
        if value not in allowed:
            raise PtgError(f"{name}={value!r} is not one of {', '.join(allowed)}")

    choice("mode", cfg.mode, MODES)
    choice("priors.control", cfg.priors.control, PRIOR_CONTROLS)
    choice("priors.normalize", cfg.priors.normalize, PRIOR_NORMALIZE)
    choice("run.amp", cfg.run.amp, AMP_MODES)
    choice("loss.kind", cfg.loss.kind, LOSS_KINDS)
    choice("data.augment", cfg.data.augment, AUGMENTS)
    choice("data.images", cfg.data.images, IMAGE_SOURCES)
    choice("run.best_metric", cfg.run.best_metric, ("psnr", "ssim"))
    choice("run.checkpointing", cfg.run.checkpointing, CHECKPOINTING)
    if cfg.run.max_memory and cfg.run.max_memory != "auto":
        from ptg.ptgrm.tiling import memory_budget  # a bad size is refused before anything is built

        memory_budget(cfg.run.max_memory)
    positive = {"steps": cfg.steps, "data.crop": cfg.data.crop, "data.batch_size": cfg.data.batch_size,
                "run.log_every": cfg.run.log_every, "data.prefetch": cfg.data.prefetch, "run.max_nonfinite": cfg.run.max_nonfinite,
                "run.checkpoint_every": cfg.run.checkpoint_every, "optim.restart_mult": cfg.optim.restart_mult}
    for name, v in positive.items():
        if v < 1:
            raise PtgError(f"{name}={v} must be >= 1")
    for name, v in {"run.save_every": cfg.run.save_every, "run.val_every": cfg.run.val_every,
                    "optim.restart_period": cfg.optim.restart_period, "data.num_workers": cfg.data.num_workers,
                    "optim.grad_clip": cfg.optim.grad_clip, "priors.noise": cfg.priors.noise,
                    "run.threads": cfg.run.threads, "run.micro_batch": cfg.run.micro_batch}.items():
        if v < 0:
            raise PtgError(f"{name}={v} must be >= 0")
    if not 0 <= cfg.run.val_images <= 16:  # ptg.ptgrm.train.val_images.MAX_VAL_IMAGES
        raise PtgError(f"run.val_images={cfg.run.val_images} must be in 0..16 (they are for looking at; "
                       "validation scores every image anyway)")
    if not 32 <= cfg.run.val_image_side <= 512:
        raise PtgError(f"run.val_image_side={cfg.run.val_image_side} must be in 32..512 (pixels of a panel's side)")
    if not 0.0 <= cfg.priors.dropout < 1.0:
        raise PtgError(f"priors.dropout={cfg.priors.dropout} must be in [0, 1)")
    if not 0.0 <= cfg.run.ema < 1.0:
        raise PtgError(f"run.ema={cfg.run.ema} must be in [0, 1) (0 turns EMA off)")
    if cfg.optim.lr <= 0:
        raise PtgError(f"optim.lr={cfg.optim.lr} must be > 0")
    if cfg.data.f_outputs and cfg.mode != "refine":
        raise PtgError(f"--f-outputs trains R on a frozen F's cached outputs: use --mode refine (not {cfg.mode})")
    return cfg


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass, with type checks


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-friendly dict of a config dataclass (tuples become lists)."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def from_dict(data: dict[str, Any], cls: type = TrainConfig, where: str = "") -> Any:
    """Build ``cls`` from a nested dict, rejecting unknown keys and values of the wrong type.

    Missing keys keep their defaults.
    """
    if not isinstance(data, dict):
        raise PtgError(f"config section {where or '<top>'!r} must be a mapping, got {type(data).__name__}")
    if cls is PriorConfig and "l2_normalize" in data:
        data = _legacy_l2(data, where)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise PtgError(f"unknown config key(s) {', '.join(repr(_join(where, k)) for k in unknown)}; "
                       f"{where or 'the top level'} takes: {', '.join(names)}")
    values = {}
    for name, value in data.items():
        key = _join(where, name)
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = from_dict(value if value is not None else {}, tp, key)
        else:
            values[name] = _coerce(value, tp, key)
    return cls(**values)


def _legacy_l2(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Configs written before ``priors.normalize`` said ``l2_normalize: true/false``."""
    data = dict(data)
    flag = data.pop("l2_normalize")
    if not isinstance(flag, bool):
        raise PtgError(f"config key {_join(where, 'l2_normalize')!r} must be true or false (it is now "
                       f"{_join(where, 'normalize')}: l2 | standardize | none)")
    if "normalize" in data and data["normalize"] != ("l2" if flag else "none"):
        raise PtgError(f"{_join(where, 'l2_normalize')}={flag} contradicts {_join(where, 'normalize')}="
                       f"{data['normalize']!r}; keep only normalize")
    data["normalize"] = "l2" if flag else "none"
    return data


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except PtgError as exc:
                errors.append(str(exc))
        raise PtgError(errors[0] if errors else f"config key {key!r} does not accept {value!r}")
    if origin is Literal:
        if value not in args:
            raise PtgError(f"config key {key!r}={value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise PtgError(f"config key {key!r} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise PtgError(f"config key {key!r} must have {len(args)} items, got {value!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, key) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise PtgError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise PtgError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PtgError(f"config key {key!r} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; such a string is still meant as a number.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PtgError(f"config key {key!r} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise PtgError(f"config key {key!r} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key!r}")  # a bug in this module


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping stored in a YAML file (not yet checked against the dataclasses)."""
    import yaml

    from ptg.pipeline.core.limits import check_file_size, check_tree

    path = Path(path)
    if not path.is_file():
        raise PtgError(f"config file not found: {path}")
    check_file_size(path, "config file", limit=1 << 20)  # a config is a few KB; bound what a shared one costs
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PtgError(f"config file {path} is not valid YAML: {exc}") from exc
    except RecursionError:
        raise PtgError(f"config file {path} is nested too deeply to parse; is it crafted?") from None
    check_tree(data, f"config file {path}", max_depth=32, max_nodes=100_000)  # alias bombs share nodes
    if not isinstance(data, dict):
        raise PtgError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def save_yaml(cfg: TrainConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML (atomically: a reader never sees half a file)."""
    import yaml

    from ptg.pipeline.core.fsio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (mappings merge at every depth, so
    ``--set model.refiner_args.X=...`` keeps a preset's other refiner args; everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_set(items: list[str], flag: str = "--set", form: str = "section.key=value (e.g. optim.lr=2e-4)") -> dict[str, Any]:
    """``["optim.lr=2e-4", "model.refiner_args.use_sve=false"]`` as a nested mapping.

    Values are parsed as YAML scalars/flow collections, so ``true``, ``1e-4``, ``[0.9, 0.99]`` and
    ``{width: 8}`` work; keys under ``baseline_args``/``refiner_args`` are free-form. ``flag`` and
    ``form``: the option and the shape its errors name (another command's ``key=value`` option).
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PtgError(f"{flag} {item!r} must look like {form}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise PtgError(f"{flag} {item!r}: cannot parse the value {raw!r}: {exc}") from exc
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise PtgError(f"{flag} {item!r} conflicts with another {flag} of {p!r}")
        node[parts[-1]] = value
    return out


# ---------------------------------------------------------------------------------------------
# presets: the paper's tasks

_ADAM = {"lr": 1e-4, "betas": [0.9, 0.99], "eta_min": 1e-7}  # authors' release

PRESETS: dict[str, dict[str, Any]] = {
    # SID / LOL-real (paper Tables 1, 4): the authors' release trains SNR-Aware + R with
    # Charbonnier + 0.1 VGG19 perceptual on both outputs, 384² crops, cosine restarts.
    "lowlight": {
        "model": {"baseline": "snr"},
        "data": {"crop": 384, "batch_size": 8},
        "loss": {"kind": "charbonnier", "perceptual_weight": 0.1},
        "optim": {**_ADAM, "restart_period": 50000},
        "steps": 300000,
    },
    # Unsupervised low light (Table 4): F and R with Zero-DCE's non-reference losses.
    "lowlight-unsupervised": {
        "model": {"baseline": "unet"},
        "data": {"crop": 256, "batch_size": 8},
        "loss": {"kind": "zero-dce"},
        "optim": _ADAM,
        "steps": 100000,
    },
    # Rain13K (Table 5): Restormer-style 128² crops, Charbonnier (our sizes; the paper gives none).
    "derain": {
        "model": {"baseline": "restormer"},
        "data": {"crop": 128, "batch_size": 8},
        "loss": {"kind": "charbonnier"},
        "optim": _ADAM,
        "steps": 300000,
    },
    # GoPro (motion deblurring): NAFNet baseline, 256² crops (our choice), Charbonnier.
    "motion-deblur": {
        "model": {"baseline": "nafnet"},
        "data": {"crop": 256, "batch_size": 8},
        "loss": {"kind": "charbonnier"},
        "optim": _ADAM,
        "steps": 300000,
    },
    # DPDD (defocus deblurring, Table 6): Restormer baseline, 256² crops (our choice).
    "defocus-deblur": {
        "model": {"baseline": "restormer"},
        "data": {"crop": 256, "batch_size": 8},
        "loss": {"kind": "charbonnier"},
        "optim": _ADAM,
        "steps": 300000,
    },
    # CBSD68 / Kodak24 / McMaster at σ = 15, 25, 50 (Table 8): one blind model for all levels.
    "gaussian-denoise": {
        "model": {"baseline": "dncnn"},
        "data": {"crop": 128, "batch_size": 16},
        "loss": {"kind": "charbonnier"},
        "optim": _ADAM,
        "steps": 300000,
    },
    # SIDD (real noise, Table 7): NAFNet baseline, 256² crops, Charbonnier (our sizes).
    "real-denoise": {
        "model": {"baseline": "nafnet"},
        "data": {"crop": 256, "batch_size": 8},
        "loss": {"kind": "charbonnier"},
        "optim": _ADAM,
        "steps": 300000,
    },
    # The shipped sample photos on a CPU (`ptg demo`): small F, R with 2 Restormer blocks, small
    # crops and a high learning rate so a few hundred steps take minutes and visibly denoise;
    # a demonstration, not a result.
    "samples": {
        "model": {"baseline": "unet", "baseline_args": {"width": 12, "depth": 3}, "refiner_args": {"long_blocks": 2}},
        "data": {"crop": 48, "batch_size": 8},
        "loss": {"kind": "charbonnier"},
        "optim": {**_ADAM, "lr": 1e-3},
        "steps": 300,
        "run": {"val_every": 100, "checkpoint_every": 50},
    },
}


def _check_user_networks(saved: dict[str, Any], overrides: dict[str, Any], path: Path) -> None:
    """A user network (``package.module:Class``) is imported only when named on the command line,
    never because a file (a run's config.yaml, a ``--config`` file) says so; the same holds for
    ``data.allow_outside``, which lets a manifest read files outside its root."""
    model = saved.get("model") if isinstance(saved.get("model"), dict) else {}
    for key, flag in (("baseline", "--baseline"), ("refiner", "--refiner")):
        name = str(model.get(key) or "")
        if ":" in name and (overrides.get("model") or {}).get(key) != name:
            raise PtgError(f"{path} names the user network {name!r} as model.{key}; ptg imports user code only when "
                           f"you name it yourself: add {flag} {name} to the command line")
    data = saved.get("data") if isinstance(saved.get("data"), dict) else {}
    if data.get("allow_outside") and not (overrides.get("data") or {}).get("allow_outside"):
        raise PtgError(f"{path} sets data.allow_outside (manifest paths outside the root); that is honoured only "
                       "from the command line: add --allow-outside if you mean it, or remove the key")


def preset(name: str) -> dict[str, Any]:
    """The overrides of a named preset (see `PRESETS`)."""
    try:
        return {**copy.deepcopy(PRESETS[name]), "preset": name}
    except KeyError:
        raise PtgError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


def resolve(
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    sets: list[str] | None = None,
    preset_name: str | None = None,
) -> TrainConfig:
    """The config of a run: preset, then YAML file, then ``overrides`` (CLI flags), then ``--set``.

    A YAML file may name a ``preset:`` itself; ``preset_name`` wins over it. Resuming with no
    config file (``ptg train --out RUN --resume``) reads ``RUN/config.yaml``, the run's own config.
    """
    data: dict[str, Any] = {}
    overrides = overrides or {}
    if config_file is None and overrides.get("resume") and overrides.get("out"):
        saved = Path(overrides["out"]) / "config.yaml"
        if saved.is_file():
            config_file = saved
    file_data = load_yaml(config_file) if config_file else {}
    if config_file:  # the same rule for --config FILE as for a resumed run's config.yaml
        _check_user_networks(file_data, merge(overrides, parse_set(sets or [])), Path(config_file))
    name = preset_name or file_data.get("preset")
    if name:
        data = preset(name)
    data = merge(data, file_data)
    if preset_name:
        data["preset"] = preset_name
    data = merge(data, overrides)
    data = merge(data, parse_set(sets or []))
    return validate(from_dict(data))
