"""NAFNet baseline F (Chen, Chu, Zhang, Sun: "Simple Baselines for Image Restoration", ECCV 2022).

A UNet of NAFBlocks: LayerNorm, point-wise and depth-wise convs, SimpleGate (x1 · x2) instead of
a nonlinearity, simplified channel attention, and zero-initialised residual scales (β, γ) so each
block starts as the identity. Exposes `encode`/`decode` around its deepest (middle) feature map
for the "-f" variant of PTG-RM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .layers import LayerNorm2d, crop_to, pad_to_multiple
from .registry import register_model


@dataclass
class NAFNetConfig:
    """NAFNet architecture (the paper's SIDD model: width 32, enc (2,2,4,8), middle 12, dec (2,2,2,2))."""

    width: int = 16  # channels at full resolution, doubled at every downsampling
    enc_blocks: tuple[int, ...] = (1, 1, 1, 1)  # NAFBlocks per encoder scale (one downsampling each)
    middle_blocks: int = 1  # NAFBlocks at the lowest resolution
    dec_blocks: tuple[int, ...] = (1, 1, 1, 1)  # NAFBlocks per decoder scale; same length as enc_blocks
    expansion: int = 2  # channel expansion of the depth-wise and feed-forward parts
    in_channels: int = 3  # image channels

    def __post_init__(self) -> None:
        self.enc_blocks = tuple(self.enc_blocks)
        self.dec_blocks = tuple(self.dec_blocks)
        if len(self.enc_blocks) != len(self.dec_blocks):
            raise PtgError(f"NAFNetConfig: enc_blocks {self.enc_blocks} and dec_blocks {self.dec_blocks} need the same length")
        if self.width < 1 or self.middle_blocks < 0 or self.expansion < 1:
            raise PtgError(f"NAFNetConfig: width={self.width}, middle_blocks={self.middle_blocks}, expansion={self.expansion} out of range")


class SimpleGate(nn.Module):
    """Splits channels in two halves and multiplies them: a nonlinearity without an activation."""

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """One NAFBlock: a gated depth-wise conv part and a gated feed-forward part, both residual."""

    def __init__(self, c: int, expansion: int = 2):
        super().__init__()
        dw = c * expansion
        self.norm1 = LayerNorm2d(c)
        self.pw1 = nn.Conv2d(c, dw, 1)
        self.dw = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.gate = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.pw2 = nn.Conv2d(dw // 2, c, 1)
        self.norm2 = LayerNorm2d(c)
        ffn = c * expansion
        self.ffn1 = nn.Conv2d(c, ffn, 1)
        self.ffn2 = nn.Conv2d(ffn // 2, c, 1)
        # Zero residual scales: every block starts as the identity, which lets deep NAFNets train
        # without warm-up.
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, c, H, W] -> [B, c, H, W]
        y = self.gate(self.dw(self.pw1(self.norm1(x))))
        y = y * self.sca(y)
        x = x + self.pw2(y) * self.beta
        y = self.ffn2(self.gate(self.ffn1(self.norm2(x))))
        return x + y * self.gamma


@register_model("nafnet", config=NAFNetConfig, description="NAFNet (ECCV 2022), small UNet of NAFBlocks")
class NAFNet(nn.Module):
    """NAFNet: ``forward(x[B,3,H,W]) -> [B,3,H,W]`` for any H, W (global residual)."""

    def __init__(self, config: NAFNetConfig | None = None):
        super().__init__()
        cfg = config if config is not None else NAFNetConfig()
        self.config = cfg
        c = cfg.width
        self.intro = nn.Conv2d(cfg.in_channels, c, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        for n in cfg.enc_blocks:
            self.encoders.append(nn.Sequential(*[NAFBlock(c, cfg.expansion) for _ in range(n)]))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = nn.Sequential(*[NAFBlock(c, cfg.expansion) for _ in range(cfg.middle_blocks)])
        self.deep_channels = c  # channels of the map `encode` returns
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for n in cfg.dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(c, cfg.expansion) for _ in range(n)]))
        self.ending = nn.Conv2d(cfg.width, cfg.in_channels, 3, padding=1)
        self.multiple = 2 ** len(cfg.enc_blocks)

    def encode(self, x: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """Pad, run the encoder and the middle blocks.

        Returns:
            The middle feature map ``[B, width*2**L, H/2**L, W/2**L]`` (L = len(enc_blocks)) and
            the state `decode` needs.
        """
        xp, size = pad_to_multiple(x, self.multiple)
        y = self.intro(xp)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            y = enc(y)
            skips.append(y)
            y = down(y)
        return self.middle(y), {"skips": skips, "x": xp, "size": size}

    def decode(self, deep: Tensor, state: dict[str, Any]) -> Tensor:
        """Run the decoder from a (possibly refined) middle feature map; crop back."""
        y = deep
        for up, dec, skip in zip(self.ups, self.decoders, reversed(state["skips"])):
            y = dec(up(y) + skip)  # NAFNet adds skips rather than concatenating them
        return crop_to(self.ending(y) + state["x"], state["size"])

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, 3, H, W] -> [B, 3, H, W]
        deep, state = self.encode(x)
        return self.decode(deep, state)
