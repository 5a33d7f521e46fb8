"""DnCNN baseline F (Zhang, Zuo, Chen, Meng, Zhang: "Beyond a Gaussian Denoiser", TIP 2017).

A plain stack of 3×3 conv + BatchNorm + ReLU that predicts the noise (residual learning): the
output is ``x − net(x)``. Fully convolutional, so any H, W works without padding.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .registry import register_model


@dataclass
class DnCNNConfig:
    """DnCNN architecture; defaults are CPU-sized (paper: width 64, depth 17)."""

    width: int = 32  # channels of the hidden layers (paper: 64)
    depth: int = 10  # conv layers in total, first and last included (paper: 17; 20 for blind DnCNN-B)
    batch_norm: bool = True  # BatchNorm in the middle layers (paper: yes)
    in_channels: int = 3  # image channels

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 2:
            raise PtgError(f"DnCNNConfig: width={self.width} must be >= 1 and depth={self.depth} >= 2")


@register_model("dncnn", config=DnCNNConfig, description="DnCNN (TIP 2017), residual noise prediction")
class DnCNN(nn.Module):
    """DnCNN: ``forward(x[B,3,H,W]) -> x − noise(x)``."""

    def __init__(self, config: DnCNNConfig | None = None):
        super().__init__()
        cfg = config if config is not None else DnCNNConfig()
        self.config = cfg
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, cfg.width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(cfg.depth - 2):
            # No conv bias before BatchNorm: BN's shift makes it redundant.
            layers.append(nn.Conv2d(cfg.width, cfg.width, 3, padding=1, bias=not cfg.batch_norm))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm2d(cfg.width))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(cfg.width, cfg.in_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, 3, H, W] -> [B, 3, H, W]
        return x - self.body(x)
