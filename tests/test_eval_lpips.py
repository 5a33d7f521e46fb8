"""LPIPS loading (offline-safe) and scoring, on a randomly initialised AlexNet saved to a tmp dir."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.lpips_metric import LPIPS, backbone_cache_path


def _save_alexnet_features(path: Path) -> Path:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None)
    # only the convolutional part, which is all LPIPS uses (keeps the file ~10 MB)
    torch.save({k: v for k, v in net.state_dict().items() if k.startswith("features.")}, path)
    return path


@pytest.fixture()
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub folder and a download that fails like an offline machine's."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return tmp_path / "hub"


def test_missing_backbone_names_file_folder_and_option(offline_hub) -> None:
    with pytest.raises(PtgError) as exc:
        LPIPS("alex")
    msg = str(exc.value)
    assert "alexnet-owt-7be5be79.pth" in msg
    assert str(offline_hub / "checkpoints") in msg
    assert "--lpips-weights" in msg


def test_missing_explicit_weights_file(tmp_path) -> None:
    with pytest.raises(PtgError, match="not found"):
        LPIPS("alex", weights=tmp_path / "nope.pth")


def test_wrong_weights_file_is_refused(tmp_path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(PtgError, match="lack|do not fit"):
        LPIPS("alex", weights=bad)


def test_scores_with_explicit_weights_and_from_hub_cache(tmp_path, offline_hub) -> None:
    weights = _save_alexnet_features(tmp_path / "alex_features.pth")
    metric = LPIPS("alex", weights=weights)
    rng = np.random.default_rng(0)
    target = rng.random((48, 48, 3)).astype(np.float32)
    small = np.clip(target + rng.normal(0, 0.03, target.shape), 0, 1).astype(np.float32)
    large = np.clip(target + rng.normal(0, 0.3, target.shape), 0, 1).astype(np.float32)
    assert metric(target, target) == pytest.approx(0.0, abs=1e-6)
    d_small, d_large = metric(small, target), metric(large, target)
    assert 0 < d_small < d_large

    # the same file placed where torchvision caches it is found without --lpips-weights
    cached = backbone_cache_path("alex")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(weights.read_bytes())
    assert LPIPS("alex")(large, target) == pytest.approx(d_large, rel=1e-6)


def test_unknown_network() -> None:
    with pytest.raises(PtgError, match="unknown LPIPS network 'squeezy'"):
        LPIPS("squeezy")
