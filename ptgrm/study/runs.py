"""One run of a study: train R (resuming from ``last.pt``), score test once on ``last.pt``, and the
wrong-prior evaluations. `run_one` is the unit a dask worker executes; it is idempotent: a run
whose record is written returns it, a killed one resumes where its files say.

The record holds no timing and no path, so that the same study gives the same record on any
machine, with any number of workers, interrupted or not (CPU, fixed threads).
"""
from __future__ import annotations

import csv
import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ptg.pipeline.core.errors import PtgError

from .plan import Arm


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, picklable (sent to a dask worker)."""

    name: str  # "<arm folder>/s<seed>" (budget runs: "budget/<role>-c<crop>-lr<lr>")
    out: str  # the run folder
    arm: Arm  # what R reads and how
    seed: int  # model init, data order, crops, the constant control's draw
    crop: int  # training crop side
    lr: float  # Adam learning rate
    steps: int  # optimiser steps
    manifest: str  # the study's manifest (with val rows)
    root: str | None  # the folder its paths are relative to
    f_outputs: str  # F's cached outputs
    stores: tuple[str, ...]  # the arm's stores, in arm.priors order
    wrong: tuple[tuple[str, tuple[str, ...]], ...]  # (kind, the arm's wrong-prior stores); () for no test
    levels: tuple[tuple[str, str], ...]  # test row id -> level
    views: str  # data.augment (the views cached in the stores and F's outputs)
    val_every: int  # validation every N steps
    sets: tuple[str, ...]  # the user's --set overrides, last
    threads: int = 1  # torch threads
    device: str = "cpu"  # torch device
    score: bool = True  # False for budget runs: validation curve only, test never seen

    def key(self) -> str:
        """What a finished record must have been made from (a changed spec is never reported as done)."""
        d = asdict(self)
        return json.dumps({k: d[k] for k in ("name", "arm", "seed", "crop", "lr", "steps", "views", "val_every", "sets")},
                          sort_keys=True, default=str)


def train_config(spec: RunSpec, resume: bool):
    """The run's TrainConfig: the study's settings (v3's: batch 8, 64-px validation crops, standardized
    priors, F's views as augmentation), then the user's ``--set``, then the arm's own R settings."""
    from ptg.ptgrm.train.config import resolve

    arm = spec.arm
    overrides = {
        "out": spec.out, "mode": "refine", "steps": spec.steps, "seed": spec.seed, "resume": resume,
        "data": {"manifest": spec.manifest, **({"root": spec.root} if spec.root else {}), "priors": list(spec.stores),
                 "f_outputs": spec.f_outputs, "crop": spec.crop, "batch_size": 8, "augment": spec.views, "val_crop": 64},
        "model": {"refiner": arm.refiner},
        "optim": {"lr": spec.lr},
        "priors": {"control": arm.control, "normalize": "standardize"},
        "run": {"device": spec.device, "threads": spec.threads, "val_every": spec.val_every,
                "checkpoint_every": max(1, min(100, spec.val_every)), "deterministic": spec.device == "cpu"},
    }
    # the arm's own R settings (Large R's matched width) come after the user's --set, which must not undo them
    own = [f"model.refiner_args.{k}={json.dumps(v)}" for k, v in arm.refiner_args]
    return resolve(None, overrides, [*spec.sets, *own])


def curve(run: Path) -> list[dict[str, float]]:
    """Validation PSNR/SSIM at every validation step, with F alone's PSNR (refine runs log it)."""
    with open(run / "log.csv", newline="", encoding="utf-8") as f:
        return [{"step": int(r["step"]), "psnr": float(r["val_psnr"]), "ssim": float(r["val_ssim"]),
                 **({"psnr_f": float(r["val_psnr_f"])} if r.get("val_psnr_f") else {})}
                for r in csv.DictReader(f) if r.get("val_psnr")]


def per_level(metrics: dict[str, Any], levels: dict[str, str], which: str) -> dict[str, dict[str, float]]:
    """Mean PSNR/SSIM of ``which`` (baseline | ptgrm) per level and over all test images."""
    groups: dict[str, list] = {"all": []}
    for r in metrics["images"]:
        if which in r:
            groups["all"].append(r[which])
            lv = levels.get(r["id"], "all")
            if lv != "all":
                groups.setdefault(lv, []).append(r[which])
    return {lv: {"psnr": statistics.fmean(m["psnr"] for m in ms), "ssim": statistics.fmean(m["ssim"] for m in ms), "n": len(ms)}
            for lv, ms in groups.items() if ms}


def evaluate_run(spec: RunSpec, out: Path, stores: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Score test once with ``last.pt`` and F's cached outputs (``out/metrics.json``, kept)."""
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.ptgrm import f_outputs as fo
    from ptg.ptgrm.artifacts import load
    from ptg.ptgrm.evaluate import EvalOptions, MetricSettings, evaluate
    from ptg.ptgrm.infer import StorePriors

    restorer, run = load(Path(spec.out) / "checkpoints" / "last.pt", device=spec.device)
    samples = load_manifest(spec.manifest, spec.root).split("test")
    outs = fo.open_cached_outputs(spec.f_outputs, samples)
    recorded = run.baseline.weights_sha256 if run.baseline.kind == "cached-outputs" else None
    restorer.f = fo.stand_in_for(restorer.f, run.baseline.name, recorded, outs).to(spec.device)
    priors = StorePriors(run.priors, list(stores or spec.stores)) if restorer.needs_priors else None  # Large R reads none
    options = EvalOptions(save_images=False, grids=0, device=spec.device)
    info = {"name": spec.name, "baseline": run.baseline.name, "step": run.step, "split": "test"}
    return evaluate(restorer, samples, out, settings=MetricSettings(), options=options, priors_for=priors,
                    info=info, f_outputs=outs)


def refiner_params(run: Path) -> int:
    """R's trained values (parameters and buffers of its state dict) in the run's last checkpoint."""
    from ptg.ptgrm.artifacts.checkpoint import safe_load

    ckpt = safe_load(run / "checkpoints" / "last.pt")
    return int(sum(v.numel() for v in ckpt["refiner"]["state_dict"].values() if v.is_floating_point()))


def train(spec: RunSpec) -> dict[str, Any]:
    """Train (or resume, or keep) the run; final.json's content. A run of other steps is refused."""
    from ptg.ptgrm.train.trainer import train as run_training

    out = Path(spec.out)
    if not (out / "final.json").is_file():
        run_training(train_config(spec, resume=(out / "checkpoints" / "last.pt").is_file()))
    final = json.loads((out / "final.json").read_text())
    if final["step"] != spec.steps:
        raise PtgError(f"{out} was trained for {final['step']} steps, this study's plan has {spec.steps}: use another --out")
    return final


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Train, score and record one run; the record (``record.json``) when it is already there."""
    import torch

    from ptg.pipeline.core.fsio import atomic_write_json

    out = Path(spec.out)
    done = out / "record.json"
    if done.is_file():
        rec = json.loads(done.read_text())
        if rec.get("spec") == spec.key():
            return rec
    torch.set_num_threads(spec.threads)  # evaluation of a resumed run uses the same threads as training did
    final = train(spec)
    rec: dict[str, Any] = {"name": spec.name, "arm": spec.arm.name, "role": spec.arm.role, "seed": spec.seed,
                           "priors": list(spec.arm.priors), "control": spec.arm.control, "refiner": spec.arm.refiner,
                           "budget": {"crop": spec.crop, "lr": spec.lr, "steps": spec.steps}, "steps": final["step"],
                           "digest": final["digest"], "params": refiner_params(out), "curve": curve(out)}
    if spec.score:
        levels = dict(spec.levels)
        metrics = evaluate_run(spec, out / "eval")
        rec["test"] = per_level(metrics, levels, "ptgrm")
        rec["test_f"] = per_level(metrics, levels, "baseline")
        rec["wrong"] = {kind: per_level(evaluate_run(spec, out / f"eval-wrong-{kind}", stores), levels, "ptgrm")
                        for kind, stores in spec.wrong}
    rec["spec"] = spec.key()
    atomic_write_json(done, rec)
    return rec
