"""`ptg export` of runs on a pre-trained F: a spandrel F's weights travel as safetensors with its
architecture and SHA-256 and restore bit-identically with the original file gone; a black box and
cached outputs are exported by name (their weights ship in their package, or there is no network)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("spandrel")

from ptg.cli.app import main
from ptg.pipeline.core.imageio import read_image
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.ptgrm.artifacts import load
from ptg.ptgrm.models.spandrel_f import file_sha256

from .spandrel_zoo import RESTORATION, build, save
from .test_train_units import make_samples, make_store

_SETS = ["--set", "model.refiner_args.width=4", "--set", "data.val_max_images=1", "--set", "run.threads=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    manifest = make_samples(root / "samples")
    return {"manifest": manifest, "store": make_store(root / "s8.zarr", manifest, dim=8)}


def _train(data, out: Path, *f_args: str) -> None:
    assert main(["train", "--mode", "refine", *f_args, "--manifest", str(data["manifest"]), "--priors", str(data["store"]),
                 "--out", str(out), "--steps", "2", "--crop", "32", "--batch-size", "2", "-q", *_SETS]) == 0


def _restore(ckpt: Path, photo: Path, out: Path, store: Path) -> np.ndarray:
    assert main(["restore", "--ckpt", str(ckpt), "-i", str(photo), "-o", str(out), "--device", "cpu", "--priors",
                 str(store)]) == 0
    return read_image(out / f"{photo.stem}.png")


@pytest.mark.parametrize("name", ["nafnet", "restormer"])
def test_spandrel_export_restores_bit_identically_without_the_file(name, data, tmp_path):
    weights = save(build(*RESTORATION[name][:3]), tmp_path / f"{name}.pth")
    sha = file_sha256(weights)
    run, exp = tmp_path / "run", tmp_path / "export"
    _train(data, run, "--baseline", "spandrel", "--baseline-weights", str(weights))
    photo = load_manifest(data["manifest"]).split("test")[0].input
    from_run = _restore(run, photo, tmp_path / "r-run", data["store"])
    assert main(["export", str(run), "--out", str(exp)]) == 0
    weights.unlink()  # the original checkpoint is gone
    cfg = json.loads((exp / "config.json").read_text())
    base = cfg["baseline"]
    assert base["network"] == {"kind": "spandrel", "weights_sha256": sha, "architecture": RESTORATION[name][3]}
    assert base["file"] == "baseline.safetensors" and "weights" not in base["args"]
    assert np.array_equal(_restore(exp, photo, tmp_path / "r-exp", data["store"]), from_run)
    _, info = load(exp)
    assert info.baseline.kind == "spandrel" and info.baseline.weights_sha256 == sha


def test_black_box_and_cached_outputs_export_by_name(data, tmp_path):
    if importlib.util.find_spec("pyoidn") is None:
        pytest.skip("pyoidn is not installed")
    run, exp = tmp_path / "run", tmp_path / "export"
    _train(data, run, "--baseline", "oidn")
    photo = load_manifest(data["manifest"]).split("test")[0].input
    from_run = _restore(run, photo, tmp_path / "r-run", data["store"])
    assert main(["export", str(run), "--out", str(exp)]) == 0
    base = json.loads((exp / "config.json").read_text())["baseline"]
    assert base["file"] is None and base["network"]["kind"] == "black-box"
    assert not (exp / "baseline.safetensors").exists()
    assert np.array_equal(_restore(exp, photo, tmp_path / "r-exp", data["store"]), from_run)
    # an outputs-only run exports by name too, and its export refuses new photos like the run
    outs, cached_run, cexp = tmp_path / "outs", tmp_path / "cached", tmp_path / "cexp"
    assert main(["extract-outputs", "--manifest", str(data["manifest"]), "--baseline", "oidn", "--out", str(outs)]) == 0
    _train(data, cached_run, "--f-outputs", str(outs))
    assert main(["export", str(cached_run), "--out", str(cexp)]) == 0
    assert json.loads((cexp / "config.json").read_text())["baseline"]["network"]["kind"] == "cached-outputs"
    assert main(["restore", "--ckpt", str(cexp), "-i", str(photo), "-o", str(tmp_path / "no"), "--priors",
                 str(data["store"])]) == 1
    assert main(["eval", "--ckpt", str(cexp), "--f-outputs", str(outs), "-o", str(tmp_path / "ev"), "--device", "cpu",
                 "--grids", "0", "--manifest", str(data["manifest"])]) == 0
