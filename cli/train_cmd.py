"""`ptg train`: train F, F + PTG-RM, or PTG-RM on a frozen F from cached priors.

Thin: builds the config (preset -> --config file -> flags -> --set), shows the progress bar and
calls `ptg.ptgrm.train.trainer.train`. Under ``torchrun`` only rank 0 draws the bar and prints.
torch is imported inside the command, never at module top.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from ptg.ptgrm.train.config import MODES, PRESETS, DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig

from .options import AllowOutside, OutDir, RootOpt


# Defaults shown in --help are read from the config dataclasses, so help never drifts from the code
# (the config module imports no torch). A --preset or --config file changes them; flags override both.
_T, _D, _M, _O, _R = TrainConfig(), DataConfig(), ModelConfig(), OptimConfig(), RunConfig()


def _one_of(what: str, choices: tuple[str, ...] | list[str]) -> Callable[[Optional[str]], Optional[str]]:
    """An option callback that refuses a value outside `choices`, naming the closest and all of them (exit 2)."""

    def check(value: Optional[str]) -> Optional[str]:
        if value is not None and value not in choices:
            close = difflib.get_close_matches(value, list(choices), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise typer.BadParameter(f"unknown {what} {value!r}{hint}; choose one of {', '.join(choices)}")
        return value

    return check


def train(
    out: OutDir,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", "-m", help="Manifest (JSONL) of the dataset.")] = None,
    priors: Annotated[Optional[list[str]], typer.Option("--priors", help="Priors store, a folder or s3://bucket/prefix (repeat for several priors); needed unless --mode baseline.")] = None,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Registry name of F (see `ptg models`): also spandrel (with --baseline-weights FILE), oidn, zero-dce.", show_default=_M.baseline)] = None,
    mode: Annotated[Optional[str], typer.Option("--mode", callback=_one_of("mode", MODES), help=f"{' | '.join(MODES)}: F alone, F + PTG-RM, or PTG-RM on a frozen F.", show_default=_T.mode)] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimiser steps in total.", show_default=str(_T.steps))] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (a saved TrainConfig, e.g. a run's config.yaml).")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", callback=_one_of("preset", list(PRESETS)), help=f"Start from a task preset: {', '.join(PRESETS)}. It sets F, crop, batch, loss, lr and steps; flags override it.")] = None,
    save_every: Annotated[Optional[int], typer.Option("--save-every", help="Keep checkpoints/step_XXXXXX.pt every K steps (0: only last.pt and best.pt).", show_default=str(_R.save_every))] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from checkpoints/last.pt.")] = False,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed; same seed, same run.", show_default=str(_T.seed))] = None,
    root: RootOpt = None,
    refiner: Annotated[Optional[str], typer.Option("--refiner", help="R: ptgrm | ptgrm-large.", show_default=_M.refiner)] = None,
    baseline_weights: Annotated[Optional[Path], typer.Option("--baseline-weights", help="refine: run folder or checkpoint of a trained F. With --baseline spandrel (any mode): a .pth/.ckpt/.safetensors of any 1x restoration network spandrel detects (see `ptg models inspect FILE`).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Global batch size.", show_default=str(_D.batch_size))] = None,
    crop: Annotated[Optional[int], typer.Option("--crop", help="Training crop side in pixels.", show_default=str(_D.crop))] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Adam learning rate (cosine decay to optim.eta_min over the run).", show_default=f"{_O.lr:g}")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto (cuda if present) | cpu | cuda | cuda:N.", show_default=_R.device)] = None,
    allow_missing_priors: Annotated[bool, typer.Option("--allow-missing-priors", help="Drop rows without a prior instead of failing.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any config key: section.key=value (repeatable), e.g. --set run.threads=1.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write into an existing --out folder that is not a ptg run.")] = False,
    allow_outside: AllowOutside = False,
    max_memory: Annotated[Optional[str], typer.Option("--max-memory", help="Training memory budget: auto (what the device has free) or a size like 12GiB. One step is measured and the fastest micro-batch / checkpointing setting that fits is used (run.max_memory).")] = None,
    f_outputs: Annotated[Optional[Path], typer.Option("--f-outputs", help="refine: F's cached outputs (a `ptg extract-outputs` store, or a folder of <id>.png from any tool); R trains with no F in memory.")] = None,
) -> None:
    """Train from cached priors; the foundation model is never loaded.

    Defaults shown are the built-in ones; --preset and --config replace them, flags override both.
    """
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
    if f_outputs is not None:
        data["f_outputs"] = str(f_outputs)
    data.update({k: True for k, on in (("allow_missing_priors", allow_missing_priors), ("allow_outside", allow_outside)) if on})
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
    run: dict = {k: v for k, v in (("save_every", save_every), ("device", device), ("max_memory", max_memory)) if v is not None}
    if run:
        overrides["run"] = run
    if lr is not None:
        overrides["optim"] = {"lr": lr}
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
