"""`ptg export`: a run's trained F and R as safetensors + config.json (see `ptg.ptgrm.artifacts.export`)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ptg.pipeline.core.errors import PtgError


def export_command(
    run: Annotated[Path, typer.Argument(help="Run folder of `ptg train` (best.pt, else last.pt) or a checkpoint file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Export folder to write (new, empty, or an earlier export).")],
    last: Annotated[bool, typer.Option("--last", help="Export checkpoints/last.pt even when best.pt exists.")] = False,
    no_ema: Annotated[bool, typer.Option("--no-ema", help="Export the raw weights instead of the EMA weights.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write into an existing folder that is not a ptg export.")] = False,
    student: Annotated[Optional[list[Path]], typer.Option("--student", help="A `ptg distill` folder per priors store (repeatable, in order): the export then restores without the foundation model.")] = None,
    format: Annotated[str, typer.Option("--format", help="safetensors (F and R + config.json) or onnx (OUT/model.onnx: one graph with F, R and the prior's source; docs/onnx.md).")] = "safetensors",
    prior: Annotated[str, typer.Option("--prior", help="onnx: where the graph's prior comes from: auto, encoder, student (--student) or input (a second graph input).")] = "auto",
    metrics: Annotated[Optional[Path], typer.Option("--metrics", help="onnx: a `ptg eval` metrics.json of this run; its test PSNR goes into the model's metadata.")] = None,
) -> None:
    """Write F and R as safetensors plus config.json (what `ptg eval --ckpt` and `ptg restore --ckpt` load),
    or with --format onnx one graph with F, R and the prior's source (docs/onnx.md)."""
    from ptg.ptgrm import api

    from .console import console

    if format not in ("safetensors", "onnx"):
        raise PtgError(f"--format {format!r} is not safetensors or onnx")
    prefer = "last" if last else "best"
    if format == "onnx":
        done = api.export_onnx(run, out, prior=prior, students=student, prefer=prefer, use_ema=not no_ema, force=force,
                               metrics=metrics)
        console.print(f"exported {run} as ONNX ({done.metadata['ptg.prior']}) -> {done.path}", highlight=False)
        return
    cfg = api.export_run(run, out, prefer=prefer, force=force, use_ema=not no_ema, students=student)
    src = cfg["source"]
    console.print(f"exported {src['checkpoint']} (step {src['step']}, {src['weights']} weights) -> {out}"
                  + (f" with {len(cfg['students'])} prior student(s)" if cfg["students"] else ""), highlight=False)
