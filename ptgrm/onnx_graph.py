"""The torch modules `ptg export --format onnx` traces into one graph: image in, restored image out.

`ShippedRestorer` is F (+ R) with everything `ptg restore` does around them written as tensor
operations, so the traced graph keeps every step for any height and width:

    x [1, 3, H, W] in [0, 1]
      -> prior source: the encoder or the distilled student on the pinned preprocessing
         (`GraphPreprocess`), rounded to the store's dtype, as `EncoderPriors` / `PriorStudent` do;
         or the raw prior as a second graph input; or the constant / zero control
      -> the run's prior transform (standardize / l2 with the training statistics)
      -> replicate padding (bottom/right) to F's and R's size multiple, F, R, crop back, clamp to [0, 1]

Why the preprocessing is rewritten here rather than traced from `apply_preprocess`: that code
decides with Python ``if``s on the image size (crop or pad, reflect or replicate, which side is
short), which a tracer freezes at the example's size. Here every such choice is a `torch.where`
over index vectors computed from the traced shape, and the antialiased resize is the explicit
weight matrix torch's ``interpolate(antialias=True)`` uses (its filter, support and window), so
the numbers are torch's for every size (checked in tests/test_onnx.py against `apply_preprocess`).

Imports torch only (and ptg's own networks through what it is given): no onnx here.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ptg.pipeline.encoders.preprocess import Preprocess
from ptg.pipeline.priors.normalize import L2_EPS

from .priors import PriorTransform


def _dim(x: Tensor, i: int) -> Tensor:
    """Size ``i`` of ``x`` as a 0-d int64 tensor (a Shape op when traced, not a frozen int)."""
    return torch._shape_as_tensor(x)[i]


def _on(t: Tensor, like: Tensor) -> Tensor:
    """``t`` on ``like``'s device (shape arithmetic lives on the CPU; a no-op, so not traced, on the CPU)."""
    return t if t.device == like.device else t.to(like.device)


def _crop_index(length: Tensor, size: int, reflect: Tensor) -> Tensor:
    """Source rows of a centre ``size`` crop of ``length`` rows, padded when shorter (reflect or replicate),
    exactly `apply_preprocess`'s ``center_crop``: ``[size]`` int64."""
    pad = torch.clamp(size - length, min=0)
    off = torch.div(length + pad - size, 2, rounding_mode="floor") - torch.div(pad, 2, rounding_mode="floor")
    r = torch.arange(size, dtype=torch.int64) + off  # index into the unpadded rows, may fall outside
    last = length - 1
    mirrored = torch.where(r < 0, -r, r)
    mirrored = torch.where(mirrored > last, 2 * last - mirrored, mirrored)
    clamped = torch.minimum(torch.clamp(r, min=0), last)
    # reflect-padding is only chosen where it is valid; clamp keeps the unused branch in range too
    return torch.minimum(torch.clamp(torch.where(reflect, mirrored, clamped), min=0), last)


def _pad_index(length: Tensor, multiple: int) -> Tensor:
    """Rows of replicate padding at the end up to a multiple of ``multiple`` (`tiling.run_padded_tiled`'s pad)."""
    padded = length + torch.remainder(-length, multiple)
    return torch.minimum(torch.arange(padded, dtype=torch.int64), length - 1)


