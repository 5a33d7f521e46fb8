"""PTG-RM (R): shapes, Eq. 1, the location-wise convolution, and that every ablation switch
removes or replaces exactly the part it names."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.models import create_model, location_wise_conv
from ptg.ptgrm.models.layers import snr_map
from ptg.ptgrm.models.ptgrm import combine_paper

# Random last decoder layer: these tests need every path to reach the output from the first step.
TINY = dict(width=8, prior_dims=(32,), prior_hidden=16, prior_embed=8, long_blocks=1, zero_init_output=False)


def _params(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.named_parameters()}


def _diff(base: dict, other: dict) -> tuple[set, set, set]:
    removed = {k for k in base if k not in other}
    added = {k for k in other if k not in base}
    changed = {k for k in base if k in other and base[k] != other[k]}
    return removed, added, changed


def _prefixed(names: set, *prefixes: str) -> bool:
    return all(any(n.startswith(p) for p in prefixes) for n in names)


def _build(**kw):
    torch.manual_seed(0)
    return create_model("ptgrm", **{**TINY, **kw})


@pytest.mark.parametrize("size", [(32, 32), (37, 53), (5, 3)])
def test_forward_backward_any_size(size):
    torch.manual_seed(0)
    m = _build()
    x = torch.rand(2, 3, *size)
    ihat = torch.rand(2, 3, *size, requires_grad=True)
    g = torch.randn(2, 32)
    res = m(ihat, x, g)
    assert res.out.shape == x.shape and res.im.shape == x.shape and res.ir.shape == x.shape
    assert res.mask.shape[:2] == (2, 1) and float(res.mask.detach().min()) >= 0 and float(res.mask.detach().max()) <= 1
    res.out.square().mean().backward()
    assert torch.isfinite(res.out).all()
    assert torch.isfinite(ihat.grad).all() and ihat.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_untrained_r_returns_ihat_exactly():
    """Zero-initialised output layer: R starts as the identity on F's output, prior or not."""
    torch.manual_seed(0)
    m = create_model("ptgrm", **{**TINY, "zero_init_output": True})
    x, ihat = torch.rand(2, 3, 20, 24), torch.rand(2, 3, 20, 24)
    res = m(ihat, x, torch.randn(2, 32))
    assert torch.equal(res.out, ihat) and torch.equal(res.ir, torch.zeros_like(ihat))
    res.out.square().mean().backward()
    assert m.decoder[-1].weight.grad.abs().sum() > 0  # it still learns from the first step


