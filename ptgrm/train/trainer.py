"""`train(config)`: F and PTG-RM trained together from cached priors (paper Eq. 8).

Modes:
    baseline   F alone, ``Lg(Ihat, Ic)``.
    joint      F and R together, ``λf·Lg(Ihat, Ic) + λ1·Lg(Ibar, Ic)`` (a "-f" F takes the priors itself).
    refine     a trained F frozen (``model.baseline_weights`` or a pretrained F), only R trained.

The process never imports a foundation-model library: priors are read from the stores (float
vectors) and nothing else of the encoder is needed, so memory does not depend on the encoder.

Under ``torchrun`` (WORLD_SIZE > 1) the same function runs DistributedDataParallel: each process
loads ``batch_size / world`` samples of every global batch (DistributedSampler), gradients and
logged metrics are all-reduced, and rank 0 alone writes checkpoints and logs.

Exact resume: sample randomness comes from (seed, epoch, index), the epoch order from
DistributedSampler's seeded permutation, and a checkpoint holds model, optimiser, scheduler, EMA,
AMP scaler, RNG states, the step, the best metric and the non-finite counter; a resumed run skips
the batches of the interrupted epoch that were already used.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from ptg.pipeline.errors import PtgError
from ptg.pipeline.store import sample_keys

from . import checkpoint as ckpt_mod
from .config import TrainConfig, from_dict, save_yaml, to_dict
from .data import PriorTable, TrainDataset, ValDataset, augment_views, check_missing, load_tables
from .logs import Logs, plot_curves
from .losses import build_loss

# Prefixes of R's prior mappings T (and the concat ablation's), which `priors.lr_mult` scales.
_PRIOR_MAPPING_PREFIXES = ("t_m.", "t_c.", "prior_concat.")


class NonFiniteLossError(PtgError):
    """Training stopped after too many consecutive non-finite losses."""


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


class _Nets(nn.Module):
    """F and R as one module, so one DistributedDataParallel wrapper syncs both."""

    def __init__(self, f: nn.Module, r: nn.Module | None, f_kind: str, train_f: bool):
        super().__init__()
        self.f = f
        self.r = r
        self.f_kind = f_kind
        self.train_f = train_f

    def forward(self, x: Tensor, priors: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        # x: [B, 3, H, W]; priors: one [B, D_i] per store -> (Ihat [B, 3, H, W], Ibar [B, 3, H, W] or None)
        if self.f_kind == "feature-refiner":
            return self.f(x, priors), None
        if self.train_f:
            ihat = self.f(x)
        else:
            with torch.no_grad():  # refine mode: F is frozen, R learns on top of its output
                ihat = self.f(x)
        if self.r is None:
            return ihat, None
        return ihat, self.r(ihat, x, priors).out


def _model_kind(name: str) -> str:
    from ptg.ptgrm.models import get_model_spec

    return "restorer" if ":" in name else get_model_spec(name).kind


def _init_dist(cfg: TrainConfig) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        backend = cfg.run.dist_backend
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() and cfg.run.device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _device(cfg: TrainConfig, d: _Dist) -> torch.device:
    want = cfg.run.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PtgError(f"run.device={cfg.run.device!r} but no CUDA device is available; use --set run.device=cpu")
        if want == "cuda":
            want = f"cuda:{d.local_rank}"
        torch.cuda.set_device(torch.device(want))
    return torch.device(want)


def _all_sum(values: Sequence[float], d: _Dist, device: torch.device) -> list[float]:
    if not d.active:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _progress_caller(on_progress: Callable[..., None] | None) -> Callable[..., None]:
    """Call ``on_progress(n, **fields)``, or ``on_progress(n)`` if it takes no keyword fields."""
    if on_progress is None:
        return lambda n, **fields: None
    try:
        params = inspect.signature(on_progress).parameters.values()
        takes_fields = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    except (TypeError, ValueError):
        takes_fields = False
    return on_progress if takes_fields else (lambda n, **fields: on_progress(n))


def _warn(msg: str, d: _Dist) -> None:
    if d.main:
        warnings.warn(msg, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# set-up


def _samples(cfg: TrainConfig):
    from ptg.pipeline.manifest import load_manifest

    if not cfg.data.manifest:
        raise PtgError("no manifest: pass --manifest M (or data.manifest in the config file)")
    m = load_manifest(cfg.data.manifest, root=cfg.data.root)
    train = m.split(cfg.data.train_split)
    if not train:
        raise PtgError(f"the manifest {m.path} has no rows in split {cfg.data.train_split!r}; set data.train_split")
    vs = cfg.data.val_split
    if vs == "auto":
        vs = "val" if m.split("val") else "test"
    val = [] if vs == "none" else m.split(vs)
    val = [s for s in val if s.target is not None]  # metrics need targets
    if cfg.data.val_max_images:
        val = val[: cfg.data.val_max_images]
    return train, val


def _open_stores(cfg: TrainConfig) -> list[Any]:
    from ptg.pipeline.store import open_priors

    return [open_priors(p) for p in cfg.data.priors]


def _load_f_weights(cfg: TrainConfig, f: nn.Module) -> None:
    """refine mode: F's weights from a run folder/checkpoint or a plain state-dict file."""
    src = cfg.model.baseline_weights
    if src is None:
        if cfg.model.baseline_args.get("pretrained") or cfg.model.baseline_args.get("weights"):
            return  # the model loaded its own real weights when it was built
        raise PtgError("mode refine trains R on a frozen, trained F: pass --baseline-weights RUN_OR_CKPT "
                       "(a `ptg train --mode baseline` run) or a pretrained F (e.g. --set model.baseline_args.pretrained=true)")
    p = Path(src)
    if p.is_dir() or (p.is_file() and _is_train_ckpt(p)):
        c = ckpt_mod.load_checkpoint(ckpt_mod.resolve_checkpoint(p))
        if c["baseline"]["name"] != cfg.model.baseline:
            raise PtgError(f"--baseline-weights {src} holds F {c['baseline']['name']!r}, not {cfg.model.baseline!r}")
        ema = c.get("ema") or {}
        state = ema.get("baseline") if ema.get("baseline") is not None else c["baseline"]["state_dict"]
    elif p.is_file():
        state = torch.load(p, map_location="cpu", weights_only=True)
    else:
        raise PtgError(f"--baseline-weights {src}: no such file or run folder")
    try:
        f.load_state_dict(state)
    except RuntimeError as exc:
        raise PtgError(f"--baseline-weights {src} does not fit F {cfg.model.baseline!r} with args "
                       f"{cfg.model.baseline_args}: {exc}") from exc


