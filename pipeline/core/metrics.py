"""PSNR and SSIM in the community's conventions (BasicSR's Python metrics, exactly).

- Inputs are images in [0, 1] (float) or uint8; floats are rounded to uint8 first, as BasicSR's
  ``tensor2img`` does before its metrics, so a reported number is that of the saved PNG.
- ``crop_border=k`` removes k pixels on every side before anything else.
- ``y_channel=True``: Y = 16 + 65.481 R + 128.553 G + 24.966 B on [0, 1] values (MATLAB's
  ``rgb2ycbcr``), kept as a float on the 0-255 scale, not re-rounded; ``matlab_round_y=True``
  rounds it to integers as some MATLAB scripts do (an option, never the default).
- PSNR: one MSE over all pixels and channels, peak 255 (also for Y).
- SSIM (Wang et al. 2004): per channel on 0-255 values, 11×11 Gaussian window with σ = 1.5,
  valid positions only, C1 = (0.01·255)², C2 = (0.03·255)²; RGB SSIM is the mean over channels.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import PtgError

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    w = np.outer(g, g)
    return w / w.sum()


_WINDOW = _gaussian_window()


def _as_255(img: np.ndarray) -> np.ndarray:
    """uint8, or float in [0, 1] rounded to uint8 like BasicSR; returned as float64 on 0-255."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if img.dtype.kind != "f":
        raise PtgError(f"metrics take uint8 or float [0, 1] images, got {img.dtype}")
    return (np.clip(img.astype(np.float64), 0.0, 1.0) * 255.0).round()


def rgb_to_y(img255: np.ndarray, matlab_round: bool = False) -> np.ndarray:
    """BT.601 luma of an H×W×3 image on 0-255, as MATLAB's rgb2ycbcr; returns H×W×1 (0-255)."""
    x = img255 / 255.0
    y = 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]
    return (np.round(y) if matlab_round else y)[..., None]


def _prepare(pred, target, crop_border: int, y_channel: bool, matlab_round_y: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_255(pred), _as_255(target)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None] if b.ndim == 2 else b
    if b.ndim == 2:
        b = b[..., None]
    if a.shape != b.shape:
        raise PtgError(f"image shapes differ: prediction {a.shape} vs target {b.shape}")
    if crop_border < 0:
        raise PtgError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        if min(a.shape[:2]) <= 2 * crop_border:
            raise PtgError(f"crop_border {crop_border} leaves nothing of a {a.shape[1]}x{a.shape[0]} image")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        if a.shape[-1] != 3:
            raise PtgError("--y-channel needs RGB images")
        a, b = rgb_to_y(a, matlab_round_y), rgb_to_y(b, matlab_round_y)
    return a, b


def psnr(pred, target, crop_border: int = 0, y_channel: bool = False, matlab_round_y: bool = False) -> float:
    """PSNR in dB (inf for identical images)."""
    a, b = _prepare(pred, target, crop_border, y_channel, matlab_round_y)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    def filt(x: np.ndarray) -> np.ndarray:  # 'valid' Gaussian filtering, like cv2.filter2D + crop
        return ndimage.correlate(x, _WINDOW, mode="constant")[5:-5, 5:-5]

    mu_a, mu_b = filt(a), filt(b)
    s_aa = filt(a * a) - mu_a**2
    s_bb = filt(b * b) - mu_b**2
    s_ab = filt(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + _C1) * (2 * s_ab + _C2)
    den = (mu_a**2 + mu_b**2 + _C1) * (s_aa + s_bb + _C2)
    return float(np.mean(num / den))


def ssim(pred, target, crop_border: int = 0, y_channel: bool = False, matlab_round_y: bool = False) -> float:
    """SSIM, the mean over channels of per-channel SSIM."""
    a, b = _prepare(pred, target, crop_border, y_channel, matlab_round_y)
    if min(a.shape[:2]) < 11:
        raise PtgError(f"SSIM needs images of at least 11x11 pixels, got {a.shape[1]}x{a.shape[0]}")
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[-1])]))
