"""Losses Lg of Eq. 8: pixel losses, an optional VGG19 perceptual term, and the non-reference
losses of Zero-DCE (Guo et al., CVPR 2020) for unsupervised low-light training (paper Table 4).

`build_loss(cfg)` returns one callable ``loss(pred, target, x) -> scalar``; the trainer applies it
to F's output and to R's output (Eq. 8: ``Lg(Ihat, Ic) + λ1·Lg(Ibar, Ic)``). Non-reference losses
ignore ``target`` (it may be None) and compare the output with the degraded input ``x``.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .config import LossConfig

# ImageNet statistics the torchvision VGG19 weights were trained with.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Index of relu5_4 in VGG19's `features`: the authors' release compares conv5_4 features only.
_VGG_LAYERS = {"relu5_4": 35}
_VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's file name for VGG19_Weights.IMAGENET1K_V1


def charbonnier(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Mean of ``sqrt((pred - target)² + eps²)`` (a differentiable L1)."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


class VGGPerceptual(nn.Module):
    """L1 distance between VGG19 relu5_4 features (BasicSR's PerceptualLoss as the authors set it).

    Needs torchvision's ImageNet VGG19 weights: a local file, or torchvision's cache/download.
    """

    def __init__(self, weights_file: str | None = None):
        super().__init__()
        from torchvision.models import vgg19

        net = vgg19(weights=None)
        state = _load_vgg_state(weights_file)
        # Accept the full torchvision state dict or one of `features` only.
        feats = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
        try:
            net.features.load_state_dict(feats, strict=True)
        except RuntimeError as exc:
            raise PtgError(f"{weights_file or _VGG19_FILE} is not a torchvision VGG19 state dict: {exc}") from exc
        self.features = net.features[: _VGG_LAYERS["relu5_4"] + 1].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        # pred, target: [B, 3, H, W] in [0, 1]
        a = self.features((pred - self.mean) / self.std)
        with torch.no_grad():
            b = self.features((target - self.mean) / self.std)
        return F.l1_loss(a, b)


def _load_vgg_state(weights_file: str | None) -> dict[str, Tensor]:
    from ptg.pipeline.core.weights import read_weights

    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise PtgError(f"loss.perceptual_weights_file={weights_file!r} does not exist; give the path of "
                           f"torchvision's VGG19 ImageNet weights ({_VGG19_FILE})")
        return read_weights(path, "loss.perceptual_weights_file", f"give torchvision's {_VGG19_FILE}")
    # torchvision keeps downloaded weights in torch.hub's cache; use it when it is there.
    cached = Path(torch.hub.get_dir()) / "checkpoints" / _VGG19_FILE
    if cached.is_file():
        return read_weights(cached, "VGG19 weights in torch.hub's cache", f"delete it to download {_VGG19_FILE} again")
    try:
        from torchvision.models import VGG19_Weights

        return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:  # offline: URLError, OSError, ...
        raise PtgError(
            f"the perceptual loss needs torchvision's VGG19 ImageNet weights and they could not be downloaded ({exc}). "
            f"Copy {_VGG19_FILE} from a machine with network access and pass it with "
            "--set loss.perceptual_weights_file=/path/to/vgg19-dcbb9e9d.pth (or set loss.perceptual_weight=0)."
        ) from exc


# ---------------------------------------------------------------------------------------------
# Zero-DCE non-reference losses (our implementation of the paper's definitions)


def spatial_consistency(pred: Tensor, x: Tensor, region: int = 4) -> Tensor:
    """L_spa: differences between neighbouring 4×4 regions of the output keep those of the input.

    Works on the channel mean, averaged over ``region``×``region`` cells, with the four neighbours
    (left, right, up, down) of each cell.
    """
    def grads(img: Tensor) -> list[Tensor]:
        m = F.avg_pool2d(img.mean(dim=1, keepdim=True), region)  # [B, 1, H/4, W/4]
        p = F.pad(m, (1, 1, 1, 1), mode="replicate")
        return [m - p[:, :, 1:-1, :-2], m - p[:, :, 1:-1, 2:], m - p[:, :, :-2, 1:-1], m - p[:, :, 2:, 1:-1]]

    return sum(((a - b) ** 2).mean() for a, b in zip(grads(pred), grads(x)))


def exposure_control(pred: Tensor, level: float = 0.6, patch: int = 16) -> Tensor:
    """L_exp: the mean intensity of each 16×16 patch is pulled towards ``level``."""
    m = F.avg_pool2d(pred.mean(dim=1, keepdim=True), patch)
    return ((m - level) ** 2).mean()


def color_constancy(pred: Tensor) -> Tensor:
    """L_col: grey-world, the channel means of the output should agree pairwise."""
    r, g, b = pred.mean(dim=(2, 3)).unbind(dim=1)
    return (((r - g) ** 2) ** 2 + ((r - b) ** 2) ** 2 + ((g - b) ** 2) ** 2).sqrt().mean()


def illumination_smoothness(pred: Tensor, x: Tensor, eps: float = 1e-3) -> Tensor:
    """L_tvA on the enhancement ratio ``pred / x``: a generic F has no curve maps A, so the
    per-pixel gain it applies plays their role (a smooth gain keeps edges of the input)."""
    ratio = pred / (x + eps)
    dh = (ratio[:, :, 1:, :] - ratio[:, :, :-1, :]) ** 2
    dw = (ratio[:, :, :, 1:] - ratio[:, :, :, :-1]) ** 2
    return dh.mean() + dw.mean()


class RestorationLoss(nn.Module):
    """Lg: ``loss(pred, target, x)`` as the config describes."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg
        self.perceptual = VGGPerceptual(cfg.perceptual_weights_file) if cfg.perceptual_weight > 0 else None

    @property
    def needs_target(self) -> bool:
        return self.cfg.kind != "zero-dce"

    def forward(self, pred: Tensor, target: Tensor | None, x: Tensor) -> Tensor:
        # pred, target, x: [B, 3, H, W]
        c = self.cfg
        if c.kind == "zero-dce":
            loss = (c.spatial_weight * spatial_consistency(pred, x)
                    + c.exposure_weight * exposure_control(pred, c.exposure_level)
                    + c.color_weight * color_constancy(pred)
                    + c.smoothness_weight * illumination_smoothness(pred, x))
        else:
            if target is None:
                raise PtgError(f"loss.kind={c.kind!r} needs targets; use loss.kind=zero-dce for unpaired data")
            if c.kind == "charbonnier":
                loss = charbonnier(pred, target, c.charbonnier_eps)
            elif c.kind == "l1":
                loss = F.l1_loss(pred, target)
            else:
                loss = F.mse_loss(pred, target)
        if self.perceptual is not None:
            if target is None:
                raise PtgError("the perceptual loss needs targets; set loss.perceptual_weight=0 for unpaired data")
            loss = loss + c.perceptual_weight * self.perceptual(pred.float(), target.float())
        return loss


def build_loss(cfg: LossConfig) -> RestorationLoss:
    """The Lg of a config (loads VGG19 weights only when the perceptual term is on)."""
    return RestorationLoss(cfg)