def _aa_filter(x: Tensor, interpolation: str) -> Tensor:
    """torch's antialiasing filters (PIL's): bicubic with a = -0.5, or the triangle."""
    x = x.abs()
    if interpolation == "bilinear":
        return torch.clamp(1.0 - x, min=0.0)
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _aa_weights(length: Tensor, out_len: Tensor, rows: Tensor, interpolation: str) -> Tensor:
    """``[len(rows), length]``: output rows ``rows`` of resizing ``length`` samples to ``out_len`` with
    ``interpolate(..., antialias=True, align_corners=False)`` (torch's ``_compute_weights_aa``)."""
    n_in, n_out = length.to(torch.float32), out_len.to(torch.float32)
    scale = n_in / n_out
    half = 2.0 if interpolation == "bicubic" else 1.0  # half the filter's support at scale 1
    support = torch.where(scale >= 1.0, half * scale, torch.full_like(scale, half))
    invscale = torch.where(scale >= 1.0, 1.0 / scale, torch.ones_like(scale))
    center = scale * (rows.to(torch.float32) + 0.5)  # [n]
    lo = torch.clamp(torch.floor(center - support + 0.5), min=0.0)
    hi = torch.minimum(torch.floor(center + support + 0.5), n_in)
    j = torch.arange(length, dtype=torch.int64).to(torch.float32)[None, :]  # [1, L]
    w = _aa_filter((j - center[:, None] + 0.5) * invscale, interpolation)
    w = torch.where((j >= lo[:, None]) & (j < hi[:, None]), w, torch.zeros_like(w))
    return w / w.sum(dim=1, keepdim=True)


