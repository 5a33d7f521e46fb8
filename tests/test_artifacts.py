"""`ptg.ptgrm.artifacts`: one loading path for every on-disk form of a trained model, a typed
`RunInfo`, and one weight picker (the legacy fixtures are run folder, export and student)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.artifacts import NETWORK_KINDS, NetworkSpec, PriorStoreInfo, RunInfo, load, pick_weights
from ptg.ptgrm.restorer import Restorer

LEGACY = Path(__file__).parent / "fixtures" / "legacy"


@pytest.mark.parametrize("name", ["run", "export"])
def test_load_returns_the_networks_and_a_typed_description(name):
    r, info = load(LEGACY / name)
    assert isinstance(r, Restorer) and not hasattr(r, "info") and not r.training
    assert isinstance(info, RunInfo) and info.mode == "joint" and info.step == 2 and info.weights == "ema"
    assert info.baseline == NetworkSpec("dncnn", {"width": 4, "depth": 2}) and info.baseline.kind in NETWORK_KINDS
    assert info.refiner is not None and info.refiner.name == "ptgrm" and info.refiner.args["prior_dims"] == [16]
    store = info.priors[0]
    assert isinstance(store, PriorStoreInfo) and store.dim == 16 and store.fingerprint == "test-16"
    assert store.encoder["name"] == "test-view-feature" and store.dtype == "float32"
    assert info.transform.normalize == "standardize" and r.transform is info.transform
    if name == "export":
        assert info.exported_from.endswith("last.pt") and len(info.students) == 1 and info.source == str(LEGACY / name)
    else:
        assert info.source.endswith("last.pt") and info.run_dir == LEGACY / "run" and info.students == ()


def test_the_export_records_what_the_run_records():
    _, run = load(LEGACY / "run")
    _, exp = load(LEGACY / "export")
    assert exp.baseline == run.baseline and exp.refiner == run.refiner and exp.priors == run.priors
    assert exp.transform.settings() == run.transform.settings() and exp.config == run.config


def test_raw_weights_on_request_differ_from_the_ema_ones():
    ema, info = load(LEGACY / "run")
    raw, raw_info = load(LEGACY / "run", use_ema=False)
    assert info.weights == "ema" and raw_info.weights == "raw"
    assert any(not torch.equal(a, b) for a, b in zip(ema.r.state_dict().values(), raw.r.state_dict().values()))


def test_one_weight_picker_for_files_and_modules():
    assert pick_weights("f", "r", "fe", "re", frozen_f=False) == ("fe", "re", "ema")
    assert pick_weights("f", "r", "fe", "re", frozen_f=True) == ("f", "re", "ema")  # a frozen F never averages
    assert pick_weights("f", "r", None, None, frozen_f=False) == ("f", "r", "raw")
    assert pick_weights("f", "r", "fe", "re", frozen_f=False, use_ema=False) == ("f", "r", "raw")


def test_nothing_else_is_loaded(tmp_path):
    with pytest.raises(PtgError, match="no checkpoint or run folder"):
        load(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(PtgError, match="is not a `ptg export` folder"):
        load(tmp_path)
