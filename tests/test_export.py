"""One prior transform everywhere: each control at `ptg eval` equals the same control at
validation; `ptg export` -> `ptg restore` from the folder is bit-identical to the run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ptg.cli.app import main
from ptg.pipeline.core.imageio import read_image, to_uint8
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.pipeline.storage.store import open_priors, sample_keys
from ptg.ptgrm.artifacts import load
from ptg.ptgrm.infer import run_padded_tiled
from ptg.ptgrm.train.data import ValDataset, load_tables
from ptg.ptgrm.train.run_utils import Dist, validate
from ptg.ptgrm.train.trainer import train

from .test_train import _cfg
from .test_train_units import make_samples, make_store

WHOLE = ["data.val_max_images=0", "data.val_crop=0", "model.baseline=dncnn", "model.baseline_args={width: 4, depth: 2}"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    manifest = make_samples(root / "samples")
    return {"root": root, "manifest": manifest, "store": make_store(root / "s16.zarr", manifest, dim=16)}


def _validation_outputs(run, data):
    """What the trainer's validation computes, rebuilt from the run's checkpoint."""
    r, _ = load(run)
    val = load_manifest(data["manifest"]).split("test")
    tables = load_tables([open_priors(data["store"])], sample_keys(val), ("identity",))
    ds = ValDataset(val, tables, r.transform.order(len(val)))
    metrics = validate(r, ds, Dist(), torch.device("cpu"), None)
    outs = {}
    for i, s in enumerate(val):
        item = ds[i]
        _, ibar = run_padded_tiled(lambda t: r.restore(t, [p[None] for p in item["priors"]]), item["x"][None], r.multiple)
        outs[s.id] = to_uint8(ibar[0].clamp(0, 1).permute(1, 2, 0).numpy())
    return metrics, outs


@pytest.mark.parametrize("control,normalize", [("real", "l2"), ("shuffle", "l2"), ("constant", "standardize"),
                                               ("zero", "none")])
def test_each_control_at_eval_equals_validation(data, tmp_path, control, normalize):
    run = tmp_path / "run"
    final = train(_cfg(data, run, "joint", steps=2, sets=WHOLE + [f"priors.control={control}",
                                                                  f"priors.normalize={normalize}"]))
    metrics, outs = _validation_outputs(run, data)
    assert metrics == final["val"]  # the loaded model validates exactly as the trainer did
    assert main(["eval", "--run", str(run), "--out", str(tmp_path / "eval"), "--grids", "0"]) == 0
    for sid, want in outs.items():
        np.testing.assert_array_equal(to_uint8(read_image(tmp_path / "eval" / "images" / "ptgrm" / f"{sid}.png")), want)
    info = json.loads((tmp_path / "eval" / "metrics.json").read_text())["info"]
    assert info["checkpoint"].endswith("last.pt") and info["prior_transform"] == f"normalize={normalize}, control={control}"


def test_export_then_restore_is_bit_identical_to_the_run(data, tmp_path, capsys):
    run = tmp_path / "run"
    train(_cfg(data, run, "joint", steps=2, sets=WHOLE + ["priors.control=shuffle", "priors.normalize=standardize",
                                                          "run.ema=0.5"]))
    exp = tmp_path / "exported"
    assert main(["export", str(run), "--out", str(exp)]) == 0
    cfg = json.loads((exp / "config.json").read_text())
    assert cfg["format"] == "ptg-export/1" and cfg["source"]["weights"] == "ema" and cfg["source"]["step"] == 2
    assert cfg["prior_transform"] == {"dims": [16], "normalize": "standardize", "control": "shuffle", "seed": 0}
    assert {p.name for p in exp.iterdir()} >= {"config.json", "baseline.safetensors", "refiner.safetensors",
                                               "prior_stats.safetensors"}
    inp = data["manifest"].parent / "input"
    common = ["--input", str(inp), "--priors", str(data["store"]), "--save-baseline"]
    assert main(["restore", "--ckpt", str(run)] + common + ["--output", str(tmp_path / "a")]) == 0
    assert main(["restore", "--ckpt", str(exp)] + common + ["--output", str(tmp_path / "b")]) == 0
    names = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert names and names == sorted(p.name for p in (tmp_path / "b").glob("*.png"))
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes()
        assert (tmp_path / "a" / "baseline" / n).read_bytes() == (tmp_path / "b" / "baseline" / n).read_bytes()
    # eval reads the export folder too, and records it
    assert main(["eval", "--ckpt", str(exp), "--out", str(tmp_path / "e"), "--grids", "0", "--no-images"]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["info"]["checkpoint"] == str(exp)
    # a changed weights file is caught by its recorded hash
    (exp / "refiner.safetensors").write_bytes((exp / "refiner.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    capsys.readouterr()
    assert main(["restore", "--ckpt", str(exp)] + common + ["--output", str(tmp_path / "c")]) == 1
    assert "does not match the SHA-256" in capsys.readouterr().err