def test_default_size_matches_authors():
    """Default R at prior dim 512: the paper's +0.67M parameters, < 10 GMACs at 512²."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        m = create_model("ptgrm", prior_dims=(512,))
    n = sum(p.numel() for p in m.parameters())
    assert 300_000 < n < 1_000_000
    assert abs(n - 670_000) < 10_000
    x = torch.empty(1, 3, 512, 512, device="meta")
    with FlopCounterMode(display=False) as fc:
        m(x, x, torch.empty(1, 512, device="meta"))
    assert fc.get_total_flops() / 2 < 10e9


def test_identity_when_im_one_and_ir_zero():
    m = _build()
    last = m.decoder[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    x, ihat = torch.rand(1, 3, 37, 53), torch.rand(1, 3, 37, 53)
    res = m(ihat, x, torch.randn(1, 32))
    assert torch.equal(res.im, torch.ones_like(x)) and torch.equal(res.ir, torch.zeros_like(x))
    torch.testing.assert_close(res.out, ihat, rtol=0, atol=1e-6)


def test_eq1_and_official_output_form():
    x, ihat, im, ir = (torch.rand(1, 3, 4, 4) for _ in range(4))
    torch.testing.assert_close(combine_paper(ihat, x, im, ir), x + (ihat - x) * im + ir)
    m = _build(output_form="official")
    assert m.decoder[-1].out_channels == 3
    ihat = torch.rand(1, 3, 16, 16) * 1.4 - 0.2  # out of range on purpose: the release clamps it
    x = torch.rand(1, 3, 16, 16)
    res = m(ihat, x, torch.randn(1, 32))
    assert res.im is None
    torch.testing.assert_close(res.out, ihat.clamp(0, 1) + res.ir)


def test_location_wise_conv_equals_naive_loop():
    torch.manual_seed(0)
    b, c, h, w, k = 2, 3, 5, 6, 3
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    ker = torch.randn(b, c * k * k, h, w, dtype=torch.float64)
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    naive = torch.zeros_like(x)
    for bi in range(b):
        for ci in range(c):
            for y in range(h):
                for xx in range(w):
                    s = 0.0
                    for i in range(k):
                        for j in range(k):
                            s += xp[bi, ci, y + i, xx + j] * ker[bi, ci * k * k + i * k + j, y, xx]
                    naive[bi, ci, y, xx] = s
    torch.testing.assert_close(location_wise_conv(x, ker, k), naive)
    # One row per band (and checkpointed bands when grads are needed) gives the same values and grads.
    x1, k1 = x.clone().requires_grad_(), ker.clone().requires_grad_()
    x2, k2 = x.clone().requires_grad_(), ker.clone().requires_grad_()
    full = location_wise_conv(x1, k1, k)
    banded = location_wise_conv(x2, k2, k, max_chunk_elements=1)
    torch.testing.assert_close(banded, full)
    (full * naive).sum().backward()
    (banded * naive).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad)
    torch.testing.assert_close(k2.grad, k1.grad)


def test_location_wise_conv_5x5():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 7, 4, dtype=torch.float64)
    ker = torch.zeros(1, 2 * 25, 7, 4, dtype=torch.float64)
    ker[:, 12] = 1.0  # centre tap of channel 0 only
    out = location_wise_conv(x, ker, 5)
    torch.testing.assert_close(out[:, 0], x[:, 0])
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))


def test_no_sve_is_plain_sum():
    base = _params(_build())
    m = _build(use_sve=False)
    removed, added, changed = _diff(base, _params(m))
    assert removed and _prefixed(removed, "t_m.", "sve.range_head.", "sve.pos_embed.")
    assert not added and not changed
    f = torch.randn(1, 8, 6, 7)
    out, mask = m.sve(f, None, None)
    assert mask is None
    torch.testing.assert_close(out, m.sve.short(f) + m.sve.long(f))


@pytest.mark.parametrize(
    "switch, removed_prefixes, changed_expected",
    [
        (dict(use_channel_attn=False), (), {"csa.channel.0.weight"}),
        (dict(use_spatial_attn=False), ("csa.pos_embed.",), {"csa.kernel_head.0.weight"}),
        (dict(use_channel_attn=False, use_spatial_attn=False), ("csa.pos_embed.", "t_c."), {"csa.channel.0.weight", "csa.kernel_head.0.weight"}),
        (dict(use_channel_attn=False, unguided_attn="off"), ("csa.channel.",), set()),
        (dict(use_spatial_attn=False, unguided_attn="off"), ("csa.pos_embed.", "csa.kernel_head.", "csa.out_proj."), set()),
        (dict(use_pos_embed=False), ("sve.pos_embed.", "csa.pos_embed."), {"sve.range_head.0.weight", "csa.kernel_head.0.weight"}),
        (dict(mask_source="snr"), ("t_m.", "sve.range_head.", "sve.pos_embed."), set()),
        (dict(prior_mode="none"), ("t_m.", "t_c.", "sve.range_head.", "sve.pos_embed.", "csa.pos_embed."), {"csa.channel.0.weight", "csa.kernel_head.0.weight"}),
    ],
)
def test_ablation_switch_touches_only_its_part(switch, removed_prefixes, changed_expected):
    removed, added, changed = _diff(_params(_build()), _params(_build(**switch)))
    assert not added
    assert _prefixed(removed, *removed_prefixes)
    for p in removed_prefixes:
        assert any(n.startswith(p) for n in removed), p
    assert changed == changed_expected


@pytest.mark.parametrize("mode", ["concat1d", "concat2d"])
def test_concat_priors_replace_sve_and_csa(mode):
    base = _params(_build())
    m = _build(prior_mode=mode)
    removed, added, changed = _diff(base, _params(m))
    assert _prefixed(removed, "t_m.", "t_c.", "sve.range_head.", "sve.pos_embed.", "csa.pos_embed.")
    assert added and _prefixed(added, "prior_concat.")
    assert changed == {"csa.channel.0.weight", "csa.kernel_head.0.weight"}
    x = torch.rand(1, 3, 20, 24)
    a = m(x, x, torch.randn(1, 32)).out
    b = m(x, x, torch.randn(1, 32)).out
    assert not torch.allclose(a, b)  # the prior still enters, through the concatenation


def test_priors_matter_and_none_mode_ignores_them():
    x = torch.rand(1, 3, 24, 24)
    m = _build()
    assert not torch.allclose(m(x, x, torch.randn(1, 32)).out, m(x, x, torch.randn(1, 32)).out)
    m = _build(prior_mode="none")
    ref = m(x, x, None).out
    torch.testing.assert_close(m(x, x, torch.randn(1, 32)).out, ref)
    torch.testing.assert_close(m(x, x, [torch.randn(1, 7), torch.randn(1, 9)]).out, ref)


def test_large_r_preset():
    small = _build()
    large = create_model("ptgrm-large", **TINY)
    assert large.config.large and large.encoder[0].out_channels == 4 * small.encoder[0].out_channels
    names = _params(large)
    assert not any(n.startswith(("t_m.", "t_c.", "prior_concat.", "sve.range_head.", "sve.pos_embed.", "csa.pos_embed.")) for n in names)
    assert "csa.kernel_head.0.weight" in names  # attention kept, from features only (paper's "Large R")
    x = torch.rand(1, 3, 16, 16)
    assert large(x, x, torch.randn(1, 32)).mask is None


def test_snr_mask_is_the_snr_map():
    m = _build(mask_source="snr")
    x = torch.rand(1, 3, 32, 40)
    res = m(torch.rand_like(x), x, torch.randn(1, 32))
    torch.testing.assert_close(res.mask, F.adaptive_avg_pool2d(snr_map(x), (8, 10)))


@pytest.mark.parametrize("mask_on", ["short", "long"])
def test_mask_on_branch(mask_on):
    m = _build(mask_on=mask_on)
    f, tm = torch.randn(1, 8, 6, 6), torch.randn(1, 8)
    out, mask = m.sve(f, tm, None)
    fs, fl = m.sve.short(f), m.sve.long(f)
    a, b = (fs, fl) if mask_on == "short" else (fl, fs)
    torch.testing.assert_close(out, mask * a + (1 - mask) * b)


def test_several_priors_each_with_its_own_mapping():
    m = _build(prior_dims=(32, 16))
    assert len(m.t_m.maps) == 2 and len(m.t_c.maps) == 2
    assert m.t_m.maps[1][0].in_features == 16
    x = torch.rand(2, 3, 16, 16)
    out = m(x, x, [torch.randn(2, 32), torch.randn(2, 16)]).out
    assert out.shape == x.shape
    with pytest.raises(PtgError, match="2 prior"):
        m(x, x, torch.randn(2, 32))
    with pytest.raises(PtgError, match="prior 1 has shape"):
        m(x, x, [torch.randn(2, 32), torch.randn(2, 15)])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    m = _build().to(dtype)
    x = torch.rand(1, 3, 37, 53, dtype=dtype)
    res = m(x, x, torch.randn(1, 32, dtype=dtype))
    assert res.out.dtype == dtype and torch.isfinite(res.out).all()
    res.out.float().mean().backward()


def test_bad_config_is_a_clear_error():
    with pytest.raises(PtgError, match="prior_mode='sideways'"):
        create_model("ptgrm", prior_mode="sideways")
    with pytest.raises(PtgError, match="kernel_size=4"):
        create_model("ptgrm", kernel_size=4)
    with pytest.raises(PtgError, match="needs prior_dims"):
        create_model("ptgrm", prior_dims=())


def test_banded_location_wise_conv_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    ker = torch.randn(1, 18, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: location_wise_conv(a, b, 3, max_chunk_elements=40), (x, ker))
