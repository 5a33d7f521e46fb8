"""Evaluation engine: `--pred` scoring on known images, model evaluation outputs, paper table."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.datasets.manifest import load_manifest, write_manifest
from ptg.ptgrm.evaluate import EvalOptions, MetricSettings, evaluate, paper_table, score_predictions
from tests.conftest import small_photo

NAMES = ("astronaut", "chelsea", "coffee")


@pytest.fixture
def paired(tmp_path: Path):
    """Three real photos as targets, noisy versions as inputs, in a test-split manifest."""
    rng = np.random.default_rng(0)
    rows = []
    for name in NAMES:
        clean = small_photo(name, 40)
        noisy = np.clip(clean + rng.normal(0, 15, clean.shape), 0, 255).round().astype(np.uint8)
        Image.fromarray(clean).save(tmp_path / f"{name}_gt.png")
        Image.fromarray(noisy).save(tmp_path / f"{name}_in.png")
        rows.append({"id": name, "input": f"{name}_in.png", "target": f"{name}_gt.png", "split": "test"})
    return load_manifest(write_manifest(tmp_path / "m.jsonl", rows))


def test_pred_scoring_known_offset_and_skimage(paired, tmp_path) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    for s in paired.samples:
        gt = np.asarray(Image.open(s.target)).astype(np.int16)
        Image.fromarray(np.clip(gt + 4, 0, 255).astype(np.uint8)).save(pred / f"{s.id}.png")
    out = score_predictions(pred, paired.split("test"), MetricSettings())
    assert set(out) == {"images", "mean", "settings"}
    assert [r["id"] for r in out["images"]] == list(NAMES)
    assert set(out["images"][0]) == {"id", "psnr", "ssim"} and set(out["mean"]) == {"psnr", "ssim"}
    for r, s in zip(out["images"], paired.samples):
        p, g = np.asarray(Image.open(pred / f"{s.id}.png")), np.asarray(Image.open(s.target))
        assert r["psnr"] == pytest.approx(peak_signal_noise_ratio(g, p, data_range=255), abs=1e-9)
        ref = structural_similarity(g, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=255, channel_axis=-1)
        assert r["ssim"] == pytest.approx(ref, abs=1e-6)
    # an offset of 4 levels where it is not clipped: PSNR = 20 log10(255 / rms) with rms <= 4
    assert all(r["psnr"] >= 20 * math.log10(255 / 4) - 1e-9 for r in out["images"])
    assert out["mean"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in out["images"]]))
    assert out["settings"]["crop_border"] == 0 and out["settings"]["y_channel"] is False


def test_pred_scoring_border_crop_and_y(paired, tmp_path) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    for s in paired.samples:
        gt = np.asarray(Image.open(s.target)).copy()
        gt[:3] = 0  # damage only the top 3 rows
        Image.fromarray(gt).save(pred / f"{s.id}.png")
    whole = score_predictions(pred, paired.samples, MetricSettings())
    cropped = score_predictions(pred, paired.samples, MetricSettings(crop_border=3))
    assert all(math.isfinite(r["psnr"]) for r in whole["images"])
    assert all(math.isinf(r["psnr"]) and r["ssim"] == pytest.approx(1.0) for r in cropped["images"])
    y = score_predictions(pred, paired.samples, MetricSettings(y_channel=True))
    assert y["settings"]["y_channel"] is True
    assert y["images"][0]["psnr"] != whole["images"][0]["psnr"]


def test_missing_prediction_names_id_and_path(paired, tmp_path) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    Image.open(paired.samples[0].target).save(pred / "astronaut.png")
    with pytest.raises(PtgError) as exc:
        score_predictions(pred, paired.samples, MetricSettings())
    assert "'chelsea'" in str(exc.value) and str(pred / "chelsea.png") in str(exc.value)


def test_paper_table_form() -> None:
    mean = {"baseline": {"psnr": 21.48, "ssim": 0.849}, "ptgrm": {"psnr": 25.50, "ssim": 0.892}}
    md = paper_table(mean, {"baseline": "SNR", "ptgrm": "+ PTG-RM (clip)"})
    assert "| SNR | 21.48 | 0.849 |" in md
    assert "| + PTG-RM (clip) | 25.50(+4.02) | 0.892(+4.3) |" in md
    worse = paper_table({"baseline": {"psnr": 30.0, "ssim": 0.9}, "ptgrm": {"psnr": 29.6, "ssim": 0.88}}, {})
    assert "29.60(-0.40)" in worse and "0.880(-2.0)" in worse


class _TinyF(torch.nn.Module):
    """A 3×3 conv F and a prior-scaled residual R, enough to exercise the engine."""

    multiple = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.f = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.r = torch.nn.Conv2d(6, 3, 3, padding=1)

    def restore(self, x: torch.Tensor, priors):
        assert x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0  # padded by the engine
        ihat = x + 0.1 * self.f(x)
        gain = priors[0].mean() if priors is not None else 1.0
        return ihat, ihat + 0.05 * gain * self.r(torch.cat([ihat, x], 1))


def test_evaluate_writes_everything_consistently(paired, tmp_path) -> None:
    model = _TinyF()
    seen = []

    def priors_for(path, img):
        seen.append(path.name.replace("_in.png", ""))
        return [torch.full((1, 8), 0.5)]

    out = tmp_path / "eval"
    evaluate(model.restore, paired.split("test"), out, settings=MetricSettings(), options=EvalOptions(grids=2),
                   priors_for=priors_for, info={"baseline": "tinyF", "prior": "imagenet", "dataset": "toy"}, multiple=4)
    assert seen == list(NAMES)
    for sub in ("baseline", "ptgrm"):
        assert sorted(p.stem for p in (out / "images" / sub).glob("*.png")) == sorted(NAMES)
    assert len(list((out / "grids").glob("*.png"))) == 2
    data = json.loads((out / "metrics.json").read_text())
    assert data["n_scored"] == 3 and data["mean"]["delta"]["ssim_x100"] == pytest.approx(data["mean"]["delta"]["ssim"] * 100)
    # the reported numbers are those of the saved PNGs
    for sub in ("baseline", "ptgrm"):
        again = score_predictions(out / "images" / sub, paired.samples, MetricSettings())
        assert again["mean"]["psnr"] == pytest.approx(data["mean"][sub]["psnr"], abs=1e-9)
        assert again["mean"]["ssim"] == pytest.approx(data["mean"][sub]["ssim"], abs=1e-9)
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["id"] for r in rows] == list(NAMES)
    assert float(rows[0]["psnr_delta"]) == pytest.approx(float(rows[0]["psnr_ptgrm"]) - float(rows[0]["psnr_baseline"]), abs=1e-5)
    table = (out / "table.md").read_text()
    assert "| tinyF |" in table and "+ PTG-RM (imagenet)" in table and "toy: 3 image(s)" in table


def test_evaluate_tiled_matches_untiled_for_local_model(paired, tmp_path) -> None:
    model = _TinyF()
    g = lambda s, img: [torch.ones(1, 4)]  # noqa: E731
    whole = evaluate(model.restore, paired.samples, tmp_path / "a", settings=MetricSettings(),
                     options=EvalOptions(grids=0, save_images=False), priors_for=g, multiple=4)
    tiled = evaluate(model.restore, paired.samples, tmp_path / "b", settings=MetricSettings(),
                     options=EvalOptions(grids=0, save_images=False, tile=16, overlap=4), priors_for=g, multiple=4)
    # R here uses the prior's mean only (no global pooling over pixels): tiling is exact
    assert tiled["mean"] == whole["mean"]


def test_evaluate_baseline_only_and_unpaired_rows(tmp_path) -> None:
    Image.fromarray(small_photo("rocket", 24)).save(tmp_path / "r.png")
    m = load_manifest(write_manifest(tmp_path / "m.jsonl", [{"id": "r", "input": "r.png", "target": None, "split": "test"}]))
    res = evaluate(lambda x, g: (x, None), m.samples, tmp_path / "e", settings=MetricSettings(), options=EvalOptions())
    assert res["n_scored"] == 0 and res["mean"]["ptgrm"] is None
    assert (tmp_path / "e" / "images" / "baseline" / "r.png").is_file()
    assert not (tmp_path / "e" / "images" / "ptgrm").exists()
    assert "no images with targets" in (tmp_path / "e" / "table.md").read_text()
