"""Restormer baseline F (Zamir et al., "Restormer: Efficient Transformer for High-Resolution Image
Restoration", CVPR 2022).

A 4-level U-shaped transformer of MDTA + GDFN blocks (`layers.RestormerBlock`), pixel-(un)shuffle
resampling, 1×1 channel reduction after the skip concatenations of levels 3 and 2, a refinement
stage at full resolution and a global residual. Registered twice: "restormer" (small, CPU-sized)
and "restormer-paper" (the paper's 26M-parameter configuration).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .layers import RestormerBlock, crop_to, pad_to_multiple
from .registry import register_model


@dataclass
class RestormerConfig:
    """Restormer architecture; defaults are a small CPU-friendly network."""

    width: int = 16  # channels at level 1 (paper: 48)
    blocks: tuple[int, int, int, int] = (1, 1, 1, 1)  # transformer blocks per level (paper: 4, 6, 6, 8)
    refinement_blocks: int = 1  # blocks of the full-resolution refinement stage (paper: 4)
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)  # attention heads per level (paper: 1, 2, 4, 8)
    ffn_expansion: float = 2.66  # GDFN expansion (paper: 2.66)
    bias: bool = False  # conv biases inside the blocks (paper: False)
    in_channels: int = 3  # image channels

    def __post_init__(self) -> None:
        self.blocks = tuple(self.blocks)
        self.heads = tuple(self.heads)
        if len(self.blocks) != 4 or len(self.heads) != 4:
            raise PtgError(f"RestormerConfig: blocks {self.blocks} and heads {self.heads} need 4 entries (one per level)")
        for lvl, h in enumerate(self.heads):
            ch = self.width * 2**lvl
            if h < 1 or ch % h:
                raise PtgError(f"RestormerConfig: level {lvl + 1} has {ch} channels, not divisible by heads={h}")
        # Level 1 of the decoder works at 2*width with heads[0].
        if self.width < 1 or (2 * self.width) % self.heads[0]:
            raise PtgError(f"RestormerConfig.width={self.width} out of range")


def _stage(c: int, n: int, heads: int, cfg: RestormerConfig) -> nn.Sequential:
    return nn.Sequential(*[RestormerBlock(c, heads, cfg.ffn_expansion, cfg.bias) for _ in range(n)])


class _Down(nn.Module):
    """Halve the resolution, double the channels: conv to c/2, then pixel-unshuffle (×4 channels)."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class _Up(nn.Module):
    """Double the resolution, halve the channels: conv to 2c, then pixel-shuffle (÷4 channels)."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


@register_model("restormer", config=RestormerConfig, description="Restormer (CVPR 2022), small configuration")
class Restormer(nn.Module):
    """Restormer: ``forward(x[B,3,H,W]) -> [B,3,H,W]`` for any H, W (padded to a multiple of 8)."""

    def __init__(self, config: RestormerConfig | None = None):
        super().__init__()
        cfg = config if config is not None else RestormerConfig()
        self.config = cfg
        w, b, h = cfg.width, cfg.blocks, cfg.heads
        self.embed = nn.Conv2d(cfg.in_channels, w, 3, padding=1, bias=cfg.bias)
        self.enc1, self.down12 = _stage(w, b[0], h[0], cfg), _Down(w)
        self.enc2, self.down23 = _stage(2 * w, b[1], h[1], cfg), _Down(2 * w)
        self.enc3, self.down34 = _stage(4 * w, b[2], h[2], cfg), _Down(4 * w)
        self.latent = _stage(8 * w, b[3], h[3], cfg)
        self.up43, self.reduce3 = _Up(8 * w), nn.Conv2d(8 * w, 4 * w, 1, bias=cfg.bias)
        self.dec3 = _stage(4 * w, b[2], h[2], cfg)
        self.up32, self.reduce2 = _Up(4 * w), nn.Conv2d(4 * w, 2 * w, 1, bias=cfg.bias)
        self.dec2 = _stage(2 * w, b[1], h[1], cfg)
        self.up21 = _Up(2 * w)
        # Level 1 keeps the concatenated 2w channels (no reduction), as in the paper.
        self.dec1 = _stage(2 * w, b[0], h[0], cfg)
        self.refine = _stage(2 * w, cfg.refinement_blocks, h[0], cfg)
        self.out = nn.Conv2d(2 * w, cfg.in_channels, 3, padding=1, bias=cfg.bias)
        self.deep_channels = 8 * w  # channels of the map `encode` returns

    def encode(self, x: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """Pad to a multiple of 8 and run the encoder and latent stage.

        Returns:
            The latent map ``[B, 8*width, H/8, W/8]`` and the state `decode` needs.
        """
        xp, size = pad_to_multiple(x, 8)
        e1 = self.enc1(self.embed(xp))
        e2 = self.enc2(self.down12(e1))
        e3 = self.enc3(self.down23(e2))
        lat = self.latent(self.down34(e3))
        return lat, {"skips": (e1, e2, e3), "x": xp, "size": size}

    def decode(self, deep: Tensor, state: dict[str, Any]) -> Tensor:
        """Run the decoder from a (possibly refined) latent map; crop back."""
        e1, e2, e3 = state["skips"]
        d3 = self.dec3(self.reduce3(torch.cat([self.up43(deep), e3], dim=1)))
        d2 = self.dec2(self.reduce2(torch.cat([self.up32(d3), e2], dim=1)))
        d1 = self.dec1(torch.cat([self.up21(d2), e1], dim=1))
        y = self.out(self.refine(d1)) + state["x"]
        return crop_to(y, state["size"])

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, 3, H, W] -> [B, 3, H, W]
        deep, state = self.encode(x)
        return self.decode(deep, state)


# The paper's configuration under its own name (same class, different defaults).
register_model(
    "restormer-paper",
    config=RestormerConfig,
    defaults={"width": 48, "blocks": (4, 6, 6, 8), "refinement_blocks": 4, "heads": (1, 2, 4, 8)},
    description="Restormer, the paper's configuration (width 48, blocks 4/6/6/8, ~26M params)",
)(Restormer)
