"""`ptg eval` (model and --pred) and `ptg report` through the CLI, on a checkpoint in the format of
`ptg train` (built by tests.test_restore.build_run)."""
from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch
from PIL import Image

from ptg.cli.app import main
from tests.test_restore import PHOTOS, build_run

pytestmark = pytest.mark.filterwarnings("ignore::ptg.pipeline.storage.store.RandomInitWarning")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    return build_run(tmp_path_factory.mktemp("evalcli"))


def test_eval_run_then_pred_then_report(built, tmp_path, capsys) -> None:
    run = built["run"]
    assert main(["eval", "--run", str(run), "--grids", "1"]) == 0
    out = run / "eval"
    printed = capsys.readouterr().out
    assert "| dncnn |" in printed and "+ PTG-RM (clip:tiny-clip)" in printed
    data = json.loads((out / "metrics.json").read_text())
    assert data["info"]["dataset"] == "m" and data["info"]["mode"] == "joint" and data["n_scored"] == len(PHOTOS)
    assert sorted(p.stem for p in (out / "images" / "ptgrm").glob("*.png")) == sorted(PHOTOS)
    assert len(list((out / "grids").glob("*.png"))) == 1
    assert (out / "per_image.csv").read_text().count("\n") == len(PHOTOS) + 1

    # --pred on the saved outputs reproduces the mean of F + R
    scores = tmp_path / "scores.json"
    assert main(["eval", "--pred", str(out / "images" / "ptgrm"), "--manifest", str(built["manifest"]), "--out", str(scores)]) == 0
    pred = json.loads(scores.read_text())
    assert set(pred) == {"images", "mean", "settings"}
    assert pred["mean"]["psnr"] == pytest.approx(data["mean"]["ptgrm"]["psnr"], abs=1e-9)

    # a second evaluation with other settings, then one report over both
    other = tmp_path / "ev2"
    assert main(["eval", "--ckpt", str(run / "checkpoints" / "best.pt"), "--out", str(other), "--y-channel",
                 "--crop-border", "2", "--tile", "32", "--overlap", "8", "--no-images", "--grids", "0", "--name", "tiled"]) == 0
    d2 = json.loads((other / "metrics.json").read_text())
    assert d2["settings"]["y_channel"] and d2["options"]["tile"] == 32 and not (other / "images").exists()
    capsys.readouterr()
    assert main(["report", str(run), str(other), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Original PSNR" in md and "tiled" in md and "not comparable" in md  # Y vs RGB flagged
    assert Image.open(tmp_path / "rep" / "report.png").width > 300


def test_eval_user_errors(built, tmp_path, capsys) -> None:
    assert main(["eval", "--manifest", str(built["manifest"])]) == 1
    assert "--run" in capsys.readouterr().err
    empty = tmp_path / "pred"
    empty.mkdir()
    assert main(["eval", "--pred", str(empty), "--manifest", str(built["manifest"]), "--out", str(tmp_path / "s.json")]) == 1
    err = capsys.readouterr().err
    assert "astronaut" in err and str(empty / "astronaut.png") in err
    assert main(["eval", "--pred", str(empty), "--manifest", str(built["manifest"]), "--out", str(tmp_path / "s.txt")]) == 1
    assert ".json" in capsys.readouterr().err
    assert main(["eval", "--ckpt", str(built["run"] / "checkpoints" / "best.pt")]) == 1
    assert "--out" in capsys.readouterr().err
    assert main(["eval", "--run", str(built["run"]), "--out", str(tmp_path / "e"), "--tile", "30"]) == 1
    assert "multiple of 4" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 1
    assert "no metrics.json" in capsys.readouterr().err


def test_eval_lpips_offline_is_a_clear_error(built, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*a, **k):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert main(["eval", "--run", str(built["run"]), "--out", str(tmp_path / "e"), "--lpips"]) == 1
    err = capsys.readouterr().err
    assert "alexnet-owt-7be5be79.pth" in err and "--lpips-weights" in err
