"""Study v3's decision rules (benchmarks/study_v3.py): the budget it freezes and the statistics it reports."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
study = importlib.import_module("study_v3")


def _curve(final: float, f: float = 30.0, steps: int = 400) -> list[dict]:
    return [{"step": s, "psnr": final - 1.0 + s / steps, "psnr_f": f} for s in range(100, steps + 1, 100)]


def test_choose_crop_takes_the_best_lr_and_moves_on_while_the_control_ends_below_f():
    crop = study.CROPS[0]
    curves = {("main", crop, lr): _curve(31.0 + i) for i, lr in enumerate(study.LRS)}  # the last lr is best
    curves |= {("constant", crop, lr): _curve(29.0) for lr in study.LRS}  # below F (30) at every lr
    assert study.choose_crop(curves, crop) is None
    curves[("constant", crop, study.LRS[-1])] = _curve(30.5)  # at the best lr, the control ends above F
    chosen = study.choose_crop(curves, crop)
    assert chosen["crop"] == crop and chosen["lr"] == study.LRS[-1] and chosen["constant_below_f"] is False


def test_choose_crop_accepts_the_largest_crop_and_says_the_control_is_below_f():
    crop = study.CROPS[-1]
    curves = {(role, crop, lr): _curve(29.0) for lr in study.LRS for role in ("main", "constant")}
    chosen = study.choose_crop(curves, crop)
    assert chosen["crop"] == crop and chosen["constant_below_f"] is True


def test_flat_step_is_where_the_smoothed_curve_stops_gaining():
    rising = [{"step": s, "psnr": 25.0 + min(s, 1500) / 500} for s in range(100, 4001, 100)]  # flat from 1500
    assert 1500 <= study.flat_step(rising) <= 1800
    assert study.flat_step([{"step": s, "psnr": 25.0 + s / 500} for s in range(100, 4001, 100)]) == 4000  # never flat
    assert study.flat_step([{"step": s, "psnr": 25.0} for s in range(100, 4001, 100)]) == 500  # flat: at least 500


def test_paired_matches_scipy_and_needs_two_seeds():
    """The library's paired statistics (`ptg.ptgrm.study.report.paired`), which study v3 reports with."""
    from scipy import stats

    from ptg.ptgrm.study.report import paired

    a, b = {0: 30.1, 1: 30.4, 2: 29.9, 3: 30.6}, {0: 30.0, 1: 30.0, 2: 30.0, 3: 30.1, 9: 1.0}
    d = paired(a, b)
    ref = stats.ttest_rel([a[s] for s in range(4)], [b[s] for s in range(4)])
    assert d["n"] == 4 and d["t"] == pytest.approx(ref.statistic) and d["p"] == pytest.approx(ref.pvalue)
    assert paired({0: 1.0}, {0: 2.0}) is None
    same = paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert same["t"] == 0.0 and same["p"] == 1.0  # no difference at all is not a significant one


def test_every_control_uses_the_stores_of_the_arm_it_controls():
    for f in study.FS:
        arms = {a.name: a for a in study.arms(f)}
        assert len(arms) == 16
        for name, priors in study.REAL.items():
            for c in study.CONTROLS:
                assert arms[f"R:{name}:{c}"].priors == priors
        assert arms["LargeR"].priors == study.REAL["both"]
