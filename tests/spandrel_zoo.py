"""Small random-weight builds of spandrel's architectures, each with the architecture's own class.

`RESTORATION`: every spandrel / spandrel_extra_arches architecture that is 1x RGB restoration and
builds at a small size (SR networks that also come as 1x — SwinIR, Real-ESRGAN Compact, ESRGAN,
SPAN — are built at scale 1). Not here, and why: FBCNN (its quality-factor head is fixed at 512
channels: ~20M parameters at the smallest), RealCUGAN (2x/3x/4x only), DDColor (colourisation),
the SR-only families (HAT, DAT, RGT, ...; the refusal of SR is tested with SwinIR x2), MAT / LaMa
(inpainting), GFPGAN / RestoreFormer / CodeFormer (face restoration; the refusal is tested with
CodeFormer, whose VQGAN is ~68M parameters even at the smallest size).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

# test id -> (spandrel module, class, kwargs, the architecture name spandrel reports, test input side)
RESTORATION: dict[str, tuple[str, str, dict[str, Any], str, int]] = {
    "nafnet": ("NAFNet", "NAFNet", dict(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]), "NAFNet", 32),
    "kbnet": ("KBNet", "KBNet_s", dict(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]), "KBNet", 32),
    "fftformer": ("FFTformer", "FFTformer", dict(dim=8, num_blocks=[1, 1, 1], num_refinement_blocks=1), "FFTformer", 32),
    "mixdehazenet": ("MixDehazeNet", "MixDehazeNet", dict(embed_dims=[8, 16, 32, 16, 8], depths=[1, 1, 1, 1, 1]), "MixDehazeNet", 40),
    "drunet": ("DRUNet", "DRUNet", dict(in_nc=4, out_nc=3, nc=[8, 16, 32, 64], nb=2), "DRUNet", 32),
    "dncnn": ("DnCNN", "DnCNN", dict(in_nc=3, out_nc=3, nc=8, nb=5), "DnCNN", 32),
    "retinexformer": ("RetinexFormer", "RetinexFormer", dict(n_feat=8, stage=1, num_blocks=[1, 1, 1]), "RetinexFormer", 32),
    "hvi-cidnet": ("HVICIDNet", "HVICIDNet", dict(channels=[8, 8, 16, 32], heads=[1, 2, 4, 8]), "HVI-CIDNet", 32),
    "scunet": ("SCUNet", "SCUNet", dict(config=[1] * 7, dim=64), "SCUNet", 64),
    "uformer": ("Uformer", "Uformer", dict(embed_dim=8, depths=[1] * 9, win_size=4, img_size=128), "Uformer", 128),
    "swinir-1x": ("SwinIR", "SwinIR", dict(embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=1, img_size=16), "SwinIR", 32),
    "compact-1x": ("Compact", "Compact", dict(num_feat=8, num_conv=2, upscale=1), "RealESRGAN Compact", 32),
    "esrgan-1x": ("ESRGAN", "ESRGAN", dict(num_filters=8, num_blocks=1, scale=1), "ESRGAN", 32),
    "span-1x": ("SPAN", "SPAN", dict(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=1), "SPAN", 32),
    "restormer": ("Restormer", "Restormer", dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1), "Restormer", 32),
    "mprnet": ("MPRNet", "MPRNet", dict(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1), "MPRNet", 32),
    "mirnet2": ("MIRNet2", "MIRNet2", dict(n_feat=16, n_MRB=1), "MIRNet2", 32),
    "m3snet": ("M3SNet", "M3SNet", dict(width=8, enc_blk_nums=[1, 1, 1, 1], dec_blk_nums=[1, 1, 1, 1]), "M3SNet", 32),
}

# Not 1x restoration: id -> (module, class, kwargs, purpose, scale) — ptg must refuse each, naming both.
REFUSED: dict[str, tuple[str, str, dict[str, Any], str, int]] = {
    "swinir-2x": ("SwinIR", "SwinIR", dict(embed_dim=12, depths=[1], num_heads=[2], window_size=4, upscale=2,
                                           img_size=16, upsampler="pixelshuffle"), "SR", 2),
    "lama": ("LaMa", "LaMa", {}, "Inpainting", 1),
    "codeformer": ("CodeFormer", "CodeFormer", dict(dim_embd=64, n_head=2, n_layers=1, codebook_size=32, latent_size=16,
                                                    connect_list=["32"], fix_modules=[]), "FaceSR", 1),
}


def arch_class(module: str, cls: str) -> type:
    """The architecture's own model class from spandrel or spandrel_extra_arches."""
    try:
        mod = importlib.import_module(f"spandrel.architectures.{module}")
    except ImportError:
        mod = importlib.import_module(f"spandrel_extra_arches.architectures.{module}")
    return getattr(mod, cls)


def build(module: str, cls: str, kwargs: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """A random-weight network of the architecture (deterministic under ``seed``)."""
    torch.manual_seed(seed)
    net = arch_class(module, cls)(**kwargs)
    with torch.no_grad():  # some archs zero-init their last layer: perturb so outputs depend on every weight
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return net.eval()


def save(net: torch.nn.Module, path: Path, wrap: str | None = None) -> Path:
    """Save the state dict as ``.pth`` (optionally under ``{wrap: ...}``) or ``.safetensors``."""
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({wrap: state} if wrap else state, path)
    return path
