"""Grids (zoomed crop, error maps), the multi-run table and the bar chart."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.report import comparison_table, error_map, load_summary, make_grid, pick_crop, write_report
from tests.conftest import small_photo


def test_pick_crop_finds_the_worst_region() -> None:
    err = np.zeros((64, 80))
    err[40:52, 10:22] = 1.0
    top, left, side = pick_crop(err.shape, err, size=12)
    assert (top, left, side) == (40, 10, 12)
    assert pick_crop((64, 80), None) == (24, 32, 16)


def test_error_map_scale() -> None:
    t = np.zeros((4, 4, 3), np.float32)
    p = t.copy()
    p[0, 0] = 1.0
    m = error_map(p, t)
    assert m.shape == (4, 4, 3)
    assert m[0, 0].sum() > m[1, 1].sum()  # large error is brighter in 'inferno'
    np.testing.assert_allclose(m[1, 1], m[2, 2])


def test_grid_layout_and_crop_marks() -> None:
    target = small_photo("astronaut", 48).astype(np.float32) / 255
    rng = np.random.default_rng(0)
    inp = np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1).astype(np.float32)
    f = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1).astype(np.float32)
    r = np.clip(target + rng.normal(0, 0.02, target.shape), 0, 1).astype(np.float32)
    grid = make_grid(inp, f, r, target, crop=(8, 8, 12))
    assert grid.dtype == np.uint8 and grid.ndim == 3
    assert grid.shape[1] == 4 * 48 + 3 * 4  # four columns with 4 px gaps
    assert grid.shape[0] == 3 * (48 + 18) + 2 * 4  # images, zooms, error maps
    # the red crop rectangle is drawn on the first full image (caption strip is 18 px)
    assert tuple(grid[18 + 8, 8]) == (255, 0, 0)
    # without refined output and target: two columns, two rows
    small = make_grid(inp, f, None, None)
    assert small.shape == (2 * (48 + 18) + 4, 2 * 48 + 4, 3)


def _metrics(tmp: Path, name: str, dataset: str, prior: str, base: float, ref: float, y: bool = False) -> Path:
    d = tmp / name
    d.mkdir()
    data = {
        "kind": "ptg-eval",
        "info": {"name": name, "dataset": dataset, "baseline": "unet", "prior": prior},
        "settings": {"crop_border": 0, "y_channel": y, "matlab_round_y": False},
        "n_scored": 3,
        "mean": {"baseline": {"psnr": base, "ssim": 0.8}, "ptgrm": {"psnr": ref, "ssim": 0.85}, "delta": {}},
        "images": [],
    }
    (d / "metrics.json").write_text(json.dumps(data))
    return d


def test_table_one_layout_and_report_files(tmp_path) -> None:
    a = _metrics(tmp_path, "runA", "samples", "imagenet", 25.0, 25.42)
    b = _metrics(tmp_path, "runB", "samples", "clip", 25.0, 24.9)
    c = _metrics(tmp_path, "runC", "lol", "imagenet", 20.0, 21.0)
    table = comparison_table([load_summary(p) for p in (a, b, c)])
    head = table.splitlines()[0]
    assert "Original PSNR" in head and "+ PTG-RM-imagenet PSNR" in head and "+ PTG-RM-clip PSNR" in head
    assert "| samples | unet | 25.00 | 0.800 | 25.42(+0.42) | 0.850(+5.0) | 24.90(-0.10) | 0.850(+5.0) |" in table
    assert "| lol | unet | 20.00 | 0.800 | 21.00(+1.00) | 0.850(+5.0) |  |  |" in table
    md, png = write_report([a, b, c], tmp_path / "rep")
    assert md.read_text().count("runA") >= 1 and "report.png" in md.read_text()
    with Image.open(png) as im:
        assert im.width > 300 and im.height > 200


def test_original_is_the_f_only_run_as_in_the_paper(tmp_path) -> None:
    alone = _metrics(tmp_path, "baseline", "samples", "", 24.25, 0.0)
    data = json.loads((alone / "metrics.json").read_text())
    del data["mean"]["ptgrm"]  # an F-only run has no R
    (alone / "metrics.json").write_text(json.dumps(data))
    joint = _metrics(tmp_path, "joint", "samples", "imagenet", 24.14, 24.33)  # its own F differs
    table = comparison_table([load_summary(alone), load_summary(joint)])
    assert "| samples | unet | 24.25 | 0.800 | 24.33(+0.08) |" in table
    assert "no F-only run" not in table
    assert "no F-only run" in comparison_table([load_summary(joint)])


def test_mixed_settings_are_flagged(tmp_path) -> None:
    a = _metrics(tmp_path, "a", "s", "p", 25.0, 25.4)
    b = _metrics(tmp_path, "b", "s", "q", 25.0, 25.4, y=True)
    assert "not comparable" in comparison_table([load_summary(a), load_summary(b)])


def test_run_dir_without_eval_says_what_to_do(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(PtgError, match="ptg eval --run"):
        load_summary(run)
    with pytest.raises(PtgError, match="no metrics.json"):
        load_summary(tmp_path)


def test_pred_json_is_accepted(tmp_path) -> None:
    p = tmp_path / "scores.json"
    p.write_text(json.dumps({"images": [{"id": "x", "psnr": 30.0, "ssim": 0.9}], "mean": {"psnr": 30.0, "ssim": 0.9}, "settings": {}}))
    s = load_summary(p)
    assert s.refined is None and s.base["psnr"] == 30.0
    assert "| - | scores | 30.00 | 0.900 |" in comparison_table([s])


def test_without_an_f_only_run_the_note_says_how_f_was_trained(tmp_path) -> None:
    joint = _metrics(tmp_path, "joint", "samples", "imagenet", 24.14, 24.33)
    refine = _metrics(tmp_path, "refine", "samples", "imagenet", 27.28, 27.05)
    data = json.loads((refine / "metrics.json").read_text())
    data["info"]["mode"] = "refine"
    (refine / "metrics.json").write_text(json.dumps(data))
    assert "'Original' is the F trained jointly in joint" in comparison_table([load_summary(joint)])
    assert "'Original' is the frozen F refined in refine" in comparison_table([load_summary(refine)])


def test_a_control_run_gets_its_own_column(tmp_path) -> None:
    real = _metrics(tmp_path, "real", "samples", "imagenet", 25.0, 25.4)
    const = _metrics(tmp_path, "constant", "samples", "imagenet", 25.0, 25.1)
    data = json.loads((const / "metrics.json").read_text())
    data["info"]["prior_transform"] = "normalize=standardize, control=constant"
    (const / "metrics.json").write_text(json.dumps(data))
    table = comparison_table([load_summary(real), load_summary(const)])
    assert "+ PTG-RM-imagenet PSNR" in table and "+ PTG-RM-imagenet \\(constant\\) PSNR" in table
    assert "25.40(+0.40)" in table and "25.10(+0.10)" in table and "2 runs" not in table
