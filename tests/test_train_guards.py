"""Training guards a new user meets: a crop too large for the photos, an image changed on disk
during a run, and a run too short (or too slow) to learn."""
from __future__ import annotations

import os

import numpy as np
import pytest

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.imageio import read_image, write_image
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.ptgrm.train.config import resolve
from ptg.ptgrm.train.trainer import train

from .test_train import TINY
from .test_train_units import make_samples, make_store


@pytest.fixture()
def data(tmp_path):
    manifest = make_samples(tmp_path / "samples")
    return {"manifest": manifest, "store": make_store(tmp_path / "s.zarr", manifest, dim=16)}


def _cfg(data, out, steps=6, sets=()):
    overrides = {"out": str(out), "mode": "joint", "steps": steps,
                 "data": {"manifest": str(data["manifest"]), "priors": [str(data["store"])]}}
    return resolve(overrides=overrides, sets=TINY + ["run.log_every=2"] + list(sets))


def test_crop_larger_than_the_photos_names_a_crop_that_fits(data, tmp_path):
    with pytest.raises(PtgError, match=r"smaller than the crop 512 .*smallest side is \d+ px\): train with --crop \d+"):
        train(_cfg(data, tmp_path / "run", sets=["data.crop=512"]))


def test_an_image_changed_during_training_stops_the_run(data, tmp_path):
    first = next(s for s in load_manifest(data["manifest"]).samples if s.split == "train")
    img = read_image(first.input)

    def edit_at_step_2(n, **fields):
        edit_at_step_2.steps += n
        if edit_at_step_2.steps == 2:
            write_image(first.input, np.clip(img[::-1] * 0.5, 0, 1))  # new content, same name

    edit_at_step_2.steps = 0
    with pytest.raises(PtgError, match=rf"the image {first.input} changed on disk after training started"):
        train(_cfg(data, tmp_path / "run", steps=40), on_progress=edit_at_step_2)


def test_touching_an_image_is_not_a_change(data, tmp_path):
    paths = [s.input for s in load_manifest(data["manifest"]).samples]

    def touch_all(n, **fields):
        for p in paths:
            os.utime(p, ns=(1, 1))  # new mtime, same bytes

    final = train(_cfg(data, tmp_path / "run", steps=4), on_progress=touch_all)
    assert final["step"] == 4


def test_a_run_that_did_not_learn_says_so(data, tmp_path):
    with pytest.warns(UserWarning, match=r"the training loss barely moved .* Train longer \(--steps\) or raise the learning rate"):
        train(_cfg(data, tmp_path / "run", steps=6, sets=["optim.lr=1e-12", "optim.eta_min=0"]))


def test_lazy_priors_train_exactly_as_in_memory(data, tmp_path, monkeypatch):
    """data.priors_in_memory=false reads the memory-mapped row cache: the same bits, the same run."""
    monkeypatch.setenv("PTG_CACHE", str(tmp_path / "cache"))
    sets = ["priors.normalize=standardize", "priors.control=constant"]
    ram = train(_cfg(data, tmp_path / "ram", steps=4, sets=sets + ["data.priors_in_memory=true"]))
    lazy = train(_cfg(data, tmp_path / "lazy", steps=4, sets=sets + ["data.priors_in_memory=false"]))
    assert any((tmp_path / "cache").rglob("*.npy"))  # the lazy run really read the row cache
    assert lazy["digest"] == ram["digest"] and lazy["val"] == ram["val"]
