"""Training within a memory budget: exact gradient accumulation, activation checkpointing, the measured
plan of ``--max-memory`` (and its one-line refusal), the fp16 guard of spandrel's NAFNet, and the
speed switches leaving state dicts alone."""
from __future__ import annotations

import json
import re

import pytest
import torch

from ptg.cli.app import main
from ptg.ptgrm.models import create_model
from ptg.ptgrm.train import memory
from ptg.ptgrm.train.checkpoint import load_checkpoint
from ptg.ptgrm.train.config import resolve
from ptg.ptgrm.train.trainer import train

from .test_train import TINY, _ptg_no_fm, kill_at
from .test_train_units import make_samples, make_store

BATCH8 = [s for s in TINY if not s.startswith("data.batch_size")] + ["data.batch_size=8", "optim.lr=1e-3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_memory")
    manifest = make_samples(root / "samples")
    store = make_store(root / "s16.zarr", manifest, dim=16, views="flips")
    base = root / "base"
    train(_cfg({"manifest": manifest, "store": store}, base, "baseline", steps=1, priors=False))
    return {"manifest": manifest, "store": store, "base": base}


def _cfg(data, out, mode="joint", steps=1, sets=(), priors=True):
    overrides = {"out": str(out), "mode": mode, "steps": steps,
                 "data": {"manifest": str(data["manifest"]), "priors": [str(data["store"])] if priors else []}}
    return resolve(overrides=overrides, sets=BATCH8 + list(sets))


def _params(run):
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    out = {f"F.{k}": v for k, v in ck["baseline"]["state_dict"].items()}
    out.update({f"R.{k}": v for k, v in ck["refiner"]["state_dict"].items()})
    return out


@pytest.mark.parametrize("mode,ckpt", [("joint", "none"), ("joint", "both"), ("refine", "none"), ("refine", "both")])
def test_four_micro_batches_of_two_equal_one_batch_of_eight(data, tmp_path, mode, ckpt):
    extra = [f"model.baseline_weights={data['base']}"] if mode == "refine" else []
    train(_cfg(data, tmp_path / "whole", mode, sets=extra))
    train(_cfg(data, tmp_path / "micro", mode, sets=extra + ["run.micro_batch=2", f"run.checkpointing={ckpt}"]))
    whole, micro = _params(tmp_path / "whole"), _params(tmp_path / "micro")
    assert whole.keys() == micro.keys()
    for k, v in whole.items():
        assert (v - micro[k]).abs().max().item() <= 1e-6, k


def test_ragged_micro_batches_add_up_to_the_batch(data, tmp_path):
    train(_cfg(data, tmp_path / "whole"))
    train(_cfg(data, tmp_path / "ragged", sets=["run.micro_batch=3"]))  # 3 + 3 + 2
    whole, ragged = _params(tmp_path / "whole"), _params(tmp_path / "ragged")
    assert max((whole[k] - ragged[k]).abs().max().item() for k in whole) <= 1e-6


def test_checkpointing_finds_the_repeated_blocks_of_every_f_and_r():
    counts = {name: len(memory.find_blocks(create_model(name, **args))) for name, args in [
        ("unet", {"width": 4, "depth": 3}), ("nafnet", {"width": 8}), ("restormer", {"width": 8}), ("snr", {}),
        ("ptgrm", {"prior_dims": (8,)})]}
    assert all(n >= 2 for n in counts.values()), counts
    from .spandrel_zoo import RESTORATION, build

    for name in ("restormer", "nafnet"):
        module, cls, kwargs, *_ = RESTORATION[name]
        net = build(module, cls, kwargs)
        keys = list(net.state_dict())
        assert memory.checkpoint_blocks(net, True) >= 3, name
        assert list(net.state_dict()) == keys  # the same checkpoint keys
        x = torch.rand(1, 3, 32, 32)
        net.train()
        with torch.no_grad():
            ref = net(x)
        assert torch.equal(net(x), ref)


