"""`ptg train` end to end on tiny networks: every mode, the input errors, the non-finite guard,
checkpoints for inference, and SIGKILL + resume equality in a process that cannot import a
foundation-model library."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ptg.cli.app import main
from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.train import losses as L
from ptg.ptgrm.artifacts import load
from ptg.ptgrm.train.checkpoint import load_checkpoint
from ptg.ptgrm.train.config import resolve
from ptg.ptgrm.train.trainer import NonFiniteLossError, train

from .test_train_units import make_samples, make_store

TINY = [
    "data.crop=32", "data.batch_size=2", "model.baseline_args.width=4", "model.baseline_args.depth=2",
    "model.refiner_args.width=4", "model.refiner_args.long_blocks=1", "model.refiner_args.prior_hidden=8",
    "model.refiner_args.prior_embed=8", "run.threads=1", "data.val_max_images=1", "data.val_crop=48",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    manifest = make_samples(root / "samples")
    return {"root": root, "manifest": manifest, "store": make_store(root / "s16.zarr", manifest, dim=16, views="flips"),
            "store8": make_store(root / "s8.zarr", manifest, dim=8)}


def _cfg(data, out, mode="joint", steps=4, sets=(), priors=("store",)):
    overrides = {"out": str(out), "mode": mode, "steps": steps,
                 "data": {"manifest": str(data["manifest"]), "priors": [str(data[p]) for p in priors]}}
    return resolve(overrides=overrides, sets=TINY + list(sets))


def _state(path):
    return load_checkpoint(path)


@pytest.mark.parametrize("mode,sets", [
    ("baseline", []),
    ("joint", ["run.ema=0.9", "optim.grad_clip=0.5", "priors.dropout=0.2", "priors.lr_mult=0.1"]),
    ("joint", ["model.refiner=ptgrm-large"]),
    ("joint", ["model.refiner_args.use_sve=false", "model.refiner_args.use_channel_attn=false", "priors.control=shuffle"]),
    ("joint", ["model.baseline=unet-f", "model.baseline_args={width: 4, depth: 2, refine_width: 4, refine_long_blocks: 1, prior_hidden: 8, prior_embed: 8}"]),
    ("joint", ["loss.kind=zero-dce"]),
])
def test_modes_train_and_write_the_run_folder(data, tmp_path, mode, sets):
    torch.manual_seed(0)
    cfg = _cfg(data, tmp_path / "run", mode, steps=4, sets=sets + ["run.log_every=2"])
    final = train(cfg)
    run = tmp_path / "run"
    assert final["step"] == 4 and json.loads((run / "final.json").read_text())["digest"] == final["digest"]
    for name in ("config.yaml", "log.csv", "curves.png", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    # no 'val' split: validation reports on test, but best.pt is never chosen on it
    assert not (run / "checkpoints" / "best.pt").exists()
    assert final["val_split"] == "test" and final["best_selection"] is False
    assert any((run / "tb").iterdir())
    ck = _state(run / "checkpoints" / "last.pt")
    assert (ck["refiner"] is None) == (mode == "baseline" or "unet-f" in " ".join(sets))
    assert ck["priors"] == ([] if mode == "baseline" or "ptgrm-large" in " ".join(sets) else [
        {"path": str(data["store"]), "dim": 16, "views": ["identity", "hflip", "vflip", "hvflip"],
         "metadata": ck["priors"][0]["metadata"]}])
    assert set(final["val"]) >= {"psnr", "ssim"}
    if "run.ema=0.9" in sets:
        assert ck["ema"]["baseline"] is not None and ck["ema"]["refiner"] is not None


def test_refine_freezes_f_and_trains_r(data, tmp_path):
    base = train(_cfg(data, tmp_path / "base", "baseline", steps=3, priors=()))
    cfg = _cfg(data, tmp_path / "ref", "refine", steps=3, sets=[f"model.baseline_weights={tmp_path / 'base'}"])
    final = train(cfg)
    f0 = _state(tmp_path / "base" / "checkpoints" / "last.pt")["baseline"]["state_dict"]
    ck = _state(tmp_path / "ref" / "checkpoints" / "last.pt")
    assert all(torch.equal(f0[k], v) for k, v in ck["baseline"]["state_dict"].items())
    assert final["digest"] != base["digest"] and ck["refiner"] is not None
    # the frozen F's PSNR is what R starts from: both are reported
    assert {"psnr", "psnr_f"} <= set(final["val"])
    with pytest.raises(PtgError, match="baseline-weights"):
        train(_cfg(data, tmp_path / "ref2", "refine", steps=1))


def test_inference_bundle_matches_training_outputs(data, tmp_path):
    train(_cfg(data, tmp_path / "run", "joint", steps=2))
    b, info = load(tmp_path / "run")
    assert info.mode == "joint" and b.r is not None and not b.f.training
    assert info.priors[0].dim == 16 and info.priors[0].encoder["name"] == "test-view-feature"
    x = torch.rand(1, 3, 40, 36)
    g = torch.rand(1, 16) * 3
    ihat, ibar = b.restore(x, [g])
    assert ihat.shape == ibar.shape == x.shape and not torch.equal(ihat, ibar)
    # R received the L2-normalised prior, as in training
    with torch.no_grad():
        want = b.r(ihat, x, [g / g.norm()]).out
    torch.testing.assert_close(ibar, want)
    with pytest.raises(PtgError, match="prior dim 16"):
        b.restore(x, [torch.rand(1, 8)])


def test_missing_priors_and_wrong_dimension_errors(data, tmp_path, capsys):
    root = data["root"]
    holes = make_store(root / "holes.zarr", data["manifest"], dim=16, drop_ids=("astronaut",))
    args = ["train", "--manifest", str(data["manifest"]), "--priors", str(holes), "--steps", "2", "--quiet"]
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(args + ["--out", str(tmp_path / "a")] + sets) == 1
    err = capsys.readouterr().err
    assert "1 of 7 manifest rows have no prior" in err and "astronaut" in err and "--allow-missing-priors" in err
    with pytest.warns(UserWarning, match="dropping 1"):
        assert main(args + ["--out", str(tmp_path / "b"), "--allow-missing-priors"] + sets) == 0
    # resuming (or extending) a run with priors of another dimension is refused
    cfg = _cfg(data, tmp_path / "c", steps=2)
    train(cfg)
    wrong = _cfg(data, tmp_path / "c", steps=4, sets=["resume=true"], priors=("store8",))
    with pytest.raises(PtgError, match=r"prior dims \[16\].*hold \[8\]"):
        train(wrong)
    with pytest.raises(PtgError, match="prior_dims=.*hold dims"):
        train(_cfg(data, tmp_path / "d", steps=1, sets=["model.refiner_args.prior_dims=[32]"]))
    # an existing run is never overwritten silently
    with pytest.raises(PtgError, match="--resume"):
        train(_cfg(data, tmp_path / "c", steps=2))


def test_nonfinite_losses_are_skipped_then_stop(data, tmp_path, monkeypatch):
    real = L.charbonnier
    calls = {"n": 0}

    def flaky(pred, target, eps=1e-3):
        calls["n"] += 1
        v = real(pred, target, eps)
        # joint mode evaluates Lg twice per step: poison both calls of steps 2 and 3
        return v * float("nan") if calls["n"] in (3, 4, 5, 6) else v

    monkeypatch.setattr(L, "charbonnier", flaky)
    final = train(_cfg(data, tmp_path / "a", steps=5, sets=["run.max_nonfinite=3"]))
    assert final["skipped_steps"] == 2 and final["step"] == 5
    assert all(torch.isfinite(p).all() for p in load(tmp_path / "a")[0].r.parameters())

    monkeypatch.setattr(L, "charbonnier", lambda pred, target, eps=1e-3: real(pred, target, eps) * float("nan"))
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite losses"):
        train(_cfg(data, tmp_path / "b", steps=10, sets=["run.max_nonfinite=3"]))
    assert (tmp_path / "b" / "checkpoints" / "nonfinite.pt").is_file()


# A wrapper that makes foundation-model imports fail, then runs `ptg` with the given arguments.
_NO_FM = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    BLOCKED = ("open_clip", "transformers", "diffusers")

    class Block(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    try:
        import open_clip  # noqa: F401
        raise SystemExit("the import blocker does not work")
    except ImportError:
        pass
    from ptg.cli.app import main
    rc = main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded
    sys.exit(rc)
""")


