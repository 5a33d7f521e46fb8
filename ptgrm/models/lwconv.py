"""The location-wise convolution of PTG-CSA (paper Eq. 6): a different k×k kernel at every pixel.

``Mshat = fhat ∗ Cp`` with ``Cp ∈ R^{h×w×(k·k·c)}``, replicate padding as in the authors' release.
Written as a banded unfold with its own backward so that neither pass ever holds the k²-times
larger unfolded map of the whole image: memory stays bounded at 1024².
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def location_wise_conv(x: Tensor, kernels: Tensor, kernel_size: int, max_chunk_elements: int = 1 << 24) -> Tensor:
    """Convolve every location of ``x`` with its own depth-wise kernel (Eq. 6, ``fhat ∗ Cp``).

    Neighbourhoods are gathered with ``unfold`` over replicate-padded input (as the authors do).
    When the unfolded map would exceed ``max_chunk_elements``, it is built one band of rows at a
    time inside a custom autograd function whose backward also works band by band and writes the
    kernel gradient in place: neither pass ever holds the ``k²``-times-larger unfolded map, so
    training and inference memory stay bounded at 1024² and beyond.

    Args:
        x: ``[B, C, H, W]`` features.
        kernels: ``[B, C*k*k, H, W]``; channel ``c*k*k + i*k + j`` is the weight of offset (i, j)
            for feature channel c.
        kernel_size: k (odd).
        max_chunk_elements: bound on ``B*C*k*k*rows*W`` per band.

    Returns:
        ``[B, C, H, W]``.
    """
    b, c, h, w = x.shape
    k = kernel_size
    if kernels.shape != (b, c * k * k, h, w):
        raise ValueError(f"location_wise_conv: kernels {tuple(kernels.shape)} do not match x {tuple(x.shape)} and k={k}")
    pad = k // 2
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    rows = max(1, min(h, max_chunk_elements // max(1, b * c * k * k * w)))
    if rows >= h:
        return _lwc_band(xp, kernels, 0, h, k)  # small map: plain autograd
    return _BandedLocationWiseConv.apply(xp, kernels, k, rows)


def _lwc_band(xp: Tensor, kernels: Tensor, r0: int, r1: int, k: int) -> Tensor:
    """Output rows [r0, r1) of `location_wise_conv`; ``xp`` is the padded input."""
    b, ck2, _, w = kernels.shape
    c = ck2 // (k * k)
    n = r1 - r0
    cols = F.unfold(xp[:, :, r0 : r1 + k - 1, :], k)  # [B, C*k*k, n*W], channel-major like kernels
    cols = cols.view(b, c, k * k, n, w)
    ker = kernels[:, :, r0:r1, :].reshape(b, c, k * k, n, w)
    return (cols * ker).sum(dim=2)  # [B, C, n, W]


class _BandedLocationWiseConv(torch.autograd.Function):
    """Banded forward and backward of the location-wise convolution (memory: one band at a time)."""

    @staticmethod
    def forward(ctx, xp: Tensor, kernels: Tensor, k: int, rows: int) -> Tensor:
        # xp: [B, C, H+k-1, W+k-1] padded input; kernels: [B, C*k*k, H, W] -> [B, C, H, W]
        b, ck2, h, w = kernels.shape
        out = kernels.new_empty(b, ck2 // (k * k), h, w)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            out[:, :, r0:r1] = _lwc_band(xp, kernels, r0, r1, k)
        ctx.save_for_backward(xp, kernels)
        ctx.k, ctx.rows = k, rows
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        xp, kernels = ctx.saved_tensors
        k, rows = ctx.k, ctx.rows
        b, ck2, h, w = kernels.shape
        c = ck2 // (k * k)
        need_x, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_xp = torch.zeros_like(xp) if need_x else None
        grad_k = torch.empty_like(kernels) if need_k else None
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            n = r1 - r0
            go = grad_out[:, :, r0:r1].unsqueeze(2)  # [B, C, 1, n, W]
            if need_k:
                cols = F.unfold(xp[:, :, r0 : r1 + k - 1, :], k).view(b, c, k * k, n, w)
                grad_k[:, :, r0:r1] = (cols * go).reshape(b, ck2, n, w)
            if need_x:
                gcols = (kernels[:, :, r0:r1].reshape(b, c, k * k, n, w) * go).reshape(b, ck2, n * w)
                grad_xp[:, :, r0 : r1 + k - 1] += F.fold(gcols, (n + k - 1, w + k - 1), k)
        return grad_xp, grad_k, None, None
