"""SNR-aware low-light enhancement network, baseline F (Xu, Wang, Fu, Jia: "SNR-Aware Low-Light
Image Enhancement", CVPR 2022).

At 1/4 resolution a CNN short-range branch (ResBlocks) and a transformer long-range branch (global
self-attention over p×p patches, where patches of very low SNR are excluded as keys) are fused by
the SNR map S of the input: ``fea = S·short + (1−S)·long`` — bright, clean regions are handled
locally, dark noisy ones from long-range context. A pixel-shuffle decoder with skips returns to
full resolution with a global residual. The SNR map is `layers.snr_map` (the same one PTG-RM's
``mask_source="snr"`` ablation uses). Written from the paper's description: no positional
encoding, so it runs at any size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .layers import ResBlock, crop_to, pad_to_multiple, snr_map
from .registry import register_model


@dataclass
class SNRNetConfig:
    """SNR-aware network architecture; defaults are CPU-sized (release: nf=64, 6 transformer layers)."""

    width: int = 32  # feature channels nf
    short_blocks: int = 2  # ResBlocks of the short-range branch
    long_blocks: int = 2  # transformer layers of the long-range branch
    patch: int = 4  # side of the patches that become tokens, at 1/4 resolution
    token_dim: int = 128  # transformer width
    heads: int = 4  # attention heads
    snr_threshold: float = 0.5  # patches with mean SNR below this are not attended to (as in the paper)
    in_channels: int = 3  # image channels

    def __post_init__(self) -> None:
        if min(self.width, self.short_blocks, self.patch, self.token_dim, self.heads) < 1 or self.long_blocks < 0:
            raise PtgError(f"SNRNetConfig: sizes must be positive, got {self}")
        if self.token_dim % self.heads:
            raise PtgError(f"SNRNetConfig: token_dim={self.token_dim} must be divisible by heads={self.heads}")


class _TokenLayer(nn.Module):
    """Pre-norm transformer layer with a boolean attention mask (True = may attend)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, t: Tensor, allowed: Tensor) -> Tensor:
        # t: [B, N, D]; allowed: [B, 1, N, N] bool
        b, n, d = t.shape
        q, k, v = self.qkv(self.norm1(t)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # [B, heads, N, D/heads]
        t = t + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return t + self.mlp(self.norm2(t))


@register_model("snr", config=SNRNetConfig, description="SNR-aware low-light network (CVPR 2022): CNN + transformer fused by the SNR map")
class SNRNet(nn.Module):
    """SNR-aware network: ``forward(x[B,3,H,W]) -> [B,3,H,W]`` for any H, W (padded to 4·patch)."""

    def __init__(self, config: SNRNetConfig | None = None):
        super().__init__()
        cfg = config if config is not None else SNRNetConfig()
        self.config = cfg
        nf, p = cfg.width, cfg.patch
        self.multiple = 4 * p
        self.conv1 = nn.Conv2d(cfg.in_channels, nf, 3, padding=1)
        self.conv2 = nn.Conv2d(nf, nf, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(nf, nf, 3, stride=2, padding=1)
        self.short = nn.Sequential(*[ResBlock(nf) for _ in range(cfg.short_blocks)])
        self.to_tokens = nn.Linear(nf * p * p, cfg.token_dim)
        self.layers = nn.ModuleList(_TokenLayer(cfg.token_dim, cfg.heads) for _ in range(cfg.long_blocks))
        self.from_tokens = nn.Linear(cfg.token_dim, nf * p * p)
        self.up1 = nn.Sequential(nn.Conv2d(2 * nf, 4 * nf, 3, padding=1), nn.PixelShuffle(2))
        self.up2 = nn.Sequential(nn.Conv2d(2 * nf, 4 * nf, 3, padding=1), nn.PixelShuffle(2))
        self.hr = nn.Conv2d(2 * nf, nf, 3, padding=1)
        self.last = nn.Conv2d(nf, cfg.in_channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1)

    def _long(self, f: Tensor, snr: Tensor) -> Tensor:
        # f: [B, nf, h, w]; snr: [B, 1, h, w] -> [B, nf, h, w]
        b, c, h, w = f.shape
        p = self.config.patch
        tokens = F.unfold(f, p, stride=p).transpose(1, 2)  # [B, N, nf*p*p]
        t = self.to_tokens(tokens)
        keep = F.avg_pool2d(snr.float(), p).flatten(1) >= self.config.snr_threshold  # [B, N]
        n = keep.shape[1]
        # Every token may always attend to itself, so a fully dark image never has an empty row.
        allowed = (keep[:, None, :] | torch.eye(n, dtype=torch.bool, device=f.device)[None]).unsqueeze(1)
        for layer in self.layers:
            t = layer(t, allowed)
        back = self.from_tokens(t).transpose(1, 2)  # [B, nf*p*p, N]
        return F.fold(back, (h, w), p, stride=p)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, 3, H, W] -> [B, 3, H, W]
        xp, size = pad_to_multiple(x, self.multiple)
        f1 = self.act(self.conv1(xp))  # [B, nf, H, W]
        f2 = self.act(self.conv2(f1))  # [B, nf, H/2, W/2]
        f3 = self.act(self.conv3(f2))  # [B, nf, H/4, W/4]
        snr = F.adaptive_avg_pool2d(snr_map(xp), f3.shape[-2:])  # [B, 1, H/4, W/4]
        fea = snr * self.short(f3) + (1 - snr) * self._long(f3, snr)
        u1 = self.act(self.up1(torch.cat([fea, f3], dim=1)))  # [B, nf, H/2, W/2]
        u2 = self.act(self.up2(torch.cat([u1, f2], dim=1)))  # [B, nf, H, W]
        y = self.last(self.act(self.hr(torch.cat([u2, f1], dim=1)))) + xp
        return crop_to(y, size)
