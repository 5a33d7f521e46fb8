"""Small blocks shared by PTG-RM and the baselines.

Kept deliberately few: a channel LayerNorm, a residual conv block, the Restormer block (MDTA +
GDFN, Zamir et al., CVPR 2022), the SNR map of the SNR-aware network (Xu et al., CVPR 2022) and
the pad/crop helper that lets every network take any input size. Anything used by one network
only lives in that network's file.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pad_to_multiple(x: Tensor, multiple: int, mode: str = "replicate") -> tuple[Tensor, tuple[int, int]]:
    """Pad the bottom/right of ``x`` so H and W are multiples of ``multiple``.

    Replicate padding (not reflect) so that even a 1-pixel-wide input can be padded by any amount.

    Args:
        x: ``[B, C, H, W]``.
        multiple: the size H and W must divide by.
        mode: ``F.pad`` mode.

    Returns:
        The padded tensor and the original ``(H, W)`` to crop back to.
    """
    h, w = x.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop ``[..., H', W']`` back to ``size = (H, W)`` (top-left corner)."""
    return x[..., : size[0], : size[1]]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of an NCHW map.

    Statistics are computed in float32 whatever the input dtype: the variance of float16
    activations underflows, which is the usual source of NaNs in half-precision restoration nets.
    """

    def __init__(self, channels: int, eps: float = 1e-6, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, C, H, W]
        dtype = x.dtype
        x32 = x.float()
        mu = x32.mean(1, keepdim=True)
        var = (x32 - mu).pow(2).mean(1, keepdim=True)
        y = (x32 - mu) / torch.sqrt(var + self.eps)
        y = y * self.weight.float()[:, None, None]
        if self.bias is not None:
            y = y + self.bias.float()[:, None, None]
        return y.to(dtype)


class ResBlock(nn.Module):
    """Conv3x3 - LeakyReLU - Conv3x3 with an identity shortcut (the short-range operation Rs)."""

    def __init__(self, channels: int, negative_slope: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, C, H, W] -> [B, C, H, W]
        return x + self.conv2(self.act(self.conv1(x)))


class MDTA(nn.Module):
    """Multi-Dconv-head Transposed Attention: attention across channels, linear in H*W.

    Because the attention matrix is C x C (per head), the block runs at any resolution and any
    aspect ratio with memory linear in the number of pixels.
    """

    def __init__(self, channels: int, heads: int, bias: bool = False):
        super().__init__()
        if channels % heads:
            raise ValueError(f"MDTA: channels={channels} must be divisible by heads={heads}")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=bias)
        self.qkv_dw = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3, bias=bias)
        self.proj = nn.Conv2d(channels, channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, C, H, W]
        b, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        # [B, heads, C/heads, H*W]
        q = q.reshape(b, self.heads, c // self.heads, h * w)
        k = k.reshape(b, self.heads, c // self.heads, h * w)
        v = v.reshape(b, self.heads, c // self.heads, h * w)
        # Normalise and soft-max in float32: sums over H*W overflow float16 at 1024^2.
        q = F.normalize(q.float(), dim=-1)
        k = F.normalize(k.float(), dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature.float()  # [B, heads, C/h, C/h]
        attn = attn.softmax(dim=-1).to(v.dtype)
        out = (attn @ v).reshape(b, c, h, w)
        return self.proj(out)


class GDFN(nn.Module):
    """Gated-Dconv Feed-forward Network of Restormer (GELU gate, depth-wise 3x3)."""

    def __init__(self, channels: int, expansion: float = 2.66, bias: bool = False):
        super().__init__()
        hidden = int(channels * expansion)
        self.proj_in = nn.Conv2d(channels, hidden * 2, 1, bias=bias)
        self.dw = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.proj_out = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, C, H, W] -> [B, C, H, W]
        a, g = self.dw(self.proj_in(x)).chunk(2, dim=1)
        return self.proj_out(F.gelu(a) * g)


class RestormerBlock(nn.Module):
    """Pre-norm transformer block: x + MDTA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(self, channels: int, heads: int = 1, expansion: float = 2.66, bias: bool = False, norm_eps: float = 1e-6):
        super().__init__()
        self.norm1 = LayerNorm2d(channels, eps=norm_eps)
        self.attn = MDTA(channels, heads, bias=bias)
        self.norm2 = LayerNorm2d(channels, eps=norm_eps)
        self.ffn = GDFN(channels, expansion, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, C, H, W] -> [B, C, H, W]
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def snr_map(x: Tensor, kernel_size: int = 5, eps: float = 1e-4) -> Tensor:
    """The signal-to-noise map of the SNR-aware low-light network (Xu et al., CVPR 2022).

    The grey image is denoised by a box filter; the SNR is denoised / |grey - denoised|,
    normalised per image by its maximum to [0, 1]. High values mark well-exposed, clean areas
    (where short-range CNN features suffice); low values mark noisy dark areas (long-range).

    Args:
        x: ``[B, 3, H, W]`` image in [0, 1].
        kernel_size: box-filter size (5 as in the SNR-aware release).
        eps: keeps the division finite on flat areas.

    Returns:
        ``[B, 1, H, W]`` map in [0, 1], same dtype as ``x``.
    """
    x32 = x.float()
    grey = 0.299 * x32[:, 0:1] + 0.587 * x32[:, 1:2] + 0.114 * x32[:, 2:3]
    pad = kernel_size // 2
    smooth = F.avg_pool2d(F.pad(grey, (pad, pad, pad, pad), mode="replicate"), kernel_size, stride=1)
    noise = (grey - smooth).abs()
    snr = smooth / (noise + eps)
    snr = snr / (snr.amax(dim=(2, 3), keepdim=True) + eps)
    return snr.clamp(0.0, 1.0).to(x.dtype)


def coordinate_grid(b: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The 2-D coordinate map S of the paper: ``[B, 2, h, w]`` with (x, y) in [-1, 1].

    Normalised coordinates (not pixel indices) so a position embedding learned on 64x64 crops
    stays meaningful on a full image of any size.
    """
    ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype) if h > 1 else torch.zeros(1, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype) if w > 1 else torch.zeros(1, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=0).unsqueeze(0).expand(b, -1, -1, -1)
