"""Padded and tiled inference (ptg.ptgrm.infer)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.infer import required_multiple, run_padded_tiled, tile_starts


def _conv_stack(layers: int) -> nn.Module:
    torch.manual_seed(0)
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Conv2d(3, 3, 3, padding=1), nn.Tanh()]
    return nn.Sequential(*mods).eval()


@pytest.mark.parametrize("layers,overlap", [(1, 2), (2, 4), (3, 6)])
def test_tiled_equals_untiled_for_a_local_model(layers: int, overlap: int) -> None:
    net = _conv_stack(layers)  # receptive-field radius = layers
    torch.manual_seed(1)
    x = torch.rand(1, 3, 45, 70)
    (whole,) = run_padded_tiled(net, x)
    (tiled,) = run_padded_tiled(net, x, tile=16, overlap=overlap)
    assert tiled.shape == whole.shape == x.shape
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


def test_too_small_overlap_changes_a_local_model() -> None:
    net = _conv_stack(3)  # radius 3; overlap 2 keeps pixels only 1 px from a tile edge
    torch.manual_seed(1)
    x = torch.rand(1, 3, 40, 40)
    (whole,) = run_padded_tiled(net, x)
    (tiled,) = run_padded_tiled(net, x, tile=16, overlap=2)
    assert (tiled - whole).abs().max() > 1e-4


def test_tiling_changes_a_model_with_global_pooling() -> None:
    class GlobalGain(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x.mean(dim=(2, 3), keepdim=True)  # like channel attention: global pooling

    torch.manual_seed(1)
    x = torch.rand(1, 3, 40, 40)
    x[..., :20, :] *= 0.1  # tiles see different statistics
    (whole,) = run_padded_tiled(GlobalGain(), x)
    (tiled,) = run_padded_tiled(GlobalGain(), x, tile=16, overlap=8)
    assert (tiled - whole).abs().max() > 1e-3


def test_padding_multiple_and_several_outputs() -> None:
    seen: list[tuple[int, ...]] = []

    def fn(t: torch.Tensor):
        seen.append(tuple(t.shape))
        return t * 2, None, t[:, :1]

    x = torch.rand(1, 3, 13, 22)
    a, b, c = run_padded_tiled(fn, x, multiple=8)
    assert seen == [(1, 3, 16, 24)]
    assert b is None and a.shape == (1, 3, 13, 22) and c.shape == (1, 1, 13, 22)
    torch.testing.assert_close(a, x * 2)
    seen.clear()
    a, _, _ = run_padded_tiled(fn, x, multiple=8, tile=16, overlap=8)
    assert all(s[-2:] == (16, 16) for s in seen) and len(seen) == 2  # padded 16x24: two 16x16 tiles
    torch.testing.assert_close(a, x * 2)


def test_tile_starts_cover_and_end_at_border() -> None:
    assert tile_starts(100, 32, 8) == [0, 24, 48, 68]
    assert tile_starts(20, 32, 8) == [0]
    assert tile_starts(32, 32, 8) == [0]


def test_bad_tiling_options_are_user_errors() -> None:
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(PtgError, match="--overlap 16"):
        run_padded_tiled(lambda t: t, x, tile=16, overlap=16)
    with pytest.raises(PtgError, match="multiple of 8"):
        run_padded_tiled(lambda t: t, x, tile=20, overlap=4, multiple=8)


def test_required_multiple_is_the_lcm() -> None:
    a, b = nn.Identity(), nn.Identity()
    a.multiple, b.multiple = 4, 6
    assert required_multiple(a, b, None, nn.Identity()) == 12
