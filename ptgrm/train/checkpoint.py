"""Checkpoints of `ptg train`: atomic writes, exact resume, and loading for inference.

A checkpoint is one ``torch.save`` dict::

    format      "ptg-train/1"
    step        optimiser steps done
    mode        baseline | joint | refine
    config      the resolved TrainConfig as a dict
    priors      one dict per store: path, dim, views, metadata (encoder name/args/fingerprint/preprocessing)
    baseline    {"name", "args", "kind", "state_dict"}            F
    refiner     {"name", "args", "state_dict"} or None            R
    ema         {"baseline": state_dict, "refiner": state_dict or None} or None
    optimizer, scheduler, scaler      their state_dicts (scaler None without fp16)
    rng         torch / numpy / python RNG states
    best        {"metric", "value", "step"}
    nonfinite   consecutive non-finite losses so far

Files are written to ``x.pt.tmp``, fsync'd and renamed over ``x.pt``: a process killed while
saving leaves the previous checkpoint intact.
"""
from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ptg.pipeline.errors import PtgError

FORMAT = "ptg-train/1"


def save_atomic(obj: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_atomic`.

    Raises:
        PtgError: the file is missing or not a ptg training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise PtgError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise PtgError(f"cannot read the checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise PtgError(f"{path} is not a `ptg train` checkpoint (format {FORMAT})")
    return ckpt


def rng_state() -> dict[str, Any]:
    """torch, numpy and python RNG states."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def parameter_digest(modules: Sequence[nn.Module | None]) -> str:
    """SHA-256 over the trainable parameters of ``modules``, in order, by sorted name.

    Each parameter contributes its name, dtype, shape and raw bytes (as float32 on the CPU), so a
    digest equality means bit-identical weights.
    """
    h = hashlib.sha256()
    for i, m in enumerate(modules):
        if m is None:
            continue
        for name, p in sorted(m.named_parameters(), key=lambda kv: kv[0]):
            if not p.requires_grad:
                continue
            t = p.detach().to("cpu", torch.float32).contiguous()
            h.update(f"{i}:{name}:{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


def resolve_checkpoint(path_or_run_dir: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file: the path itself, or ``RUN/checkpoints/{best,last}.pt`` of a run folder."""
    p = Path(path_or_run_dir)
    if p.is_file():
        return p
    if p.is_dir():
        order = ("best.pt", "last.pt") if prefer == "best" else ("last.pt", "best.pt")
        for name in order:
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise PtgError(f"{p} is not a finished `ptg train` run folder (no checkpoints/best.pt or last.pt)")
    raise PtgError(f"no checkpoint or run folder at {p}")


def build_network(entry: dict[str, Any]) -> nn.Module:
    """Rebuild F or R from a checkpoint entry (name + config overrides) and load its weights.

    A pretrained flag is dropped while rebuilding: the weights come from the checkpoint.
    """
    from ptg.ptgrm.models import create_model

    args = dict(entry["args"])
    if args.get("pretrained"):
        args["pretrained"] = False
    net = create_model(entry["name"], **args)
    net.load_state_dict(entry["state_dict"])
    return net


@dataclass
class InferenceBundle:
    """What `ptg restore` / `ptg eval` need from a training run.

    Attributes:
        baseline: F in eval mode (for a "-f" network, F already contains R).
        refiner: R in eval mode, or None (mode baseline, or a "-f" network).
        mode: baseline | joint | refine.
        config: the run's resolved config as a dict.
        priors: one dict per store used: path, dim, views and the store's metadata.
        step: the step the weights are from.
        path: the checkpoint file.
    """

    baseline: nn.Module
    refiner: nn.Module | None
    mode: str
    config: dict[str, Any]
    priors: list[dict[str, Any]]
    step: int
    path: Path
    baseline_kind: str = "restorer"
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_priors(self) -> bool:
        return bool(self.priors) and (self.refiner is not None or self.baseline_kind == "feature-refiner")

    def prepare_priors(self, priors: Sequence[Tensor] | None, batch: int, device: torch.device) -> list[Tensor]:
        """Apply the run's prior handling (L2 normalisation, zero control) to raw store vectors."""
        pcfg = self.config.get("priors", {})
        if pcfg.get("control") == "zero":
            return [torch.zeros(batch, p["dim"], device=device) for p in self.priors]
        if priors is None:
            raise PtgError(f"this model was trained with priors of dims {[p['dim'] for p in self.priors]}; pass them")
        if len(priors) != len(self.priors):
            raise PtgError(f"this model takes {len(self.priors)} prior(s) ({[p['dim'] for p in self.priors]}), got {len(priors)}")
        out = []
        for g, meta in zip(priors, self.priors):
            if g.dim() != 2 or g.shape[1] != meta["dim"]:
                raise PtgError(f"a prior of shape {tuple(g.shape)} does not match the model's prior dim {meta['dim']} "
                               f"(store {meta['path']}); use priors from the same encoder")
            g = g.to(device=device, dtype=torch.float32)
            if pcfg.get("l2_normalize", True):
                g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
            out.append(g)
        return out

    @torch.no_grad()
    def restore(self, x: Tensor, priors: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """Run F (and R) on a batch.

        Args:
            x: ``[B, 3, H, W]`` degraded images in [0, 1].
            priors: raw store vectors, one ``[B, D_i]`` per store of `priors` (None when unused).

        Returns:
            (F's output, R's output or None), both ``[B, 3, H, W]``.
        """
        device = next(self.baseline.parameters()).device
        x = x.to(device)
        g = self.prepare_priors(priors, x.shape[0], device) if self.uses_priors else []
        if self.baseline_kind == "feature-refiner":
            return self.baseline(x, g), None
        ihat = self.baseline(x)
        if self.refiner is None:
            return ihat, None
        return ihat, self.refiner(ihat, x, g).out


def load_for_inference(path_or_run_dir: str | Path, device: str | torch.device = "cpu") -> InferenceBundle:
    """Load F (and R) from a checkpoint file or a run folder (its best.pt, else last.pt).

    EMA weights are used when the run kept them.
    """
    path = resolve_checkpoint(path_or_run_dir)
    ckpt = load_checkpoint(path)
    ema = ckpt.get("ema")
    base_entry = dict(ckpt["baseline"])
    if ema is not None and ema.get("baseline") is not None and ckpt["mode"] != "refine":
        base_entry["state_dict"] = ema["baseline"]
    baseline = build_network(base_entry).to(device).eval()
    refiner = None
    if ckpt.get("refiner") is not None:
        ref_entry = dict(ckpt["refiner"])
        if ema is not None and ema.get("refiner") is not None:
            ref_entry["state_dict"] = ema["refiner"]
        refiner = build_network(ref_entry).to(device).eval()
    return InferenceBundle(baseline=baseline, refiner=refiner, mode=ckpt["mode"], config=ckpt["config"],
                           priors=list(ckpt.get("priors") or []), step=int(ckpt["step"]), path=path,
                           baseline_kind=ckpt["baseline"].get("kind", "restorer"))
