"""`ptg restore` end to end: a checkpoint in `ptg train`'s format, priors from a store or computed
with the recorded encoder (a tiny random-init CLIP saved as a local config), tiling, errors."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ptg.cli.app import main
from ptg.pipeline.encoders import EncoderSpec
from ptg.pipeline.priors.extract import extract_priors
from ptg.pipeline.core.imageio import read_image, write_image
from ptg.pipeline.datasets.manifest import write_manifest
from ptg.pipeline.storage.store import RandomInitWarning
from ptg.ptgrm.models import create_model
from ptg.pipeline.core.fsio import atomic_save as save_atomic
from ptg.ptgrm.train.checkpoint import FORMAT, load_checkpoint

torch.set_num_threads(1)
PHOTOS = ("astronaut", "chelsea", "coffee")


def build_run(root: Path, side: int = 40) -> dict[str, Path]:
    """Paired noisy/clean photos, a priors store (tiny random-init CLIP) and a run folder whose
    checkpoint holds an untrained tiny DnCNN F and PTG-RM R (format of `ptg train`)."""
    from skimage import data, transform

    rng = np.random.default_rng(0)
    rows = []
    for split, names in (("test", PHOTOS), ("train", ("rocket",))):
        for name in names:
            clean = transform.resize(getattr(data, name)(), (side, side + 8), anti_aliasing=True).astype(np.float32)
            noisy = np.clip(clean + rng.normal(0, 0.08, clean.shape), 0, 1).astype(np.float32)
            write_image(root / "data" / f"{name}_gt.png", clean)
            write_image(root / "data" / f"{name}_in.png", noisy)
            rows.append({"id": name, "input": f"{name}_in.png", "target": f"{name}_gt.png", "split": split})
    manifest = write_manifest(root / "data" / "m.jsonl", rows)

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1}}
    (root / "tiny-clip.json").write_text(json.dumps(cfg))
    spec = EncoderSpec("clip", arch=str(root / "tiny-clip.json"), random_init=True, seed=0)
    store = root / "priors.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        extract_priors(manifest, spec, out=store, loader_workers=0)
    from ptg.pipeline.storage.store import open_priors

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        reader = open_priors(store)
    entry = {"path": str(store), "dim": reader.dim, "views": list(reader.views), "metadata": reader.metadata}

    torch.manual_seed(0)
    f_args = {"width": 8, "depth": 3}
    r_args = {"prior_dims": [reader.dim], "width": 8, "long_blocks": 1, "prior_hidden": 16, "prior_embed": 8}
    f, r = create_model("dncnn", **f_args), create_model("ptgrm", **r_args)
    with torch.no_grad():  # make R's effect visible: an untrained decoder starts near zero
        for p in r.decoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = {
        "format": FORMAT, "step": 7, "mode": "joint",
        "config": {"data": {"manifest": str(manifest), "root": None, "priors": [str(store)]},
                   "model": {"baseline": "dncnn", "refiner": "ptgrm"}, "priors": {"control": "real", "l2_normalize": True}},
        "priors": [entry],
        "baseline": {"name": "dncnn", "args": f_args, "kind": "restorer", "state_dict": f.state_dict()},
        "refiner": {"name": "ptgrm", "args": r_args, "state_dict": r.state_dict()},
        "ema": None,
    }
    run = root / "run"
    save_atomic(ckpt, run / "checkpoints" / "best.pt")
    return {"manifest": manifest, "store": store, "run": run, "data": root / "data"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    return build_run(tmp_path_factory.mktemp("restore"))


def _inputs(built: dict[str, Path], tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for name in PHOTOS:
        (d / f"{name}.png").write_bytes((built["data"] / f"{name}_in.png").read_bytes())  # same bytes: same store keys
    return d


@pytest.mark.filterwarnings("ignore::ptg.pipeline.storage.store.RandomInitWarning")
def test_restore_with_store_and_with_recorded_encoder_agree(built, tmp_path) -> None:
    inp = _inputs(built, tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["restore", "--ckpt", str(built["run"]), "--input", str(inp), "--output", str(a),
                 "--priors", str(built["store"]), "--save-baseline"]) == 0
    assert main(["restore", "--ckpt", str(built["run"] / "checkpoints" / "best.pt"), "--input", str(inp), "--output", str(b)]) == 0
    for name in PHOTOS:
        ra, rb, fa = read_image(a / f"{name}.png"), read_image(b / f"{name}.png"), read_image(a / "baseline" / f"{name}.png")
        assert ra.shape == read_image(inp / f"{name}.png").shape
        # priors computed here, rounded to the store's float16, give the same restored image
        assert np.abs(ra - rb).max() <= 1 / 255 + 1e-6
        assert np.abs(ra - fa).max() > 2 / 255  # R changed F's output: F + R was written, not F


@pytest.mark.filterwarnings("ignore::ptg.pipeline.storage.store.RandomInitWarning")
def test_restore_tiled_single_file(built, tmp_path) -> None:
    inp = _inputs(built, tmp_path)
    whole, tiled = tmp_path / "w", tmp_path / "t"
    f = inp / "chelsea.png"
    assert main(["restore", "--ckpt", str(built["run"]), "-i", str(f), "-o", str(whole), "--priors", str(built["store"])]) == 0
    assert main(["restore", "--ckpt", str(built["run"]), "-i", str(f), "-o", str(tiled), "--priors", str(built["store"]),
                 "--tile", "32", "--overlap", "8"]) == 0
    w, t = read_image(whole / "chelsea.png"), read_image(tiled / "chelsea.png")
    assert w.shape == t.shape
    # R pools globally (channel attention, InstanceNorm): tiling changes its output, but only slightly
    assert 0 < np.abs(w - t).mean() < 0.05


def test_restore_without_extract_libraries_says_how_to_fix(built, tmp_path, monkeypatch, capsys) -> None:
    inp = _inputs(built, tmp_path)
    monkeypatch.setitem(sys.modules, "open_clip", None)  # as if the extract extra were not installed
    assert main(["restore", "--ckpt", str(built["run"]), "--input", str(inp), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "open_clip" in err and "extract extra" in err and "--priors" in err


@pytest.mark.filterwarnings("ignore::ptg.pipeline.storage.store.RandomInitWarning")
def test_restore_image_missing_from_store(built, tmp_path, capsys) -> None:
    other = tmp_path / "new"
    other.mkdir()
    img = read_image(built["data"] / "astronaut_in.png")
    write_image(other / "flipped.png", img[:, ::-1])
    assert main(["restore", "--ckpt", str(built["run"]), "--input", str(other), "--output", str(tmp_path / "o"),
                 "--priors", str(built["store"])]) == 1
    err = capsys.readouterr().err
    assert "flipped.png" in err and "ptg extract-priors" in err


@pytest.mark.filterwarnings("ignore::ptg.pipeline.storage.store.RandomInitWarning")
def test_restore_refuses_priors_of_other_weights(built, tmp_path, capsys) -> None:
    ckpt = load_checkpoint(built["run"] / "checkpoints" / "best.pt")
    ckpt["priors"][0]["metadata"] = {**ckpt["priors"][0]["metadata"], "fingerprint": "0" * 64}
    save_atomic(ckpt, tmp_path / "other.pt")
    inp = _inputs(built, tmp_path)
    args = ["restore", "--ckpt", str(tmp_path / "other.pt"), "--input", str(inp), "--output", str(tmp_path / "o")]
    assert main(args + ["--priors", str(built["store"])]) == 1  # the store's weights are not the trained-on ones
    assert "0000000000000000" in capsys.readouterr().err
    assert main(args) == 1  # the encoder rebuilt here is not the trained-on one either
    err = capsys.readouterr().err
    assert "random-init-0" in err and "--priors" in err
