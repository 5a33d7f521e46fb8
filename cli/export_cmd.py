"""`ptg export`: a run's trained F and R as safetensors + config.json (see `ptg.ptgrm.artifacts.export`)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def export_command(
    run: Annotated[Path, typer.Argument(help="Run folder of `ptg train` (best.pt, else last.pt) or a checkpoint file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Export folder to write (new, empty, or an earlier export).")],
    last: Annotated[bool, typer.Option("--last", help="Export checkpoints/last.pt even when best.pt exists.")] = False,
    no_ema: Annotated[bool, typer.Option("--no-ema", help="Export the raw weights instead of the EMA weights.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write into an existing folder that is not a ptg export.")] = False,
    student: Annotated[Optional[list[Path]], typer.Option("--student", help="A `ptg distill` folder per priors store (repeatable, in order): the export then restores without the foundation model.")] = None,
) -> None:
    """Write F and R as safetensors plus config.json: what `ptg eval --ckpt` and `ptg restore --ckpt` load."""
    from ptg.ptgrm.artifacts import export_run

    from .console import console

    cfg = export_run(run, out, prefer="last" if last else "best", force=force, use_ema=not no_ema, students=student)
    src = cfg["source"]
    console.print(f"exported {src['checkpoint']} (step {src['step']}, {src['weights']} weights) -> {out}"
                  + (f" with {len(cfg['students'])} prior student(s)" if cfg["students"] else ""), highlight=False)