class GraphPreprocess(nn.Module):
    """`apply_preprocess` on a batch ``[1, 3, H, W]`` as traceable tensor operations -> ``[1, 3, S, S]``."""

    def __init__(self, pp: Preprocess):
        super().__init__()
        self.pp = pp
        self.register_buffer("mean", torch.tensor(pp.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pp.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        pp, s = self.pp, self.pp.size
        h, w = _dim(x, 2), _dim(x, 3)
        if pp.resize == "center_crop":
            reflect = (torch.clamp(s - h, min=0) < h) & (torch.clamp(s - w, min=0) < w)
            t = x.index_select(2, _on(_crop_index(h, s, reflect), x)).index_select(3, _on(_crop_index(w, s, reflect), x))
        else:
            if pp.resize == "squash":
                nh, nw = torch.full_like(h, s), torch.full_like(w, s)
            else:  # short_side_center_crop; Python's round() on float64 is torch.round's half-to-even
                short = pp.resize_short or s
                long_h = torch.clamp(torch.round(h.to(torch.float64) * short / w.to(torch.float64)).to(torch.int64), min=short)
                long_w = torch.clamp(torch.round(w.to(torch.float64) * short / h.to(torch.float64)).to(torch.int64), min=short)
                portrait = h > w
                nh = torch.where(portrait, long_h, torch.full_like(h, short))
                nw = torch.where(portrait, torch.full_like(w, short), long_w)
            top = torch.div(nh - s, 2, rounding_mode="floor")
            left = torch.div(nw - s, 2, rounding_mode="floor")
            rows = torch.arange(s, dtype=torch.int64) + top
            cols = torch.arange(s, dtype=torch.int64) + left
            wh = _aa_weights(h, nh, rows, pp.interpolation)  # [S, H]
            ww = _aa_weights(w, nw, cols, pp.interpolation)  # [S, W]
            t = torch.clamp(torch.matmul(torch.matmul(_on(wh, x), x), _on(ww, x).transpose(0, 1)), 0.0, 1.0)
        return (t - self.mean) / self.std


class EncoderPrior(nn.Module):
    """A recorded encoder (small enough to ship) as a prior source: raw store-space vectors ``[1, D]``."""

    def __init__(self, encoder, dtype: str):
        super().__init__()
        self.pre = GraphPreprocess(encoder.preprocess)
        self.module = encoder.module  # registered, so its weights become the graph's initializers
        self._forward = encoder.forward
        self.dtype = getattr(torch, dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(self.pre(x)).float().to(self.dtype).float()  # the store's rounding


class StudentPrior(nn.Module):
    """A `ptg distill` student as a prior source: raw store-space vectors ``[1, D]`` (`PriorStudent.__call__`)."""

    def __init__(self, student):
        super().__init__()
        self.pre = GraphPreprocess(student.preprocess)
        self.net = student.net
        n = student.normalizer
        self.kind, self.norm = n.kind, float(n.norm)
        self.register_buffer("mean", n.mean.float().clone())
        self.register_buffer("std", n.std.float().clone())
        self.dtype = student.dtype

    def forward(self, x: Tensor) -> Tensor:
        y = self.net(self.pre(x)).float()  # [1, D] in the training space
        if self.kind == "l2":
            y = y / torch.clamp(torch.linalg.vector_norm(y, dim=-1, keepdim=True), min=1e-12) * self.norm
        else:
            y = y * self.std + self.mean
        return y.to(self.dtype).float()


class GraphTransform(nn.Module):
    """`PriorTransform.__call__` for one image, its statistics as constants of the graph."""

    def __init__(self, t: PriorTransform):
        super().__init__()
        self.normalize, self.control, self.dims = t.normalize, t.control, tuple(t.dims)
        for name in ("mean", "std", "constant"):
            for i, v in enumerate(getattr(t, name)):
                self.register_buffer(f"{name}{i}", torch.as_tensor(v, dtype=torch.float32).clone()[None])  # [1, D]

    def device_of(self) -> torch.device:
        return next(iter(self.buffers()), torch.zeros(0)).device

    def forward(self, raw: Sequence[Tensor]) -> list[Tensor]:
        if self.control == "zero":
            return [torch.zeros(1, d, device=self.device_of()) for d in self.dims]
        if self.control == "constant":
            return [getattr(self, f"constant{i}") for i in range(len(self.dims))]
        out = []
        for i, g in enumerate(raw):
            if self.normalize == "l2":  # `row_norms`: sqrt(dot(v, v)), at least L2_EPS
                g = g / torch.clamp(torch.sqrt((g * g).sum(dim=-1, keepdim=True)), min=L2_EPS)
            elif self.normalize == "standardize":
                g = (g - getattr(self, f"mean{i}")) / getattr(self, f"std{i}")
            out.append(g)
        return out


class ShippedRestorer(nn.Module):
    """x ``[1, 3, H, W]`` (and raw priors when they are graph inputs) -> restored ``[1, 3, H, W]`` in [0, 1].

    Args:
        f, r: the networks (R None for F alone); ``f_kind`` "feature-refiner" for a "-f" F.
        transform: the run's prior transform.
        sources: one prior source per store (`EncoderPrior`, `StudentPrior`), or None when the raw
            priors are graph inputs or no image prior is read (zero/constant control, no priors).
        multiple: pad H and W to a multiple of this (F's and R's down-sampling).
    """

    def __init__(self, f: nn.Module, r: nn.Module | None, transform: PriorTransform, f_kind: str,
                 sources: Sequence[nn.Module] | None, multiple: int, uses_priors: bool):
        super().__init__()
        self.f, self.r, self.f_kind, self.multiple, self.uses_priors = f, r, f_kind, int(multiple), uses_priors
        self.sources = nn.ModuleList(sources or [])
        self.transform = GraphTransform(transform)

    def priors(self, x: Tensor, raw: Sequence[Tensor]) -> list[Tensor]:
        """The transformed priors of image ``x`` (raw ones from the sources, else those given)."""
        if not self.uses_priors:
            return []
        if not raw and len(self.sources):  # raw priors given: the restore part of a merged graph, or --prior input
            raw = [s(x) for s in self.sources]
        return self.transform(raw)

    def forward(self, x: Tensor, *raw: Tensor) -> Tensor:
        g = self.priors(x, raw)
        h, w = _dim(x, 2), _dim(x, 3)
        xp = x.index_select(2, _on(_pad_index(h, self.multiple), x)).index_select(3, _on(_pad_index(w, self.multiple), x))
        if self.f_kind == "feature-refiner":
            out = self.f(xp, g)
        else:
            out = self.f(xp)
            if self.r is not None:
                out = self.r(out, xp, g).out
        return torch.clamp(out[:, :, : x.shape[2], : x.shape[3]], 0.0, 1.0)