def test_sigkill_and_resume_of_a_micro_batched_run_equal_an_uninterrupted_one(data, tmp_path):
    sets = TINY + ["model.baseline_args.width=16", "model.baseline_args.depth=3", "data.crop=48", "data.batch_size=4",
                   "run.checkpoint_every=3", "run.micro_batch=2", "run.checkpointing=both", "priors.noise=0.01"]
    args = ["train", "--manifest", str(data["manifest"]), "--priors", str(data["store"]), "--mode", "joint",
            "--steps", "16", "--save-every", "3", "--seed", "3", "--quiet"] + [a for s in sets for a in ("--set", s)]
    run = tmp_path / "killed"
    proc = _ptg_no_fm(args + ["--out", str(run)])
    target = run / "checkpoints" / "step_000006.pt"
    kill_at(proc, target, run)
    proc = _ptg_no_fm(args + ["--out", str(run), "--resume"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    resumed = json.loads((run / "final.json").read_text())
    cfg = resolve(overrides={"out": str(tmp_path / "straight"), "mode": "joint", "steps": 16, "seed": 3,
                             "run": {"save_every": 3},
                             "data": {"manifest": str(data["manifest"]), "priors": [str(data["store"])]}}, sets=sets)
    assert resumed["digest"] == train(cfg)["digest"]


# A config whose activations (tens of MB) dwarf the noise of measuring resident memory.
PLAN_SETS = ["--set", "model.baseline_args.width=16", "--set", "model.baseline_args.depth=3", "--set", "data.crop=64"]


def _train_cli(data, out, *extra):
    args = ["train", "--manifest", str(data["manifest"]), "--priors", str(data["store"]), "--out", str(out),
            "--steps", "1", "--quiet"]
    for s in BATCH8:
        args += ["--set", s]
    return main(args + PLAN_SETS + list(extra))


def test_max_memory_picks_a_measured_plan_within_the_budget_and_resume_keeps_it(data, tmp_path, capsys):
    assert _train_cli(data, tmp_path / "free", "--max-memory", "8GiB") == 0
    plan = load_checkpoint(tmp_path / "free" / "checkpoints" / "last.pt")["config"]["run"]["memory_plan"]
    peaks = {(m["micro_batch"], m["checkpointing"]): m["peak"] for m in plan["measured"]}
    assert plan["peak"] == peaks[plan["micro_batch"], plan["checkpointing"]] <= 8 * 2**30
    assert plan["micro_batch"] > 1 and plan["peak"] > 1.5 * peaks[1, "none"]  # more memory to go faster
    assert f"memory plan: {plan['line']}" in capsys.readouterr().err
    budget = (peaks[1, "none"] + plan["peak"]) // 2
    assert _train_cli(data, tmp_path / "tight", "--max-memory", f"{budget}B") == 0
    line = capsys.readouterr().err
    saved = load_checkpoint(tmp_path / "tight" / "checkpoints" / "last.pt")["config"]["run"]
    assert saved["memory_plan"]["peak"] <= budget
    assert (saved["micro_batch"], saved["checkpointing"]) != (plan["micro_batch"], plan["checkpointing"])
    assert f"memory plan: micro-batch {saved['micro_batch']} × " in line and f"checkpointing {saved['checkpointing']}" in line
    # resuming keeps the plan: nothing is measured again
    assert main(["train", "--out", str(tmp_path / "tight"), "--resume", "--steps", "2", "--quiet"]) == 0
    again = load_checkpoint(tmp_path / "tight" / "checkpoints" / "last.pt")["config"]["run"]
    assert again["memory_plan"] == saved["memory_plan"] and "memory plan" not in capsys.readouterr().err


def test_an_impossible_budget_is_one_line_exit_1_and_writes_nothing(data, tmp_path, capsys):
    out = tmp_path / "none"
    assert _train_cli(data, out, "--max-memory", "6MiB") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("data.images:")]
    assert len(err) == 1, err
    assert err[0].startswith("error: run.max_memory=6.0 MiB is too little: even micro-batch 1 with checkpointing both needs")
    assert re.search(r"crop \d+ fits \(.* MiB\): pass --crop \d+|no crop fits", err[0]), err[0]
    assert not out.exists()


def test_spandrel_nafnet_under_fp16_norms_in_float32_and_trains_finite(tmp_path):
    from .spandrel_zoo import RESTORATION, build

    module, cls, kwargs, *_ = RESTORATION["nafnet"]
    raw, guarded = build(module, cls, kwargs).train(), build(module, cls, kwargs).train()
    assert memory.guard_fp16(guarded) >= 3
    seen = {}
    norm = next(m for m in raw.modules() if type(m).__name__ == "LayerNorm2d")
    x = (torch.rand(1, 8, 8, 8) * 2000).half()  # activations this large: their square overflows float16
    ref = norm.float()(x.float())
    seen["raw"] = norm(x)
    seen["guarded"] = memory._float32_class(type(norm)).forward(norm, x)
    assert not torch.allclose(seen["raw"].float(), ref, atol=1e-2)  # spandrel's own norm loses the values
    assert torch.allclose(seen["guarded"].float(), ref, atol=1e-2)
    opt = torch.optim.Adam(guarded.parameters(), lr=1e-3)
    torch.manual_seed(0)
    for _ in range(3):
        xb = torch.rand(2, 3, 32, 32) * 300
        with torch.autocast("cpu", dtype=torch.float16):
            loss = (guarded(xb).float() - xb).abs().mean()
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in guarded.parameters() if p.grad is not None)
        opt.step()


def test_compile_and_channels_last_keep_state_dict_keys(data, tmp_path):
    f = create_model("unet", width=4, depth=2)
    keys = list(f.state_dict())
    memory.speed_switches([f, None], channels_last=True, compile_=True)
    assert list(f.state_dict()) == keys and not any("_orig_mod" in k for k in keys)
    final = train(_cfg(data, tmp_path / "nhwc", sets=["run.channels_last=true", "run.ema=0.5"]))
    ck = load_checkpoint(tmp_path / "nhwc" / "checkpoints" / "last.pt")
    plain = train(_cfg(data, tmp_path / "plain", sets=["run.ema=0.5"]))
    assert final["step"] == plain["step"] == 1
    assert set(ck["ema"]["baseline"]) == set(ck["baseline"]["state_dict"])
    p1, p2 = _params(tmp_path / "nhwc"), _params(tmp_path / "plain")
    assert max((p1[k] - p2[k]).abs().max().item() for k in p1) <= 1e-5


def test_torchrun_with_micro_batches_matches_one_process(data, tmp_path):
    """2 gloo ranks × 2 micro-batches of 1 (the first under no_sync), checkpointing on = 1 process, batch 4."""
    import os
    import subprocess
    import sys

    from .test_train_dist import SETS, _torchrun

    args = ["train", "--manifest", str(data["manifest"]), "--priors", str(data["store"]), "--mode", "joint", "--steps",
            "3", "--seed", "3", "--quiet"] + [a for s in SETS for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    one = subprocess.run([sys.executable, "-m", "ptg.cli.app", *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    micro = ["--set", "run.micro_batch=1", "--set", "run.checkpointing=both"]
    two = subprocess.run([*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "ptg.cli.app", *args, *micro,
                          "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    for part in ("baseline", "refiner"):
        for k, v in a[part]["state_dict"].items():
            torch.testing.assert_close(b[part]["state_dict"][k], v, rtol=1e-4, atol=1e-5, msg=f"{part}.{k}")
