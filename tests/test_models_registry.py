"""The model registry: names, configs, user networks, errors; and `ptg models --json`."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from torch import nn

from ptg.cli.app import main
from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.models import (
    PTGRMConfig,
    create_model,
    get_model_config,
    get_model_config_class,
    get_model_spec,
    list_models,
    register_model,
)

BASELINES = {"unet", "nafnet", "restormer", "restormer-paper", "dncnn", "snr", "ffdnet"}


def test_all_required_names_are_registered():
    names = set(list_models())
    assert BASELINES | {"ptgrm", "ptgrm-large", "unet-f", "nafnet-f"} <= names
    assert {get_model_spec(n).kind for n in BASELINES} == {"restorer"}
    assert get_model_spec("ptgrm").kind == "refiner"
    assert get_model_spec("unet-f").kind == "feature-refiner"


def test_config_lookup_and_overrides():
    assert get_model_config_class("ptgrm") is PTGRMConfig
    cfg = get_model_config("ptgrm-large", width=8)
    assert cfg.large and cfg.width == 8
    assert get_model_config("restormer-paper").width == 48
    m = create_model("unet", width=4, depth=2)
    assert m.config.width == 4 and m.config.depth == 2


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(PtgError) as err:
        create_model("unte")
    assert "'unte'" in str(err.value) and "unet" in str(err.value) and "ptgrm" in str(err.value)


def test_unknown_option_is_rejected():
    with pytest.raises(PtgError, match="no option.*'widht'.*width"):
        create_model("unet", widht=4)


def test_duplicate_registration_is_refused():
    @dataclass
    class Cfg:
        width: int = 1  # unused

    with pytest.raises(ValueError, match="already registered"):
        register_model("unet", config=Cfg)(nn.Identity)
    assert get_model_spec("unet").cls.__name__ == "UNet"


class TinyUserNet(nn.Module):
    """A user network for the 'package.module:ClassName' path."""

    def __init__(self, width: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.width = width

    def forward(self, x):
        return x + self.conv(x)


NOT_A_MODULE = object


def test_user_network_by_import_path():
    name = f"{__name__}:TinyUserNet"
    m = create_model(name, width=5)
    assert isinstance(m, TinyUserNet) and m.width == 5
    with pytest.raises(PtgError, match="cannot import module 'no_such_pkg.mod'"):
        create_model("no_such_pkg.mod:Net")
    with pytest.raises(PtgError, match="has no attribute 'Nope'"):
        create_model(f"{__name__}:Nope")
    with pytest.raises(PtgError, match="not a torch.nn.Module"):
        create_model(f"{__name__}:NOT_A_MODULE")
    with pytest.raises(PtgError, match="cannot build user network"):
        create_model(name, depth=3)


def test_ptg_models_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(list_models())
    r = rows["ptgrm"]
    assert 300_000 < r["params"] < 1_000_000
    assert 0 < r["macs_512"] < 10e9
    assert r["config"]["prior_dims"] == [512] and r["config"]["width"] == 16
    assert rows["ffdnet"]["params"] == 852_108  # the KAIR colour model's size
    assert all(rows[n]["params"] > 0 and rows[n]["macs_512"] > 0 for n in rows if not rows[n]["external"])
    assert {n for n in rows if rows[n]["external"]} == {"spandrel", "oidn", "zero-dce", "f-outputs"}


def test_ptg_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "ptgrm" in out and "restormer-paper" in out
