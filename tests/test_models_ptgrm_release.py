"""`ptgrm-release`, PTG-RM as the authors released it: their state dict (names and shapes kept
as a fixture) loads strictly, the parameter count is theirs, their file wrappers unwrap, and
`ptg train` starts R from such a file. Forward equality with the release itself is checked
outside the repo (README, "PTG-RM: the paper's form and the release's")."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.models import create_model
from ptg.ptgrm.models.ptgrm_release import release_grid, release_state_dict
from ptg.ptgrm.train.config import resolve
from ptg.ptgrm.train.setup import load_r_weights

FIXTURE = Path(__file__).parent / "fixtures" / "ptgrm_release_state_dict.json"
RELEASE_PARAMS = 671_735  # refinement2 at the SID configuration (counted on the release itself)
TINY = dict(width=4, prior_dims=(16,), prior_hidden=8, prior_embed=8, long_blocks=1)


def _release_state() -> dict[str, torch.Tensor]:
    """A state dict with the release's key names and shapes, filled with seeded random values."""
    shapes = json.loads(FIXTURE.read_text())["state_dict"]
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(*s, generator=gen) * 0.1 for k, s in shapes.items()}


def test_release_state_dict_loads_strictly_with_its_parameter_count():
    state = _release_state()
    m = create_model("ptgrm-release")
    m.load_state_dict(state, strict=True)
    assert sum(math.prod(v.shape) for v in state.values()) == RELEASE_PARAMS
    assert sum(p.numel() for p in m.parameters()) == RELEASE_PARAMS
    # it saves under the release's names too, so ptg's files load back into the authors' code
    mine = m.state_dict()
    assert set(mine) == set(state)
    assert all(torch.equal(mine[k], v) for k, v in state.items())


def test_a_state_dict_of_another_shape_is_refused():
    state = _release_state()
    state["mapp_space1.weight"] = torch.zeros(256, 768)  # a prior of dim 768 into an R built for 512
    with pytest.raises(RuntimeError, match="mapp_space1"):
        create_model("ptgrm-release").load_state_dict(state)
    state = _release_state()
    state["r1.bias"] = torch.zeros(16)  # the release's encoder convs have no bias
    with pytest.raises(RuntimeError, match="r1.bias"):
        create_model("ptgrm-release").load_state_dict(state)


def test_the_authors_file_wrappers_unwrap():
    state = _release_state()
    whole_net = {"conv_first_1.weight": torch.zeros(64, 3, 3, 3), **{f"refinement11.{k}": v for k, v in state.items()}}
    for obj in (state, {"params": state}, {"state_dict": {f"module.{k}": v for k, v in state.items()}}, {"params": whole_net}):
        out = release_state_dict(obj)
        assert set(out) == set(state) and all(torch.equal(out[k], state[k]) for k in state)
    with pytest.raises(PtgError, match="not a state dict"):
        release_state_dict({"params": {"a": 1}})