def _ptg_no_fm(args, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _NO_FM, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def kill_at(proc: subprocess.Popen, target, run) -> None:
    """SIGKILL a training process as soon as it has written ``target`` (a checkpoint), before it finishes."""
    deadline = time.time() + 120
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert target.exists(), proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "final.json").exists(), "the run finished before it could be killed; make it slower"


def test_sigkill_and_resume_equal_an_uninterrupted_run_without_foundation_models(data, tmp_path):
    # Wider networks than elsewhere so the 30 steps take long enough to be killed midway.
    sets = TINY + ["model.baseline_args.width=16", "model.baseline_args.depth=3", "data.crop=48", "data.batch_size=4",
                   "run.val_every=10", "run.checkpoint_every=5", "priors.noise=0.01", "priors.dropout=0.1"]
    args = ["train", "--manifest", str(data["manifest"]), "--priors", str(data["store"]), "--baseline", "unet",
            "--mode", "joint", "--steps", "30", "--save-every", "5", "--seed", "7", "--quiet"]
    args += [a for s in sets for a in ("--set", s)]
    run = tmp_path / "killed"
    proc = _ptg_no_fm(args + ["--out", str(run)])
    target = run / "checkpoints" / "step_000010.pt"
    kill_at(proc, target, run)
    killed_at = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 10 <= killed_at < 30

    proc = _ptg_no_fm(args + ["--out", str(run), "--resume"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    resumed = json.loads((run / "final.json").read_text())

    cfg = resolve(overrides={"out": str(tmp_path / "straight"), "mode": "joint", "steps": 30, "seed": 7,
                             "model": {"baseline": "unet"}, "run": {"save_every": 5},
                             "data": {"manifest": str(data["manifest"]), "priors": [str(data["store"])]}}, sets=sets)
    straight = train(cfg)
    assert resumed["step"] == straight["step"] == 30
    assert resumed["digest"] == straight["digest"]
    assert resumed["val"] == straight["val"]
    steps = [int(r.split(",")[0]) for r in (run / "log.csv").read_text().splitlines()[1:]]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no duplicated rows after resume
