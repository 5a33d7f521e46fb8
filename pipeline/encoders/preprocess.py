"""Pinned preprocessing: how an image becomes the tensor an encoder sees.

The authors' code feeds CLIP whatever crop the trainer produced and pins no resize policy; a
cache must pin one, record it in the store, and apply it identically everywhere. Every encoder
declares a `Preprocess`; the extractor applies it in DataLoader workers (CPU, float32).

Resize policies:

- ``short_side_center_crop``: resize so the short side is ``resize_short`` (aspect kept), then
  take the centre ``size``×``size`` crop. The CLIP / timm evaluation transform.
- ``squash``: resize the whole image to ``size``×``size``, aspect not kept. BLIP-2's processor.
- ``center_crop``: no resampling; take the centre ``size``×``size`` crop, reflect-padding an
  image smaller than that. For restoration priors, whose features measure noise and blur that
  resampling would change.

Resampling uses `torch.nn.functional.interpolate` with ``antialias=True`` (PIL-like when
shrinking), on float32 values in [0, 1], clamped back to [0, 1] after bicubic overshoot.
Then ``(x - mean) / std`` per channel.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..core.errors import PtgError

RESIZE_POLICIES = ("short_side_center_crop", "squash", "center_crop")
INTERPOLATIONS = ("bicubic", "bilinear")


@dataclass(frozen=True)
class Preprocess:
    """A pinned image → tensor transform (recorded verbatim in a store's metadata)."""

    size: int  # side of the square tensor the encoder sees
    resize: str = "short_side_center_crop"  # one of RESIZE_POLICIES
    resize_short: int | None = None  # short side before the crop (short_side_center_crop); None = size
    interpolation: str = "bicubic"  # resampling kernel; bicubic as CLIP and BLIP-2 processors use
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per-channel mean subtracted from [0,1] RGB
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel divisor after the mean
    dtype: str = "float32"  # dtype of the tensor fed to the model

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise PtgError(f"unknown resize policy {self.resize!r}; use one of {', '.join(RESIZE_POLICIES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise PtgError(f"unknown interpolation {self.interpolation!r}; use one of {', '.join(INTERPOLATIONS)}")
        if self.size < 8:
            raise PtgError(f"preprocessing size {self.size} is too small; use at least 8 pixels")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def describe(self) -> str:
        """One line for `ptg encoders` and `ptg priors info`."""
        if self.resize == "short_side_center_crop":
            how = f"short side -> {self.resize_short or self.size} ({self.interpolation}), centre crop {self.size}"
        elif self.resize == "squash":
            how = f"whole image squashed to {self.size}x{self.size} ({self.interpolation})"
        else:
            how = f"centre crop {self.size}x{self.size}, no resampling (reflect pad if smaller)"
        norm = "mean " + ",".join(f"{m:g}" for m in self.mean) + " std " + ",".join(f"{s:g}" for s in self.std)
        return f"{how}; {norm}; {self.dtype}"


def _resize(t, h: int, w: int, mode: str):
    import torch.nn.functional as F

    if t.shape[-2:] == (h, w):
        return t
    return F.interpolate(t, size=(h, w), mode=mode, align_corners=False, antialias=True).clamp_(0.0, 1.0)


def _center(t, size: int):
    h, w = t.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return t[..., top : top + size, left : left + size]


def apply_preprocess(img: np.ndarray, pp: Preprocess):
    """An H×W×3 float [0,1] image → a normalised float32 tensor [3, size, size].

    Deterministic: the same image and `pp` give the same bits on any machine with the same torch.
    """
    import torch
    import torch.nn.functional as F

    if img.ndim != 3 or img.shape[-1] != 3:
        raise PtgError(f"encoders take RGB images (H×W×3), got shape {img.shape}")
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]  # [1,3,H,W]
    h, w = t.shape[-2:]
    if pp.resize == "squash":
        t = _resize(t, pp.size, pp.size, pp.interpolation)
    elif pp.resize == "short_side_center_crop":
        short = pp.resize_short or pp.size
        # round() keeps the aspect as exactly as integers allow; the short side lands on `short`.
        nh, nw = (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
        t = _center(_resize(t, nh, nw, pp.interpolation), pp.size)
    else:  # center_crop
        if h < pp.size or w < pp.size:
            ph, pw = max(0, pp.size - h), max(0, pp.size - w)
            # reflect needs pad < size; replicate covers images smaller than half the crop
            mode = "reflect" if ph < h and pw < w else "replicate"
            t = F.pad(t, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode=mode)
        t = _center(t, pp.size)
    mean = torch.tensor(pp.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((t - mean) / std)[0].contiguous()  # [3, size, size]
