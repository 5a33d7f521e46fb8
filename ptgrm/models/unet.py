"""UNet baseline F (Ronneberger et al., MICCAI 2015), in the residual form used for restoration.

Four scales of two 3×3 conv + LeakyReLU blocks, stride-2 conv down, transposed-conv up, skip
concatenation, and a global residual (the network predicts ``F(x) − x``). Exposes
`encode`/`decode` around its deepest feature map for the "-f" variant of PTG-RM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .layers import crop_to, pad_to_multiple
from .registry import register_model


@dataclass
class UNetConfig:
    """UNet architecture."""

    width: int = 16  # channels at full resolution; doubled at every scale (common: 32 or 64)
    depth: int = 4  # number of scales (3 downsamplings at depth 4)
    in_channels: int = 3  # input image channels
    out_channels: int = 3  # output image channels
    residual: bool = True  # predict the residual F(x) - x (standard for restoration)

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 1:
            raise PtgError(f"UNetConfig width={self.width} and depth={self.depth} must be >= 1")
        if self.residual and self.in_channels != self.out_channels:
            raise PtgError("UNetConfig.residual=True needs in_channels == out_channels")


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2)
    )


@register_model("unet", config=UNetConfig, description="UNet (4 scales, residual output)")
class UNet(nn.Module):
    """A residual UNet: ``forward(x[B,3,H,W]) -> [B,3,H,W]`` for any H, W."""

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        cfg = config if config is not None else UNetConfig()
        self.config = cfg
        chans = [cfg.width * 2**i for i in range(cfg.depth)]
        self.multiple = 2 ** (cfg.depth - 1)
        self.head = _double_conv(cfg.in_channels, chans[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), nn.LeakyReLU(0.2), _double_conv(chans[i + 1], chans[i + 1]))
            for i in range(cfg.depth - 1)
        )
        self.ups = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(cfg.depth - 1)))
        self.dec = nn.ModuleList(_double_conv(2 * chans[i], chans[i]) for i in reversed(range(cfg.depth - 1)))
        self.tail = nn.Conv2d(chans[0], cfg.out_channels, 3, padding=1)
        self.deep_channels = chans[-1]  # channels of the map `encode` returns

    def encode(self, x: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """Pad and run the contracting path.

        Returns:
            The deepest feature map ``[B, width*2**(depth-1), H/2**(depth-1), W/2**(depth-1)]``
            and the state `decode` needs (skips, input, original size).
        """
        xp, size = pad_to_multiple(x, self.multiple)
        feats = [self.head(xp)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        return feats[-1], {"skips": feats[:-1], "x": xp, "size": size}

    def decode(self, deep: Tensor, state: dict[str, Any]) -> Tensor:
        """Run the expanding path from a (possibly refined) deepest feature map; crop back."""
        y = deep
        for up, dec, skip in zip(self.ups, self.dec, reversed(state["skips"])):
            y = dec(torch.cat([up(y), skip], dim=1))
        y = self.tail(y)
        if self.config.residual:
            y = y + state["x"]
        return crop_to(y, state["size"])

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, 3, H, W] -> [B, 3, H, W]
        deep, state = self.encode(x)
        return self.decode(deep, state)