def _is_train_ckpt(p: Path) -> bool:
    try:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception:
        return False
    return isinstance(obj, dict) and obj.get("format") == ckpt_mod.FORMAT


def _build_models(cfg: TrainConfig, dims: list[int]) -> tuple[nn.Module, nn.Module | None, str]:
    from ptg.ptgrm.models import create_model

    f_kind = _model_kind(cfg.model.baseline)
    f_args = dict(cfg.model.baseline_args)
    if f_kind == "feature-refiner":
        if cfg.mode != "joint":
            raise PtgError(f"{cfg.model.baseline!r} carries R inside F (a '-f' network); train it with --mode joint")
        _check_dims(f_args, dims, "model.baseline_args")
        f_args["prior_dims"] = tuple(dims)
    elif f_kind != "restorer":
        raise PtgError(f"model.baseline={cfg.model.baseline!r} is a refiner, not a restoration network F")
    f = create_model(cfg.model.baseline, **f_args)
    r = None
    if cfg.mode in ("joint", "refine") and f_kind == "restorer":
        if _model_kind(cfg.model.refiner) != "refiner":
            raise PtgError(f"model.refiner={cfg.model.refiner!r} is not a refinement module; use ptgrm or ptgrm-large")
        r_args = dict(cfg.model.refiner_args)
        _check_dims(r_args, dims, "model.refiner_args")
        needs = r_args.get("prior_mode", "ptg") != "none" and cfg.model.refiner != "ptgrm-large" and not r_args.get("large")
        if needs and not dims:
            raise PtgError(f"mode {cfg.mode} with R {cfg.model.refiner!r} needs priors: pass --priors STORE")
        r_args["prior_dims"] = tuple(dims) if dims else (1,)
        r = create_model(cfg.model.refiner, **r_args)
    if cfg.mode == "refine":
        _load_f_weights(cfg, f)
        f.eval()
        for p in f.parameters():
            p.requires_grad_(False)
    return f, r, f_kind