@pytest.mark.parametrize("size", [(32, 32), (37, 53), (5, 3)])
def test_forward_backward_any_size(size):
    torch.manual_seed(0)
    m = create_model("ptgrm-release", **TINY, zero_init_output=False)
    x, ihat = torch.rand(2, 3, *size), torch.rand(2, 3, *size, requires_grad=True)
    res = m(ihat, x, torch.randn(2, 16))
    assert res.out.shape == x.shape and res.ir.shape == x.shape and res.im is None
    assert res.mask.shape == (2, 1, math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    res.out.square().mean().backward()
    assert torch.isfinite(ihat.grad).all() and ihat.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_untrained_r_returns_the_clamped_ihat_and_priors_are_checked():
    torch.manual_seed(0)
    m = create_model("ptgrm-release", **TINY)
    x, ihat = torch.rand(2, 3, 16, 20), torch.rand(2, 3, 16, 20) * 1.4 - 0.2
    assert torch.equal(m(ihat, x, torch.randn(2, 16)).out, ihat.clamp(0, 1))
    with pytest.raises(PtgError, match="expected"):
        m(ihat, x, torch.randn(2, 8))
    with pytest.raises(PtgError, match="needs priors"):
        m(ihat, x, None)


def test_release_grid_is_row_then_column():
    g = release_grid(1, 2, 3, torch.zeros(1))
    assert torch.equal(g[0, 0], torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    assert torch.equal(g[0, 1], torch.tensor([[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]))


def _cfg(tmp_path: Path, weights: Path | None, mode: str = "refine"):
    sets = [f"model.refiner_args.{k}={v}" for k, v in TINY.items() if k != "prior_dims"]
    sets += ["model.refiner=ptgrm-release"] + ([f"model.refiner_weights={weights}"] if weights else [])
    return resolve(overrides={"out": str(tmp_path / "run"), "mode": mode}, sets=sets)


def test_refiner_weights_start_r_from_a_release_file(tmp_path):
    torch.manual_seed(1)
    src = create_model("ptgrm-release", **TINY, zero_init_output=False).state_dict()
    file = tmp_path / "net_g_latest.pth"
    torch.save({"params": {f"refinement11.{k}": v for k, v in src.items()}}, file)
    torch.manual_seed(2)
    r = create_model("ptgrm-release", **TINY)
    load_r_weights(_cfg(tmp_path, file), r)
    assert all(torch.equal(r.state_dict()[k], v) for k, v in src.items())
    from safetensors.torch import save_file

    save_file(src, str(tmp_path / "r.safetensors"))
    r2 = create_model("ptgrm-release", **TINY)
    load_r_weights(_cfg(tmp_path, tmp_path / "r.safetensors"), r2)
    assert all(torch.equal(r2.state_dict()[k], v) for k, v in src.items())
    wide = create_model("ptgrm-release", **{**TINY, "width": 8})
    with pytest.raises(PtgError, match="does not fit R 'ptgrm-release'.*of another shape"):
        load_r_weights(_cfg(tmp_path, file), wide)
    with pytest.raises(PtgError, match="no such file"):
        load_r_weights(_cfg(tmp_path, tmp_path / "missing.pth"), r)


def test_ptg_train_starts_r_from_the_file(tmp_path):
    from ptg.ptgrm.train.checkpoint import load_checkpoint
    from ptg.ptgrm.train.trainer import train

    from .test_train_units import make_samples, make_store

    manifest = make_samples(tmp_path / "samples")
    store = make_store(tmp_path / "s16.zarr", manifest, dim=16)
    torch.manual_seed(1)
    src = create_model("ptgrm-release", **TINY, zero_init_output=False).state_dict()
    torch.save({"params": src}, tmp_path / "r.pth")
    sets = ["data.crop=32", "data.batch_size=2", "model.baseline_args.width=4", "model.baseline_args.depth=2",
            "run.threads=1", "data.val_max_images=1", "data.val_crop=32", "model.refiner=ptgrm-release",
            f"model.refiner_weights={tmp_path / 'r.pth'}"] + [f"model.refiner_args.{k}={v}" for k, v in TINY.items() if k != "prior_dims"]
    data = {"manifest": str(manifest), "priors": [str(store)]}
    torch.manual_seed(2)
    train(resolve(overrides={"out": str(tmp_path / "run"), "mode": "joint", "steps": 1, "data": data}, sets=sets))
    got = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["refiner"]["state_dict"]
    # one Adam step at lr 1e-4 moves each weight by about 1e-4: R started from the file, not from a fresh init
    assert set(got) == set(src) and max((got[k] - v).abs().max().item() for k, v in src.items()) < 1e-3
    with pytest.raises(PtgError, match="trains no R"):
        train(resolve(overrides={"out": str(tmp_path / "b"), "mode": "baseline", "steps": 1, "data": data}, sets=sets))
