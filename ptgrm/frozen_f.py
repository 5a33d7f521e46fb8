"""A frozen F for inference and for refine training, built in one place.

F can be a registered network with its weights (a `ptg train` run, a checkpoint, a state dict or
its own packaged weights), a checkpoint that spandrel detects, or a black box (OIDN, Zero-DCE++).
`ptg extract-outputs`, `ptg eval --baseline`, `ptg restore --baseline` and refine training all
build it here; `use_live_f` swaps a cached-outputs run's stand-in for the live F that made them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ptg.pipeline.core.errors import PtgError

from .artifacts import checkpoint as ckpt_mod


def build_frozen_f(baseline: str, weights: str | Path | None = None, args: Mapping[str, Any] | None = None) -> nn.Module:
    """F in eval mode. ``args``: F's constructor arguments (e.g. ``{"pretrained": True, "sigma": 30}``)."""
    from .models import create_model

    args = dict(args or {})
    if baseline == "spandrel" and weights is not None:  # spandrel builds F from the file (as `ModelConfig` records it)
        args, weights = {**args, "weights": str(weights)}, None
    f = create_model(baseline, **args)
    if not getattr(f, "weights_loaded", False):  # spandrel / oidn / zero-dce were built with their weights
        load_f_weights(f, baseline, args, weights)
    return f.eval()


def load_f_weights(f: nn.Module, baseline: str, args: Mapping[str, Any], weights: str | Path | None) -> None:
    """F's weights from a run folder, a checkpoint or a plain state-dict file.

    The file is loaded once, safely (weights_only); whether it is a checkpoint or a plain state
    dict is decided from what was loaded.
    """
    if weights is None:
        if args.get("pretrained") or args.get("weights"):
            return  # the model loaded its own real weights when it was built
        raise PtgError("mode refine trains R on a frozen, trained F: pass --baseline-weights RUN_OR_CKPT "
                       "(a `ptg train --mode baseline` run) or a pretrained F (e.g. --set model.baseline_args.pretrained=true)")
    src = str(weights)
    p = Path(src)
    if not p.exists():
        raise PtgError(f"--baseline-weights {src}: no such file or run folder")
    path = ckpt_mod.resolve_checkpoint(p, prefer="best")
    obj = ckpt_mod.safe_load(path, "--baseline-weights file")
    if ckpt_mod.is_checkpoint(obj):
        if obj["baseline"]["name"] != baseline:
            raise PtgError(f"--baseline-weights {src} holds F {obj['baseline']['name']!r}, not {baseline!r}")
        ema = obj.get("ema") or {}
        state, _, _ = ckpt_mod.pick_weights(obj["baseline"]["state_dict"], None, ema.get("baseline"), None, frozen_f=False)
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        raise PtgError(f"--baseline-weights {src} is neither a `ptg train` checkpoint nor a state dict of tensors")
    try:
        f.load_state_dict(state)
    except RuntimeError as exc:
        raise PtgError(f"--baseline-weights {src} does not fit F {baseline!r} with args {dict(args)}: {exc}") from exc


def use_live_f(restorer: Any, run: Any, baseline: str, weights: str | Path | None, device: str,
               args: Mapping[str, Any] | None = None) -> None:
    """Put the live F that made a cached run's outputs in place of its stand-in (fingerprint checked)."""
    from .f_outputs import check_live

    if run.baseline.kind != "cached-outputs":
        raise PtgError(f"--baseline replaces the F of a run trained on cached outputs; {run.source} has its own F")
    f = build_frozen_f(baseline, weights, args)
    check_live(baseline, f, run.baseline.weights_sha256)
    restorer.f = f.to(device)
