"""Every registered model at tiny width: any size, forward + backward, no NaNs, half precision,
deterministic init; the "-f" wrappers start exactly as their baseline."""
from __future__ import annotations

import pytest
import torch

from ptg.ptgrm.models import create_model, get_model_spec, list_models

_PRIOR = dict(prior_dims=(32,), prior_hidden=16, prior_embed=8)
_REFINE = dict(_PRIOR, refine_width=8, refine_long_blocks=1)
# A tiny configuration for every registered name: a new registration without one fails
# test_every_model_has_a_tiny_config, so no model escapes these tests.
TINY: dict[str, dict] = {
    "ptgrm": dict(_PRIOR, width=8, long_blocks=1, zero_init_output=False),  # every path live at step 0
    "ptgrm-large": dict(_PRIOR, width=4, long_blocks=1, zero_init_output=False),
    "ptgrm-release": dict(_PRIOR, width=8, long_blocks=1, zero_init_output=False),
    "unet": dict(width=4, depth=3),
    "unet-f": dict(_REFINE, width=4, depth=3),
    "nafnet": dict(width=4, enc_blocks=(1, 1), dec_blocks=(1, 1)),
    "nafnet-f": dict(_REFINE, width=4, enc_blocks=(1, 1), dec_blocks=(1, 1)),
    "restormer": dict(width=4),
    "restormer-f": dict(_REFINE, width=4),
    "restormer-paper": dict(width=4, blocks=(1, 1, 1, 1), refinement_blocks=1),
    "dncnn": dict(width=4, depth=3),
    "snr": dict(width=4, token_dim=16, heads=2, short_blocks=1, long_blocks=1),
    "ffdnet": dict(width=8, depth=3),
}


def _run(name: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    kind = get_model_spec(name).kind
    g = torch.randn(x.shape[0], 32, dtype=x.dtype)
    if kind == "restorer":
        return model(x)
    if kind == "refiner":
        return model(torch.rand_like(x), x, g).out
    return model(x, g)


def test_every_model_has_a_tiny_config():
    # external models (built from a weights file or another package) have their own tests
    assert set(TINY) == {n for n in list_models() if not get_model_spec(n).external}


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("size", [(32, 32), (37, 53)])
def test_forward_backward(name, size):
    torch.manual_seed(0)
    model = create_model(name, **TINY[name])
    x = torch.rand(2, 3, *size, requires_grad=True)
    y = _run(name, model, x)
    assert y.shape == (2, 3, *size)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward(name, dtype):
    torch.manual_seed(0)
    model = create_model(name, **TINY[name]).to(dtype).eval()
    with torch.no_grad():
        y = _run(name, model, torch.rand(1, 3, 19, 26, dtype=dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(TINY))
def test_init_is_deterministic(name):
    torch.manual_seed(123)
    a = create_model(name, **TINY[name]).state_dict()
    torch.manual_seed(123)
    b = create_model(name, **TINY[name]).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["unet", "nafnet", "restormer"])
def test_f_variant_starts_as_its_baseline_and_uses_the_prior(name):
    torch.manual_seed(0)
    wrapped = create_model(f"{name}-f", **TINY[f"{name}-f"]).eval()
    base = wrapped.base
    x = torch.rand(1, 3, 29, 35)
    g1, g2 = torch.randn(1, 32), torch.randn(1, 32)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x, g1), base(x))  # Pout starts at zero
        torch.nn.init.normal_(wrapped.proj_out.weight, std=0.1)
        assert not torch.allclose(wrapped(x, g1), wrapped(x, g2))
    # The refinement sits on the deepest map: its channels are the base's deep channels.
    assert wrapped.proj_in.in_channels == base.deep_channels
    assert sum(p.numel() for n, p in wrapped.named_parameters() if not n.startswith("base.")) > 0


def test_restormer_paper_configuration_size():
    with torch.device("meta"):
        n = sum(p.numel() for p in create_model("restormer-paper").parameters())
    assert 26.0e6 < n < 26.2e6  # the paper reports 26.13M
