"""Parameter counts and MACs of registered models, computed without allocating real tensors.

Models are built on the ``meta`` device and run under `torch.utils.flop_counter.FlopCounterMode`,
so even the 26M-parameter Restormer at 512×512 costs milliseconds of shape propagation. MACs are
FLOPs / 2 of the convolutions, matrix products and attention the counter knows; element-wise work
(activations, norms, the multiply-add of the location-wise convolution) is not counted, as in the
MAC figures papers report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .registry import config_to_dict, get_model_config, get_model_spec

# The prior dimension `ptg models` reports R at (CLIP ViT-B/32, the authors' configuration).
DEFAULT_PRIOR_DIM = 512


@dataclass
class ModelSummary:
    """One row of `ptg models`."""

    name: str  # registry name
    kind: str  # "restorer", "refiner" or "feature-refiner"
    params: int  # trainable parameters
    macs_512: int  # multiply-accumulates for one 512×512 image (see module docstring)
    description: str  # one line
    config: dict[str, Any]  # the configuration the figures were computed at


def summary_overrides(name: str) -> dict[str, Any]:
    """Overrides under which a model is summarised: models taking priors get prior_dims=(512,)."""
    fields = get_model_spec(name).config_cls.__dataclass_fields__
    return {"prior_dims": (DEFAULT_PRIOR_DIM,)} if "prior_dims" in fields else {}


def count_macs(model: torch.nn.Module, kind: str, height: int, width: int, prior_dims: tuple[int, ...] = ()) -> int:
    """MACs of one forward pass at ``height×width`` on the model's device (use ``meta``)."""
    dev = next(model.parameters()).device
    x = torch.empty(1, 3, height, width, device=dev)
    priors = [torch.empty(1, d, device=dev) for d in prior_dims]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        if kind == "restorer":
            model(x)
        elif kind == "refiner":
            model(x, x, priors)
        else:
            model(x, priors)
    return int(counter.get_total_flops() // 2)


def summarize_model(name: str, size: int = 512, **overrides: Any) -> ModelSummary:
    """Parameters and MACs at ``size×size`` of a registered model (prior dim 512 by default)."""
    spec = get_model_spec(name)
    values = {**summary_overrides(name), **overrides}
    if "pretrained" in spec.config_cls.__dataclass_fields__:
        values.setdefault("pretrained", False)  # counting never needs (or loads) weights
    config = get_model_config(name, **values)
    with torch.device("meta"):
        model = spec.cls(config)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    prior_dims = tuple(getattr(config, "prior_dims", ())) if getattr(config, "uses_priors", True) else ()
    macs = count_macs(model, spec.kind, size, size, prior_dims)
    return ModelSummary(name, spec.kind, params, macs, spec.description, config_to_dict(config))
