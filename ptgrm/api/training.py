"""Train from cached priors: `ptg train` as a function.

`train(config)` takes a resolved `TrainConfig` (`ptg.ptgrm.train.config.resolve` builds one from a
preset, a YAML file, overrides and ``section.key=value`` strings, as the CLI does) and returns the
run's final record. The foundation model is never loaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..train.config import TrainConfig, resolve
from .reporter import QUIET, Reporter


@dataclass
class TrainResult:
    """How a run ended (the whole record is ``RUN/final.json``)."""

    out: Path  # the run folder
    step: int  # optimiser steps done
    val: dict[str, float]  # the last validation's metrics ({} without validation)
    digest: str  # SHA-256 over the final weights: same config and seed, same digest
    skipped_steps: int = 0  # steps skipped for a non-finite loss
    record: dict[str, Any] = field(default_factory=dict, repr=False)  # final.json


def config(preset: str | None = None, file: str | Path | None = None, overrides: dict[str, Any] | None = None,
           sets: list[str] | None = None) -> TrainConfig:
    """A checked `TrainConfig`: ``preset``, then the YAML ``file``, then ``overrides``, then ``sets``."""
    return resolve(file, overrides, list(sets or []), preset)


def train(cfg: TrainConfig, *, force: bool = False, reporter: Reporter = QUIET) -> TrainResult:
    """Train as ``cfg`` says (resuming when ``cfg.resume``); ``force``: write into a folder that is not a run."""
    from ..train.trainer import train as run_training

    with reporter.progress(cfg.steps, f"train ({cfg.mode})", "it") as advance:
        final = run_training(cfg, on_progress=advance, force=force)
    return TrainResult(out=Path(cfg.out), step=final["step"], val=dict(final.get("val") or {}), digest=final["digest"],
                       skipped_steps=final.get("skipped_steps") or 0, record=final)
