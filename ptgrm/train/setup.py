"""What a run is built from: its manifest rows, F and R, the optimiser's parameter groups, EMA."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptg.pipeline.core.errors import PtgError

from ..frozen_f import load_f_weights
from . import checkpoint as ckpt_mod
from .config import TrainConfig


def read_samples(cfg: TrainConfig) -> tuple[list[Any], list[Any], str]:
    """Training rows, validation rows (with targets) and the name of the validated split."""
    from ptg.pipeline.datasets.manifest import load_manifest

    if not cfg.data.manifest:
        raise PtgError("no manifest: pass --manifest M (or data.manifest in the config file)")
    m = load_manifest(cfg.data.manifest, root=cfg.data.root, outside="allow" if cfg.data.allow_outside else "refuse")
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
    return train, val, vs


def build_models(cfg: TrainConfig, dims: list[int], f_record: dict[str, Any] | None = None
                 ) -> tuple[nn.Module, nn.Module | None, str]:
    """F (and R for joint/refine), with ``prior_dims`` from the stores; refine loads and freezes F.

    With ``data.f_outputs`` F is the `CachedF` of ``f_record`` (`CachedOutputs.record`).
    """
    from ptg.ptgrm.models import create_model, model_kind

    if cfg.data.f_outputs:  # F's outputs are read, not computed: no F in memory, only its record
        cfg.model.baseline, cfg.model.baseline_weights = "f-outputs", None
        cfg.model.baseline_args = dict(f_record or cfg.model.baseline_args)
    f_kind = model_kind(cfg.model.baseline)
    f_args = dict(cfg.model.baseline_args)
    if f_kind == "feature-refiner":
        if cfg.mode != "joint":
            raise PtgError(f"{cfg.model.baseline!r} carries R inside F (a '-f' network); train it with --mode joint")
        _check_dims(f_args, dims, "model.baseline_args")
        f_args["prior_dims"] = tuple(dims)
    elif f_kind != "restorer":
        raise PtgError(f"model.baseline={cfg.model.baseline!r} is a refiner, not a restoration network F")
    f = create_model(cfg.model.baseline, **f_args)
    _check_external_f(cfg, f)
    r = None
    if cfg.mode in ("joint", "refine") and f_kind == "restorer":
        if model_kind(cfg.model.refiner) != "refiner":
            raise PtgError(f"model.refiner={cfg.model.refiner!r} is not a refinement module; use ptgrm, ptgrm-large or ptgrm-release")
        r_args = dict(cfg.model.refiner_args)
        _check_dims(r_args, dims, "model.refiner_args")
        r_args["prior_dims"] = tuple(dims) if dims else (1,)
        r = create_model(cfg.model.refiner, **r_args)
        if cfg.model.refiner_weights:
            load_r_weights(cfg, r)
    if cfg.model.refiner_weights and r is None:
        raise PtgError("model.refiner_weights is set but this run trains no R (mode baseline, or a '-f' F); drop it")
    if cfg.mode == "refine":
        if not getattr(f, "weights_loaded", False):  # spandrel / oidn / zero-dce were built with their weights
            load_f_weights(f, cfg.model.baseline, cfg.model.baseline_args, cfg.model.baseline_weights)
        f.eval()
        for p in f.parameters():
            p.requires_grad_(False)
    return f, r, f_kind


def _check_external_f(cfg: TrainConfig, f: nn.Module) -> None:
    """A black-box F only frozen; a checkpoint-built F's identity (architecture, SHA-256) into the run's config."""
    from ptg.ptgrm.models import get_model_spec

    if ":" not in cfg.model.baseline and get_model_spec(cfg.model.baseline).black_box and cfg.mode != "refine":
        raise PtgError(f"F {cfg.model.baseline!r} is a black box (no gradient through it): train R on it with --mode refine")
    cfg.model.baseline_args.update(getattr(f, "record", {}))  # saved in config.yaml and the checkpoint; checked on resume


def _check_dims(args: dict[str, Any], dims: list[int], where: str) -> None:
    if "prior_dims" in args and tuple(args["prior_dims"]) != tuple(dims):
        raise PtgError(f"{where}.prior_dims={tuple(args['prior_dims'])} but the priors stores hold dims {tuple(dims)}; "
                       "drop prior_dims (it is read from the stores) or pass matching stores")


def load_r_weights(cfg: TrainConfig, r: nn.Module) -> None:
    """R's starting weights from ``model.refiner_weights``, loaded strictly and safely.

    Read by the one weights reader (`ptg.pipeline.core.weights`): a ``.safetensors`` file, or
    anything ``torch.load(weights_only=True)`` reads within the weights bounds: a `ptg train`
    checkpoint (its R), a plain state dict, or the authors' files (``params``/``state_dict``
    wrappers, ``module.`` and whole-network ``refinement11.`` prefixes are unwrapped by
    `release_state_dict`). Nothing in the file can run code.
    """
    from ptg.pipeline.core.weights import read_weights
    from ptg.ptgrm.models.ptgrm_release import release_state_dict

    src = Path(cfg.model.refiner_weights)
    what = f"model.refiner_weights {src}"
    fix = "pass a state dict (.pt, .pth, .safetensors) or a `ptg train` checkpoint"
    if not src.is_file():
        raise PtgError(f"{what}: no such file; {fix}")
    obj: Any = read_weights(src, "model.refiner_weights file", fix)  # bounded, weights_only / safetensors
    if ckpt_mod.is_checkpoint(obj):
        entry = obj.get("refiner") or {}
        if entry.get("name") != cfg.model.refiner:
            raise PtgError(f"{what} holds R {entry.get('name')!r}, not {cfg.model.refiner!r}; set model.refiner to match")
        obj = entry["state_dict"]
    state = release_state_dict(obj, what)
    mine = r.state_dict()
    missing = [k for k in mine if k not in state]
    extra = [k for k in state if k not in mine]
    wrong = [f"{k} {tuple(state[k].shape)} (R: {tuple(v.shape)})" for k, v in mine.items() if k in state and state[k].shape != v.shape]
    if missing or extra or wrong:
        raise PtgError(f"{what} does not fit R {cfg.model.refiner!r} with args {cfg.model.refiner_args}: "
                       f"{len(missing)} missing (e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}), "
                       f"{len(wrong)} of another shape (e.g. {wrong[:2]}); build R with the file's widths and prior dims")
    r.load_state_dict(state)


def param_groups(cfg: TrainConfig, f: nn.Module, r: nn.Module | None, train_f: bool) -> list[dict[str, Any]]:
    """F, R and their prior mappings (each model's ``prior_parameters()``, scaled by ``priors.lr_mult``)."""
    groups = []
    for name, module, used in (("F", f, train_f), ("R", r, r is not None)):
        if not used:
            continue
        mapping_fn = getattr(module, "prior_parameters", None)
        mapping = list(mapping_fn()) if mapping_fn is not None else []
        ids = {id(p) for p in mapping}
        base = [p for p in module.parameters() if id(p) not in ids]
        mapping = [p for p in module.parameters() if id(p) in ids]  # in the module's own order
        groups += [{"params": base, "name": name},
                   {"params": mapping, "name": f"{name}.prior_mapping", "lr_mult": cfg.priors.lr_mult}]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = cfg.optim.lr * g.get("lr_mult", 1.0)
    return groups


def make_ema(module: nn.Module | None, decay: float):
    if module is None or decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