def _check_dims(args: dict[str, Any], dims: list[int], where: str) -> None:
    if "prior_dims" in args and tuple(args["prior_dims"]) != tuple(dims):
        raise PtgError(f"{where}.prior_dims={tuple(args['prior_dims'])} but the priors stores hold dims {tuple(dims)}; "
                       "drop prior_dims (it is read from the stores) or pass matching stores")


def _param_groups(cfg: TrainConfig, f: nn.Module, r: nn.Module | None, train_f: bool) -> list[dict[str, Any]]:
    groups = []
    if train_f:
        base, mapping = [], []
        for n, p in f.named_parameters():
            (mapping if n.startswith(_PRIOR_MAPPING_PREFIXES) else base).append(p)
        groups += [{"params": base, "name": "F"}, {"params": mapping, "name": "F.prior_mapping", "lr_mult": cfg.priors.lr_mult}]
    if r is not None:
        base, mapping = [], []
        for n, p in r.named_parameters():
            (mapping if n.startswith(_PRIOR_MAPPING_PREFIXES) else base).append(p)
        groups += [{"params": base, "name": "R"}, {"params": mapping, "name": "R.prior_mapping", "lr_mult": cfg.priors.lr_mult}]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = cfg.optim.lr * g.get("lr_mult", 1.0)
    return groups


def _make_ema(module: nn.Module | None, decay: float):
    if module is None or decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _collate_priors(batch_priors: list[Tensor], device: torch.device) -> list[Tensor]:
    return [p.to(device, non_blocking=True) for p in batch_priors]


# ---------------------------------------------------------------------------------------------
# validation


