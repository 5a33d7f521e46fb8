"""LPIPS (Zhang et al., CVPR 2018) from the maintained `lpips` package, with offline-safe loading.

The `lpips` package ships its learned linear heads (``lpips/weights/v0.1/{alex,vgg}.pth``) but
takes the backbone (torchvision's ImageNet AlexNet or VGG16) from torchvision's download, which
fails on an offline machine. So the backbone is built without weights and filled here, from (in
order): an explicit ``weights`` file (``--lpips-weights PATH``), then the file torchvision would
have cached (``<torch hub dir>/checkpoints/<name>``), then torchvision's download. When none
works the error names the file, the folder to put it in and the URL to fetch it from elsewhere.

Inputs are RGB images in [0, 1] (rounded to uint8 first, like PSNR/SSIM, so LPIPS scores the
saved PNG), scaled to [-1, 1] as LPIPS expects. Lower is better.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ptg.pipeline.core.errors import PtgError

# net -> (torchvision weights enum name, attribute of torchvision.models.*_Weights)
_BACKBONES = {"alex": ("AlexNet_Weights", "alexnet"), "vgg": ("VGG16_Weights", "vgg16")}


def backbone_url(net: str) -> str:
    """URL of torchvision's ImageNet weights for the LPIPS backbone ``net``."""
    import torchvision.models as tvm

    if net not in _BACKBONES:
        raise PtgError(f"unknown LPIPS network {net!r}; choose one of {', '.join(_BACKBONES)}")
    return getattr(tvm, _BACKBONES[net][0]).IMAGENET1K_V1.url


def backbone_cache_path(net: str) -> Path:
    """Where torchvision caches the backbone file (and where an offline user should put it)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / backbone_url(net).rsplit("/", 1)[-1]


def _backbone_state(net: str, weights: str | Path | None) -> dict:
    import torch

    url = backbone_url(net)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise PtgError(f"--lpips-weights {path}: file not found; give torchvision's {url.rsplit('/', 1)[-1]}")
    else:
        path = backbone_cache_path(net)
    if path.is_file():
        from ptg.pipeline.core.weights import read_weights

        return read_weights(path, "LPIPS backbone weights", f"give torchvision's {url.rsplit('/', 1)[-1]}")
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
    except Exception as exc:  # URLError, HTTPError, timeouts, hash mismatch: all mean "not available"
        raise PtgError(
            f"LPIPS ({net}) needs torchvision's ImageNet backbone weights, which could not be downloaded "
            f"({type(exc).__name__}). Fetch {url} on a connected machine and place it at {path} "
            f"(the torch hub checkpoints folder), or pass --lpips-weights PATH"
        ) from exc


class LPIPS:
    """A ready LPIPS scorer: ``LPIPS("alex")(pred, target) -> float``."""

    def __init__(self, net: str = "alex", weights: str | Path | None = None, device: str = "cpu"):
        """Build the metric.

        Args:
            net: backbone, "alex" (the usual choice in restoration papers) or "vgg".
            weights: torchvision backbone weights file; None = torch hub cache, then download.
            device: torch device.

        Raises:
            PtgError: the backbone weights are unavailable or do not fit the network.
        """
        import warnings

        try:
            import lpips
        except ImportError as exc:
            raise PtgError("--lpips needs the lpips package (ptg's metrics extra): pip install lpips") from exc
        state = _backbone_state(net, weights)
        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=` flag
            warnings.simplefilter("ignore", UserWarning)
            model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)  # linear heads load from the package
        _load_features(model.net, state, net)
        self.model = model.to(device).eval().requires_grad_(False)
        self.net = net
        self.device = device

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        """LPIPS distance of two H×W×3 images (float [0, 1] or uint8)."""
        import torch

        def prep(img: np.ndarray) -> torch.Tensor:
            img = np.asarray(img)
            u8 = img if img.dtype == np.uint8 else (np.clip(img, 0, 1) * 255.0).round()
            t = torch.from_numpy(np.ascontiguousarray(u8, dtype=np.float32) / 255.0)
            return (t.permute(2, 0, 1)[None] * 2 - 1).to(self.device)  # [1, 3, H, W] in [-1, 1]

        if np.shape(pred) != np.shape(target):
            raise PtgError(f"image shapes differ: prediction {np.shape(pred)} vs target {np.shape(target)}")
        with torch.inference_mode():
            return float(self.model(prep(pred), prep(target)).item())


def _load_features(backbone, state: dict, net: str) -> None:
    """Copy torchvision ``features.<i>.*`` tensors into lpips' ``slice<k>.<i>.*`` modules."""
    src = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    mapped = {}
    for key in backbone.state_dict():
        m = re.fullmatch(r"slice\d+\.(\d+\.\w+)", key)
        if m is None or m.group(1) not in src:
            raise PtgError(f"the LPIPS backbone weights lack {'features.' + (m.group(1) if m else key)}: not torchvision's {_BACKBONES[net][1]} file")
        mapped[key] = src[m.group(1)]
    try:
        backbone.load_state_dict(mapped, strict=True)
    except RuntimeError as exc:
        raise PtgError(f"the LPIPS backbone weights do not fit {_BACKBONES[net][1]}: {str(exc).splitlines()[0]}") from exc
