"""`ptg distill`: train a small student that predicts a cached prior, for inference without G.

Thin: parses flags into a `DistillConfig`, draws the progress bar, prints the agreement report.
torch is imported inside the command (via the library), never at module top.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import AllowOutside, DeviceOpt, ManifestArg, OutDir, RootOpt, SeedOpt


def distill_command(
    priors: Annotated[str, typer.Option("--priors", help="The teacher's priors store (from `ptg extract-priors`): a folder or s3://bucket/prefix.")],
    manifest: ManifestArg,
    out: OutDir,
    student: Annotated[str, typer.Option("--student", help="Student network: cnn | efficientnet-lite0.")] = "cnn",
    steps: Annotated[int, typer.Option("--steps", help="Optimiser steps.")] = 1000,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step.")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate (cosine decay to 0).")] = 1e-3,
    normalize: Annotated[str, typer.Option("--normalize", help="Target normalisation: standardize | l2 | none.")] = "standardize",
    head_init: Annotated[str, typer.Option("--head-init", help="ridge (head starts at the ridge read-out) | random.")] = "ridge",
    size: Annotated[Optional[int], typer.Option("--size", help="Student input side (default: the teacher's pinned size).")] = None,
    val_every: Annotated[int, typer.Option("--val-every", help="Validate on the test split every K steps.")] = 100,
    student_arg: Annotated[Optional[list[str]], typer.Option("--student-arg", help="Student option KEY=JSON (repeatable).")] = None,
    device: DeviceOpt = "auto",
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads.")] = None,
    root: RootOpt = None,
    allow_outside: AllowOutside = False,
    force: Annotated[bool, typer.Option("--force", help="Start again over a run with other settings.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Distil the teacher's cached priors into a small student (no foundation model is loaded)."""
    from ptg.pipeline.core.errors import PtgError
    from ptg.ptgrm.distill import DistillConfig, distill

    from .console import console, err_console, progress_bar

    args = {}
    for item in student_arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PtgError(f"--student-arg {item!r} must be KEY=VALUE (VALUE as JSON, e.g. head_rank=128)")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    cfg = DistillConfig(priors=str(priors), manifest=str(manifest), out=str(out), root=None if root is None else str(root),
                        student=student, student_args=args, steps=steps, batch_size=batch_size, lr=lr,
                        normalize=normalize, head_init=head_init, size=size, val_every=val_every, seed=seed, device=device, threads=threads,
                        allow_outside=allow_outside)
    if quiet:
        meta = distill(cfg, force=force)
    else:
        with progress_bar(steps, f"distill ({student})", unit="step") as advance:
            meta = distill(cfg, on_progress=advance, force=force)
    for w in meta.get("warnings", []):
        err_console.print(f"[bold yellow]warning:[/] {w}", highlight=False)
    a = meta["agreement"]
    console.print(f"{out}: {meta['student']} ({meta['params']:,} parameters) imitating {meta['teacher']['encoder']} "
                  f"{meta['dim']}-d priors, {meta['steps']} steps, last weights kept", highlight=False)
    console.print(f"agreement on the test split ({meta['test_rows']} images): cosine {a['cos']:.4f} (min {a['cos_min']:.4f}; "
                  f"train-mean prior {a['cos_mean_prior']:.4f}), MSE {a['mse']:.4g}, normalised MSE {a['mse_normalized']:.4f} "
                  f"(train-mean prior {a['mse_normalized_mean_prior']:.4f})", highlight=False)
    for name, r in meta.get("probe", {}).items():
        show = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        console.print(f"probe {name}: R² teacher {show(r['teacher_r2'])}, student {show(r['student_r2'])}", highlight=False)
