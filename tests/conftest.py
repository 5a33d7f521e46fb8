"""Shared fixtures: small real photos from scikit-image, written as PNG files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .s3_fixtures import _moto_endpoint, cut_proxy, s3  # noqa: F401  (the loopback S3 server for bucket tests)


def small_photo(name: str, size: int = 48) -> np.ndarray:
    """A real scikit-image photo, downscaled to size×size uint8 RGB."""
    import skimage.data as data

    arr = getattr(data, name)()
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.LANCZOS))


@pytest.fixture(autouse=True)
def _own_ptg_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own $PTG_CACHE (row caches, the default image store): none writes to ~/.cache."""
    monkeypatch.setenv("PTG_CACHE", str(tmp_path_factory.mktemp("ptg-cache")))


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """A folder with four small real RGB photos."""
    d = tmp_path / "clean"
    d.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(small_photo(name)).save(d / f"{name}.png")
    return d
