"""`torchrun --nproc_per_node 2` runs `ptg train` with DistributedDataParallel (gloo, 2 CPU
processes) and ends where a single process with the same global batch ends."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ptg.ptgrm.train.checkpoint import load_checkpoint

from .test_train_units import make_samples, make_store

SETS = ["data.crop=32", "data.batch_size=4", "model.baseline_args.width=4", "model.baseline_args.depth=2",
        "model.refiner_args.width=4", "model.refiner_args.long_blocks=1", "model.refiner_args.prior_hidden=8",
        "model.refiner_args.prior_embed=8", "run.threads=1", "run.val_every=3", "data.val_crop=48",
        "run.dist_backend=gloo", "run.device=cpu"]


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]


def test_two_gloo_processes_match_one(tmp_path):
    manifest = make_samples(tmp_path / "samples")
    store = make_store(tmp_path / "s.zarr", manifest, dim=16, views="flips")
    args = ["train", "--manifest", str(manifest), "--priors", str(store), "--mode", "joint", "--steps", "6",
            "--seed", "3", "--quiet"] + [a for s in SETS for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    one = subprocess.run([sys.executable, "-m", "ptg.cli.app", *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "ptg.cli.app", *args,
                          "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]

    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 6
    for part in ("baseline", "refiner"):
        for k, v in a[part]["state_dict"].items():
            torch.testing.assert_close(b[part]["state_dict"][k], v, rtol=1e-4, atol=1e-5, msg=f"{part}.{k}")
    fa = json.loads((tmp_path / "one" / "final.json").read_text())
    fb = json.loads((tmp_path / "two" / "final.json").read_text())
    assert fb["world_size"] == 2 and fa["world_size"] == 1
    # validation is sharded over the ranks and all-reduced: the same images give the same means
    assert fb["val"]["psnr"] == pytest.approx(fa["val"]["psnr"], abs=1e-3)
    # rank 0 alone writes the run folder
    assert (tmp_path / "two" / "log.csv").read_text().count("\n") == (tmp_path / "one" / "log.csv").read_text().count("\n")
