"""F's outputs read from a cache instead of computed: the F of a run trained with ``--f-outputs``.

Why a network at all: a run, its checkpoint and its export describe F by a registry name and a
config, and the restore loop (padding, tiling, validation, `ptg eval`) runs ``F(x)``. With F's
outputs cached (``ptg extract-outputs``, or a folder of outputs from any tool) nothing of F is
in memory; the caller puts the cached ``Ihat`` beside the degraded image as channels 3..5 of the
input, and this module returns those channels. Padding and tiling treat all six channels alike,
so ``Ihat`` is cropped, padded and tiled exactly where ``Id`` is.

It holds no weights, only the record of which F made the outputs (its registry name and weights
fingerprint), and it cannot run on a new photo: given a plain 3-channel image it raises an error
saying why and what to do.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .registry import register_model


@dataclass
class CachedFConfig:
    """Which F made the cached outputs (recorded by the run; nothing is read from these paths)."""

    f: str = ""  # registry name of the F whose outputs were cached ("" for a folder from another tool)
    fingerprint: str = ""  # F's weights fingerprint (`ptg.ptgrm.f_outputs.f_fingerprint`), "" if unknown
    source: str = ""  # the store or folder the run read (provenance only)
    kind: str = "store"  # "store" (ptg extract-outputs) or "folder" (one file per manifest id)


class CachedF(nn.Module):
    """``forward(x[B, 6, H, W]) -> x[:, 3:6]``: channels 0..2 are ``Id``, 3..5 the cached ``Ihat``."""

    weights_loaded = True  # nothing to load: the outputs are the weights
    runs_on_new_photos = False  # outputs exist only for the inputs they were computed for
    input_channels = 6  # Id ⊕ cached Ihat
    multiple = 1

    def __init__(self, config: CachedFConfig | None = None):
        super().__init__()
        self.config = config if config is not None else CachedFConfig()
        # inference finds F's device from its parameters: an empty, frozen one stands in
        self.device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def describe(self) -> str:
        c = self.config
        made_by = f"F {c.f!r} (fingerprint {c.fingerprint[:16]})" if c.f else "another tool"
        return f"cached outputs of {made_by}, read from {c.source or 'a folder of outputs'}"

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, 6, H, W] (Id ⊕ Ihat) -> Ihat [B, 3, H, W]
        if x.shape[1] != 6:
            raise PtgError(
                f"this run's F is {self.describe()}: there is no network to run on a new photo. Pass that F live "
                "(`ptg restore/eval --baseline NAME [--baseline-weights FILE]`), or score with `ptg eval --f-outputs "
                "OUTS` holding F's outputs of the test split (`ptg extract-outputs`)")
        return x[:, 3:6]


register_model("f-outputs", config=CachedFConfig, external=True, black_box=True,
               description="F's outputs read from a cache (ptg train --f-outputs); cannot restore new photos")(CachedF)
