"""`ptg train`: train F, F + PTG-RM, or PTG-RM on a frozen F from cached priors.

Thin: builds the config (preset -> --config file -> flags -> --set), shows the progress bar and
calls `ptg.ptgrm.train.trainer.train`. Under ``torchrun`` only rank 0 draws the bar and prints.
torch is imported inside the command, never at module top.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import OutDir, RootOpt


def train(
    out: OutDir,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", "-m", help="Manifest (JSONL) of the dataset.")] = None,
    priors: Annotated[Optional[list[Path]], typer.Option("--priors", help="Priors store (repeat for several priors).")] = None,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Registry name of F (see `ptg models`).")] = None,
    mode: Annotated[Optional[str], typer.Option("--mode", help="baseline | joint | refine.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimiser steps in total.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (a saved TrainConfig).")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Start from a task preset: lowlight, derain, ... (see docs).")] = None,
    save_every: Annotated[Optional[int], typer.Option("--save-every", help="Keep checkpoints/step_XXXXXX.pt every K steps.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from checkpoints/last.pt.")] = False,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed; same seed, same run.")] = None,
    root: RootOpt = None,
    refiner: Annotated[Optional[str], typer.Option("--refiner", help="R: ptgrm | ptgrm-large.")] = None,
    baseline_weights: Annotated[Optional[Path], typer.Option("--baseline-weights", help="refine: run folder or checkpoint of a trained F.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Global batch size.")] = None,
    crop: Annotated[Optional[int], typer.Option("--crop", help="Training crop side in pixels.")] = None,
    allow_missing_priors: Annotated[bool, typer.Option("--allow-missing-priors", help="Drop rows without a prior instead of failing.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any config key: section.key=value (repeatable).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write into an existing --out folder that is not a ptg run.")] = False,
) -> None:
    """Train from cached priors; the foundation model is never loaded."""
    from ptg.ptgrm.train.config import resolve

    from .console import console, err_console, progress_bar

    overrides: dict = {"out": str(out)}
    data: dict = {}
    if manifest is not None:
        data["manifest"] = str(manifest)
    if root is not None:
        data["root"] = str(root)
    if priors:
        data["priors"] = [str(p) for p in priors]
    if batch_size is not None:
        data["batch_size"] = batch_size
    if crop is not None:
        data["crop"] = crop
    if allow_missing_priors:
        data["allow_missing_priors"] = True
    if data:
        overrides["data"] = data
    model: dict = {}
    if baseline is not None:
        model["baseline"] = baseline
    if refiner is not None:
        model["refiner"] = refiner
    if baseline_weights is not None:
        model["baseline_weights"] = str(baseline_weights)
    if model:
        overrides["model"] = model
    for key, value in (("mode", mode), ("steps", steps), ("seed", seed)):
        if value is not None:
            overrides[key] = value
    if resume:
        overrides["resume"] = True
    if save_every is not None:
        overrides["run"] = {"save_every": save_every}
    cfg = resolve(config, overrides, list(set_ or []), preset)

    from ptg.ptgrm.train.trainer import train as run_training

    main = int(os.environ.get("RANK", "0")) == 0
    if quiet or not main:
        final = run_training(cfg, force=force)
    else:
        with progress_bar(cfg.steps, f"train ({cfg.mode})", unit="it") as advance:
            final = run_training(cfg, on_progress=advance, force=force)
    if main:
        val = final.get("val") or {}
        shown = " ".join(f"{k}={v:.4f}" for k, v in val.items())
        console.print(f"{cfg.out}: {final['step']} steps, {shown or 'no validation'}; digest {final['digest'][:16]}")
        if final.get("skipped_steps"):
            err_console.print(f"warning: {final['skipped_steps']} step(s) were skipped for a non-finite loss")