@torch.no_grad()
def _validate(nets: _Nets, ds: ValDataset, d: _Dist, device: torch.device, amp_dtype: torch.dtype | None
              ) -> dict[str, float]:
    """Mean PSNR/SSIM (the same `ptg.pipeline.metrics` as `ptg eval`) of the final output and of F."""
    from ptg.pipeline.metrics import psnr, ssim

    was = nets.training
    nets.eval()
    sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # psnr, ssim, psnr_f, ssim_f, count
    for i in range(d.rank, len(ds), d.world):
        item = ds[i]
        x = item["x"].unsqueeze(0).to(device)
        priors = [p.unsqueeze(0).to(device) for p in item["priors"]]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            ihat, out = nets(x, priors)
        y = item["y"].permute(1, 2, 0).numpy()
        final = (out if out is not None else ihat)[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        fimg = ihat[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        sums[0] += psnr(final, y)
        sums[1] += ssim(final, y)
        sums[2] += psnr(fimg, y)
        sums[3] += ssim(fimg, y)
        sums[4] += 1
    sums = _all_sum(sums, d, device)
    nets.train(was)
    n = max(sums[4], 1.0)
    if sums[4] == 0:
        return {}
    out = {"psnr": sums[0] / n, "ssim": sums[1] / n}
    if nets.r is not None:
        out.update({"psnr_f": sums[2] / n, "ssim_f": sums[3] / n})
    return out


# ---------------------------------------------------------------------------------------------
# the loop


def _check_resume_config(cfg: TrainConfig, out: Path) -> None:
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    from .config import load_yaml

    saved = to_dict(from_dict(load_yaml(saved_path)))
    now = to_dict(cfg)
    if saved["model"] != now["model"]:
        raise PtgError(f"--resume: the model settings differ from the run's {saved_path} "
                       f"(saved {saved['model']}, now {now['model']}); resume with the same model or use a new --out")
    ignore = {"resume", "steps"}
    diff = [k for k in now if k not in ignore and k not in ("run",) and saved.get(k) != now[k]]
    if diff:
        warnings.warn(f"--resume: settings {', '.join(diff)} differ from the interrupted run's config.yaml; "
                      "the resumed run will not match an uninterrupted one", stacklevel=3)


def train(config: TrainConfig, on_progress: Callable[..., None] | None = None) -> dict[str, Any]:
    """Train as ``config`` says; return the content of ``RUN/final.json``.

    Args:
        config: a resolved `TrainConfig` (see `ptg.ptgrm.train.config.resolve`).
        on_progress: called as ``on_progress(1, loss=..., lr=...)`` after every step (or
            ``on_progress(1)`` when it takes no keyword fields); a resumed run first reports the
            steps already done with one ``on_progress(step)``.

    Raises:
        PtgError: bad input (manifest, stores, dims, config), or too many non-finite losses.
    """
    cfg = config
    if not cfg.out:
        raise PtgError("no run folder: pass --out RUN")
    d = _init_dist(cfg)
    try:
        return _train(cfg, d, _progress_caller(on_progress))
    finally:
        if d.active and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, d: _Dist, progress: Callable[..., None]) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(cfg.out)
    last_path = out / "checkpoints" / "last.pt"
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = _device(cfg, d)
    if cfg.run.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # On GPU some kernels have no deterministic version: warn rather than fail there.
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    amp_dtype = None
    if cfg.run.amp != "none":
        if device.type == "cuda":
            amp_dtype = torch.bfloat16 if cfg.run.amp == "bf16" else torch.float16
        else:
            _warn(f"run.amp={cfg.run.amp} needs a CUDA device; training in float32 on {device}", d)

    resume = None
    if last_path.is_file():
        if not cfg.resume:
            raise PtgError(f"{out} already holds a run (checkpoints/last.pt); pass --resume to continue it or choose another --out")
        resume = ckpt_mod.load_checkpoint(last_path)
        _check_resume_config(cfg, out)
    elif cfg.resume:
        _warn(f"--resume: {last_path} does not exist yet; starting from step 0", d)

    # -- data
    train_samples, val_samples = _samples(cfg)
    f_kind = _model_kind(cfg.model.baseline)
    uses_priors = cfg.mode != "baseline" or f_kind == "feature-refiner"
    r_needs = (cfg.model.refiner != "ptgrm-large" and not cfg.model.refiner_args.get("large")
               and cfg.model.refiner_args.get("prior_mode", "ptg") != "none")
    if uses_priors and not cfg.data.priors and (f_kind == "feature-refiner" or r_needs):
        raise PtgError(f"mode {cfg.mode} needs priors: pass --priors STORE (made by `ptg extract-priors`), "
                       "or train F alone with --mode baseline")
    stores = _open_stores(cfg) if uses_priors else []
    if cfg.mode == "baseline" and cfg.data.priors and d.main:
        warnings.warn("mode baseline trains F alone: the --priors stores are not read", stacklevel=2)
    dims = [int(s.dim) for s in stores]
    if resume is not None:
        saved_dims = [int(p["dim"]) for p in resume.get("priors") or []]
        if saved_dims != dims:
            raise PtgError(f"the checkpoint {last_path} was trained with prior dims {saved_dims} but the --priors stores "
                           f"hold {dims}; resume with the stores of the original run")
    train_keys = sample_keys(train_samples) if stores else []
    keep = check_missing(train_samples, train_keys, stores, cfg.data.allow_missing_priors) if stores else list(range(len(train_samples)))
    train_samples = [train_samples[i] for i in keep]
    train_keys = [train_keys[i] for i in keep] if stores else []
    if not train_samples:
        raise PtgError("no training samples left after dropping those without priors")
    val_keys = sample_keys(val_samples) if stores else []
    if stores and val_samples:
        vkeep = check_missing(val_samples, val_keys, stores, cfg.data.allow_missing_priors)
        val_samples = [val_samples[i] for i in vkeep]
        val_keys = [val_keys[i] for i in vkeep]
    aug = augment_views(cfg.data.augment, stores[0].views if stores else None)
    with warnings.catch_warnings():
        if not d.main:
            warnings.simplefilter("ignore")
        train_tables: list[PriorTable] = load_tables(stores, train_keys, aug) if stores else []
        val_tables = load_tables(stores, val_keys, ("identity",)) if stores and val_samples else []

    loss_fn = build_loss(cfg.loss).to(device)
    if d.world > 1 and cfg.data.batch_size % d.world:
        raise PtgError(f"data.batch_size={cfg.data.batch_size} must divide by the {d.world} torchrun processes")
    per_rank = cfg.data.batch_size // d.world
    repeat = max(1, math.ceil(cfg.data.batch_size / len(train_samples)))
    train_ds = TrainDataset(train_samples, train_tables, cfg.data, cfg.priors, aug, cfg.seed, repeat,
                            need_target=loss_fn.needs_target)
    val_ds = ValDataset(val_samples, val_tables, cfg.priors, cfg.data.val_crop, cfg.seed) if val_samples else None
    steps_per_epoch = len(train_ds) // cfg.data.batch_size

    # -- models, optimiser, schedule
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    f, r, f_kind = _build_models(cfg, dims)
    train_f = cfg.mode != "refine"
    nets = _Nets(f, r, f_kind, train_f).to(device)
    groups = _param_groups(cfg, f, r, train_f)
    opt = torch.optim.Adam(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=cfg.optim.restart_period or cfg.steps, T_mult=cfg.optim.restart_mult, eta_min=cfg.optim.eta_min)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    ema_f = _make_ema(f, cfg.run.ema) if train_f else None
    ema_r = _make_ema(r, cfg.run.ema)
    trainable = [p for p in nets.parameters() if p.requires_grad]
    if not trainable:
        raise PtgError(f"mode {cfg.mode} leaves nothing to train")

    step, best, nonfinite, skipped_total = 0, {"metric": cfg.run.best_metric, "value": None, "step": None}, 0, 0
    last_val: dict[str, float] = {}
    if resume is not None:
        f.load_state_dict(resume["baseline"]["state_dict"])
        if r is not None:
            r.load_state_dict(resume["refiner"]["state_dict"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler") is not None:
            scaler.load_state_dict(resume["scaler"])
        if resume.get("ema"):
            if ema_f is not None and resume["ema"].get("baseline_avg") is not None:
                ema_f.load_state_dict(resume["ema"]["baseline_avg"])
            if ema_r is not None and resume["ema"].get("refiner_avg") is not None:
                ema_r.load_state_dict(resume["ema"]["refiner_avg"])
        ckpt_mod.set_rng_state(resume["rng"])
        step = int(resume["step"])
        best = resume["best"]
        nonfinite = int(resume.get("nonfinite", 0))
        skipped_total = int(resume.get("skipped", 0))
        last_val = dict(resume.get("last_val") or {})

    ddp = nets
    if d.active:
        ddp = nn.parallel.DistributedDataParallel(nets, device_ids=[device.index] if device.type == "cuda" else None)

    if d.main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")
    priors_meta = [t.describe() for t in train_tables] if train_tables else [
        {"path": str(s.path), "dim": int(s.dim), "views": list(s.views), "metadata": dict(s.metadata)} for s in stores]

    def ema_eval_nets() -> _Nets:
        if ema_f is None and ema_r is None:
            return nets
        return _Nets(ema_f.module if ema_f is not None else f, ema_r.module if ema_r is not None else r, f_kind, train_f)

    def save(path: Path) -> None:
        if not d.main:
            return
        ema = None
        if ema_f is not None or ema_r is not None:
            ema = {"baseline": ema_f.module.state_dict() if ema_f is not None else None,
                   "refiner": ema_r.module.state_dict() if ema_r is not None else None,
                   "baseline_avg": ema_f.state_dict() if ema_f is not None else None,
                   "refiner_avg": ema_r.state_dict() if ema_r is not None else None}
        ckpt_mod.save_atomic({
            "format": ckpt_mod.FORMAT, "step": step, "mode": cfg.mode, "config": to_dict(cfg), "priors": priors_meta,
            "baseline": {"name": cfg.model.baseline, "args": _entry_args(cfg.model.baseline_args, f_kind, dims),
                         "kind": f_kind, "state_dict": f.state_dict()},
            "refiner": None if r is None else {"name": cfg.model.refiner,
                                               "args": {**cfg.model.refiner_args, "prior_dims": list(r.config.prior_dims)},
                                               "state_dict": r.state_dict()},
            "ema": ema, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "rng": ckpt_mod.rng_state(),
            "best": best, "nonfinite": nonfinite, "skipped": skipped_total, "last_val": last_val,
        }, path)

    logs = Logs(out, step, d.main)
    if step:
        progress(step)  # a resumed run's bar starts where the interrupted one stopped
    nets.train()
    if not train_f:
        f.eval()  # a frozen F keeps its inference behaviour (norm statistics, dropout off)
    window = {"loss": 0.0, "loss_f": 0.0, "loss_r": 0.0, "n": 0, "skipped": 0, "gnorm": 0.0}
    t_window = time.perf_counter()
    sampler = DistributedSampler(train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed, drop_last=True)

    def validate_now() -> dict[str, float]:
        if val_ds is None:
            return {}
        return _validate(ema_eval_nets(), val_ds, d, device, amp_dtype)

    final_row: dict[str, Any] = {}
    try:
        while step < cfg.steps:
            epoch, offset = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch)
            indices = list(sampler)[offset * per_rank:]
            loader = DataLoader(train_ds, batch_size=per_rank, sampler=[(epoch, i) for i in indices], drop_last=True,
                                num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda")
            for batch in loader:
                if step >= cfg.steps:
                    break
                x = batch["x"].to(device, non_blocking=True)
                y = batch["y"].to(device, non_blocking=True) if batch["y"].numel() else None
                priors = _collate_priors(batch["priors"], device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    ihat, ibar = ddp(x, priors)
                    loss_f = loss_r = None
                    if ibar is None:  # F alone (baseline mode, or a "-f" F with R inside)
                        loss = loss_f = loss_fn(ihat.float(), y, x)
                    elif not train_f:  # refine: only R learns
                        loss_r = loss_fn(ibar.float(), y, x)
                        loss = cfg.loss.lambda_r * loss_r
                    else:  # Eq. 8
                        loss_f = loss_fn(ihat.float(), y, x)
                        loss_r = loss_fn(ibar.float(), y, x)
                        loss = cfg.loss.lambda_f * loss_f + cfg.loss.lambda_r * loss_r
                finite = torch.isfinite(loss.detach()).to(torch.float32)
                if d.active:
                    dist.all_reduce(finite, op=dist.ReduceOp.MIN)  # every rank skips together
                opt.zero_grad(set_to_none=True)
                gnorm = float("nan")
                if finite.item() < 1:
                    nonfinite += 1
                    skipped_total += 1
                    window["skipped"] += 1
                    if nonfinite >= cfg.run.max_nonfinite:
                        save(out / "checkpoints" / "nonfinite.pt")
                        raise NonFiniteLossError(
                            f"{nonfinite} consecutive non-finite losses at step {step + 1} (run.max_nonfinite="
                            f"{cfg.run.max_nonfinite}); lower optim.lr, set optim.grad_clip, or check the data. "
                            f"The state before the stop is in {out / 'checkpoints' / 'nonfinite.pt'}")
                else:
                    nonfinite = 0
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.unscale_(opt)
                    else:
                        loss.backward()
                    if cfg.optim.grad_clip > 0:
                        gnorm = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.grad_clip))
                    if scaler is not None:
                        scaler.step(opt)
                        scaler.update()
                    else:
                        opt.step()
                    if ema_f is not None:
                        ema_f.update_parameters(f)
                    if ema_r is not None:
                        ema_r.update_parameters(r)
                    window["loss"] += float(loss.detach())
                    window["loss_f"] += float(loss_f.detach()) if loss_f is not None else 0.0
                    window["loss_r"] += float(loss_r.detach()) if loss_r is not None else 0.0
                    window["gnorm"] += gnorm if math.isfinite(gnorm) else 0.0
                    window["n"] += 1
                sched.step()  # skipped steps still advance the schedule, so step and LR stay aligned
                step += 1
                lr = opt.param_groups[0]["lr"]
                progress(1, loss=float(loss.detach()), lr=lr)

                row: dict[str, Any] = {}
                if step % cfg.run.log_every == 0 or step == cfg.steps:
                    s = _all_sum([window["loss"], window["loss_f"], window["loss_r"], window["n"], window["skipped"],
                                  window["gnorm"]], d, device)
                    n = max(s[3], 1.0)
                    dt = time.perf_counter() - t_window
                    row = {"step": step, "epoch": epoch, "loss": s[0] / n, "lr": lr,
                           "skipped": int(s[4]), "sec_per_step": dt / max(1, window["n"] + window["skipped"])}
                    if r is not None or cfg.mode == "joint":
                        row.update({"loss_f": s[1] / n, "loss_r": s[2] / n} if r is not None else {})
                    if cfg.optim.grad_clip > 0:
                        row["grad_norm"] = s[5] / n
                    window = {k: 0 if k in ("n", "skipped") else 0.0 for k in window}
                    t_window = time.perf_counter()
                if val_ds is not None and cfg.run.val_every and step % cfg.run.val_every == 0 and step < cfg.steps:
                    last_val = validate_now()
                    row = {"step": step, "epoch": epoch, **row, **{f"val_{k}": v for k, v in last_val.items()}}
                    best_path = _update_best(best, last_val, step)
                    if best_path:
                        save(out / "checkpoints" / "best.pt")
                if row and step == cfg.steps and val_ds is not None:
                    final_row = row  # written with the final validation below, as one row
                elif row:
                    logs.write(row)
                if cfg.run.save_every and step % cfg.run.save_every == 0:
                    save(last_path)  # first: once a step file exists, last.pt is at least as recent
                    save(out / "checkpoints" / f"step_{step:06d}.pt")
                elif step % cfg.run.checkpoint_every == 0:
                    save(last_path)
        # -- end of training
        if val_ds is not None:
            last_val = validate_now()
            logs.write({"step": step, **final_row, **{f"val_{k}": v for k, v in last_val.items()}})
            if _update_best(best, last_val, step):
                save(out / "checkpoints" / "best.pt")
        save(last_path)
    finally:
        logs.close()

    final = {
        "step": step,
        "mode": cfg.mode,
        "baseline": cfg.model.baseline,
        "refiner": cfg.model.refiner if r is not None else None,
        "digest": ckpt_mod.parameter_digest([f if train_f else None, r]),
        "val": last_val,
        "best": best,
        "skipped_steps": skipped_total,
        "world_size": d.world,
        "prior_dims": dims,
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    if d.main:
        tmp = out / "final.json.tmp"
        tmp.write_text(json.dumps(final, indent=2))
        os.replace(tmp, out / "final.json")
        try:
            plot_curves(out / "log.csv", out / "curves.png")
        except Exception as exc:  # a plotting problem must not lose a finished run
            warnings.warn(f"could not draw {out / 'curves.png'}: {exc}", stacklevel=2)
    return final


def _entry_args(args: dict[str, Any], kind: str, dims: list[int]) -> dict[str, Any]:
    out = dict(args)
    if kind == "feature-refiner":
        out["prior_dims"] = list(dims)
    return out


def _update_best(best: dict[str, Any], metrics: dict[str, float], step: int) -> bool:
    """Record ``metrics`` in ``best`` if they beat it (higher is better for PSNR and SSIM)."""
    value = metrics.get(best["metric"])
    if value is None:
        return False
    if best["value"] is None or value > best["value"]:
        best.update(value=value, step=step)
        return True
    return False
