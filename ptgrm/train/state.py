"""`TrainState`: everything a run is made of, and the one definition of the checkpoint schema.

A checkpoint (``RUN/checkpoints/*.pt``) is ``TrainState.state_dict()``, tensors and plain values
only (it loads with ``torch.load(weights_only=True)``)::

    format           "ptg-train/2"
    step             optimiser steps done (with the seed, it fixes the data position: see trainer)
    mode             baseline | joint | refine
    config           the resolved TrainConfig as a plain dict
    priors           one dict per store: path, dim, views, metadata (encoder spec, fingerprint, ...)
    prior_transform  PriorTransform.state_dict(): dims, normalize, control, seed, mean/std/constant
    baseline         {"name", "args", "kind", "state_dict"}          F
    refiner          {"name", "args", "state_dict"} or None          R
    ema              {"baseline", "refiner": EMA weights or None, "baseline_avg", "refiner_avg":
                      the AveragedModel states} or None
    optimizer, scheduler, scaler      their state_dicts (scaler None without fp16)
    rng              torch / numpy / python (/ cuda) RNG states as tensors and lists
    best             {"metric", "value", "step", "split", "enabled"}
    nonfinite        consecutive non-finite losses so far
    skipped          steps skipped for a non-finite loss, in total
    last_val         the latest validation metrics
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.fsio import atomic_save

from ..artifacts.checkpoint import pick_weights
from ..restorer import Restorer
from . import checkpoint as ckpt_mod


@dataclass
class TrainState:
    """Networks, optimiser, schedule, AMP scaler, EMA, counters and RNG of one run."""

    config: dict[str, Any]  # the resolved TrainConfig as a dict
    nets: Restorer  # F, R and the prior transform
    opt: torch.optim.Optimizer
    sched: Any  # torch LR scheduler
    scaler: Any = None  # torch.amp.GradScaler with fp16, else None
    ema_f: Any = None  # AveragedModel of F, or None
    ema_r: Any = None  # AveragedModel of R, or None
    priors: list[dict[str, Any]] = field(default_factory=list)  # what each store is (recorded, not loaded)
    step: int = 0
    best: dict[str, Any] = field(default_factory=dict)
    nonfinite: int = 0
    skipped: int = 0
    last_val: dict[str, float] = field(default_factory=dict)

    @property
    def f(self) -> nn.Module:
        return self.nets.f

    @property
    def r(self) -> nn.Module | None:
        return self.nets.r

    def eval_nets(self) -> Restorer:
        """The networks validation and inference use: the EMA weights when kept (`pick_weights`)."""
        if self.ema_f is None and self.ema_r is None:
            return self.nets
        n = self.nets
        f, r, _ = pick_weights(n.f, n.r, self.ema_f.module if self.ema_f is not None else None,
                               self.ema_r.module if self.ema_r is not None else None, frozen_f=not n.train_f)
        return Restorer(f, r, n.transform, n.f_kind, n.train_f)

    def _entry(self, which: str, module: nn.Module) -> dict[str, Any]:
        model = self.config["model"]
        args = dict(model[f"{which}_args"])
        if which == "refiner" or self.nets.f_kind == "feature-refiner":
            args["prior_dims"] = list(module.config.prior_dims)
        entry = {"name": model[which], "args": args, "state_dict": module.state_dict()}
        if which == "baseline":
            entry["kind"] = self.nets.f_kind
        return entry

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint (see the module docstring)."""
        ema = None
        if self.ema_f is not None or self.ema_r is not None:
            ema = {"baseline": self.ema_f.module.state_dict() if self.ema_f is not None else None,
                   "refiner": self.ema_r.module.state_dict() if self.ema_r is not None else None,
                   "baseline_avg": self.ema_f.state_dict() if self.ema_f is not None else None,
                   "refiner_avg": self.ema_r.state_dict() if self.ema_r is not None else None}
        return {
            "format": ckpt_mod.FORMAT, "step": self.step, "mode": self.config["mode"], "config": self.config,
            "priors": self.priors, "prior_transform": self.nets.transform.state_dict(),
            "baseline": self._entry("baseline", self.f),
            "refiner": None if self.r is None else self._entry("refiner", self.r),
            "ema": ema, "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None, "rng": ckpt_mod.rng_state(),
            "best": dict(self.best), "nonfinite": self.nonfinite, "skipped": self.skipped, "last_val": dict(self.last_val),
        }

    def load_state_dict(self, ck: dict[str, Any]) -> None:
        """Restore everything from a checkpoint of this same run (names checked, never imported)."""
        model = self.config["model"]
        saved_dims = [int(p["dim"]) for p in ck.get("priors") or []]
        if saved_dims != list(self.nets.transform.dims):
            raise PtgError(f"the checkpoint was trained with prior dims {saved_dims} but the --priors stores hold "
                           f"{list(self.nets.transform.dims)}; resume with the stores of the original run")
        for which in ("baseline", "refiner"):
            entry = ck.get(which)
            have = self.f if which == "baseline" else self.r
            if (entry is None) != (have is None) or (entry is not None and entry["name"] != model[which]):
                raise PtgError(f"the checkpoint's {which} {None if entry is None else entry['name']!r} is not this run's "
                               f"{model[which] if have is not None else None!r}; resume with the run's own settings")
        self.f.load_state_dict(ck["baseline"]["state_dict"])
        if self.r is not None:
            self.r.load_state_dict(ck["refiner"]["state_dict"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        if self.scaler is not None and ck.get("scaler") is not None:
            self.scaler.load_state_dict(ck["scaler"])
        ema = ck.get("ema") or {}
        if self.ema_f is not None and ema.get("baseline_avg") is not None:
            self.ema_f.load_state_dict(ema["baseline_avg"])
        if self.ema_r is not None and ema.get("refiner_avg") is not None:
            self.ema_r.load_state_dict(ema["refiner_avg"])
        ckpt_mod.set_rng_state(ck["rng"])
        self.step = int(ck["step"])
        self.best = dict(ck["best"])
        self.nonfinite = int(ck.get("nonfinite", 0))
        self.skipped = int(ck.get("skipped", 0))
        self.last_val = dict(ck.get("last_val") or {})

    def save(self, path: Path) -> None:
        atomic_save(self.state_dict(), path)
