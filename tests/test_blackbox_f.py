"""Black-box frozen Fs with real shipped weights: OIDN (pyoidn) and Zero-DCE++ (neuro-low-light).

Each trains R end to end in refine mode on the real sample photos of `ptg data samples`
(denoise / lowlight), is refused in a mode that would need gradients through F, and really
restores (its shipped weights are the trained ones, not a random init).
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from ptg.cli.app import main
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.imageio import read_image
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.ptgrm.models import create_model, get_model_spec
from ptg.ptgrm.train.checkpoint import load_checkpoint

from .test_train_units import make_store


def _need(pkg: str) -> None:
    """Skip without the package; found, not imported (neuro-low-light's __init__ imports cv2)."""
    import importlib.util

    if importlib.util.find_spec(pkg) is None:
        pytest.skip(f"{pkg} is not installed")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("bb")
    out = {}
    for task in ("denoise", "lowlight"):
        assert main(["data", "samples", "--out", str(root / task), "--task", task, "--max-side", "96", "--no-opencv"]) == 0
        manifest = root / task / "manifest.jsonl"
        out[task] = {"manifest": manifest, "store": make_store(root / f"{task}.zarr", manifest, dim=8)}
    return out


def _pair(manifest):
    s = load_manifest(manifest).split("test")[0]
    return read_image(s.input), read_image(s.target)


def _run(x: np.ndarray, name: str) -> np.ndarray:
    f = create_model(name).eval()
    with torch.no_grad():
        y = f(torch.from_numpy(x).permute(2, 0, 1)[None].float())
    return y[0].permute(1, 2, 0).numpy()


def test_oidn_denoises_real_noise(samples):
    _need("pyoidn")
    x, target = _pair(samples["denoise"]["manifest"])
    assert _psnr(_run(x, "oidn"), target) > _psnr(x, target) + 3  # the shipped weights really denoise


def test_zero_dce_brightens_real_low_light(samples):
    _need("neuro_low_light")
    x, target = _pair(samples["lowlight"]["manifest"])
    y = _run(x, "zero-dce")
    assert y.mean() > x.mean() + 0.05 and _psnr(y, target) > _psnr(x, target)
    assert "neuro_low_light" not in sys.modules  # its package __init__ (which imports cv2) never ran


@pytest.mark.parametrize("name,task,pkg", [("oidn", "denoise", "pyoidn"), ("zero-dce", "lowlight", "neuro_low_light")])
def test_black_box_refine_trains_end_to_end(name, task, pkg, samples, tmp_path):
    _need(pkg)
    d = samples[task]
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--mode", "refine", "--baseline", name, "--manifest", str(d["manifest"]),
            "--priors", str(d["store"]), "--steps", "3", "--crop", "32", "--batch-size", "2", "-q",
            "--set", "model.refiner_args.width=4", "--set", "model.refiner_args.long_blocks=1",
            "--set", "run.threads=1", "--set", "data.val_max_images=1", "--set", "data.val_crop=48"]
    assert main(args) == 0
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ck["step"] == 3 and ck["baseline"]["name"] == name and ck["refiner"] is not None
    assert set(ck["last_val"]) >= {"psnr"}  # validated on the test photo through F and R
    spec = get_model_spec(name)
    assert spec.black_box and spec.external
    assert create_model(name).runs_on_new_photos


@pytest.mark.parametrize("mode", ["joint", "baseline"])
def test_black_box_refused_where_gradients_would_flow(mode, samples, tmp_path):
    _need("pyoidn")
    d = samples["denoise"]
    args = ["train", "--out", str(tmp_path / mode), "--mode", mode, "--baseline", "oidn", "--manifest",
            str(d["manifest"]), "--priors", str(d["store"]), "--steps", "1", "--crop", "32", "-q"]
    assert main(args) == 1  # one clear line, exit 1
    with pytest.raises(PtgError, match="black box"):
        _raise_through(args)


def _raise_through(args):
    """Run the train command's library path so the PtgError itself is seen (main() turns it into exit 1)."""
    from ptg.ptgrm.train.config import resolve
    from ptg.ptgrm.train.trainer import train

    i = args.index
    cfg = resolve(overrides={"out": args[i("--out") + 1], "mode": args[i("--mode") + 1], "steps": 1,
                             "model": {"baseline": "oidn"},
                             "data": {"manifest": args[i("--manifest") + 1], "priors": [args[i("--priors") + 1]],
                                      "crop": 32}})
    train(cfg)


def test_zero_dce_refuses_unsafe_or_wrong_weights(tmp_path):
    _need("neuro_low_light")

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    bad = tmp_path / "bad.pth"
    torch.save({"model_state_dict": Payload()}, bad)
    with pytest.raises(PtgError, match="(?i)nothing in it was run"):  # the one reader's wording: "Nothing in it was run"
        create_model("zero-dce", weights=str(bad))
    other = tmp_path / "other.pth"
    torch.save({"model_state_dict": {"conv.weight": torch.zeros(1)}}, other)
    with pytest.raises(PtgError, match="do not fit"):
        create_model("zero-dce", weights=str(other))
