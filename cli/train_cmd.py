"""`ptg train`: train F, F + PTG-RM, or PTG-RM on a frozen F from cached priors.

Thin: builds the config (preset -> --config file -> flags -> --set) and calls `ptg.ptgrm.api.train`. Under ``torchrun`` only rank 0 draws the bar and prints.
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
    from ptg.ptgrm import api

    from .console import cli_reporter, console, err_console

    cfg = api.config(preset, config, {"out": str(out), **_overrides(locals())}, list(set_ or []))
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 draws the bar and prints
    res = api.train(cfg, force=force, reporter=cli_reporter() if main and not quiet else api.QUIET)
    if main:
        shown = " ".join(f"{k}={v:.4f}" for k, v in res.val.items())
        console.print(f"{cfg.out}: {res.step} steps, {shown or 'no validation'}; digest {res.digest[:16]}")
        if res.skipped_steps:
            err_console.print(f"warning: {res.skipped_steps} step(s) were skipped for a non-finite loss")


# Where each flag of `train` goes in the config; a flag left unset (None, False, []) is not an override.
FLAG_KEYS = {
    "manifest": "data.manifest", "root": "data.root", "priors": "data.priors", "batch_size": "data.batch_size",
    "crop": "data.crop", "f_outputs": "data.f_outputs", "allow_missing_priors": "data.allow_missing_priors",
    "allow_outside": "data.allow_outside", "baseline": "model.baseline", "refiner": "model.refiner",
    "baseline_weights": "model.baseline_weights", "mode": "mode", "steps": "steps", "seed": "seed", "resume": "resume",
    "save_every": "run.save_every", "device": "run.device", "max_memory": "run.max_memory", "lr": "optim.lr",
}


def _overrides(flags: dict) -> dict:
    """The nested config overrides of the flags that were given (`FLAG_KEYS`)."""
    out: dict = {}
    for name, key in FLAG_KEYS.items():
        value = flags[name]
        if value is None or value is False or value == []:
            continue
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = [str(v) for v in value] if isinstance(value, list) else str(value) if isinstance(value, Path) else value
    return out
