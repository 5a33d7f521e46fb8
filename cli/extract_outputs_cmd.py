"""`ptg extract-outputs`: run a frozen F once over a manifest and cache its outputs ``Ihat``.

R then trains with `ptg train --mode refine --f-outputs OUTS`, with neither F nor G in memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import AllowOutside, DeviceOpt, ManifestArg, RootOpt


def extract_outputs(
    manifest: ManifestArg,
    baseline: Annotated[str, typer.Option("--baseline", help="F: spandrel (with --baseline-weights FILE), oidn, zero-dce, or a registered F with --baseline-weights RUN_OR_STATE_DICT.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The outputs store to write (an image store; resumable).")],
    baseline_weights: Annotated[Optional[Path], typer.Option("--baseline-weights", help="F's weights: a .pth/.ckpt/.safetensors (spandrel), or a `ptg train` run or state dict of a registered F.")] = None,
    baseline_arg: Annotated[Optional[list[str]], typer.Option("--baseline-arg", help="One of F's constructor arguments, key=value (repeatable), as `ptg train --set model.baseline_args.KEY=VALUE`, e.g. --baseline-arg pretrained=true --baseline-arg sigma=30 for FFDNet.")] = None,
    views: Annotated[str, typer.Option("--views", help="identity | flips | d4: the views of each input F runs on (match ptg train's data.augment).")] = "identity",
    dtype: Annotated[str, typer.Option("--dtype", help="float16 (half the bytes) | float32 (exact).")] = "float16",
    split: Annotated[Optional[str], typer.Option("--split", help="Only rows of this split (default: all).")] = None,
    shard_mb: Annotated[float, typer.Option("--shard-mb", help="Target shard size in MiB of a new store (a crash loses at most one shard's work).")] = 32.0,
    root: RootOpt = None,
    device: DeviceOpt = "auto",
    allow_outside: AllowOutside = False,
) -> None:
    """Compute F's outputs of every input (and view) once into a crash-safe, verified image store.

    Re-running computes only the outputs not committed yet (also after a crash).
    """
    from ptg.ptgrm import api
    from ptg.ptgrm.train.config import parse_set

    from .console import cli_reporter, console

    f_args = parse_set(list(baseline_arg or []), "--baseline-arg", "key=value (e.g. --baseline-arg sigma=30)")
    res = api.extract_outputs(manifest, baseline, out, baseline_weights=baseline_weights, baseline_args=f_args, views=views,
                              dtype=dtype, split=split, shard_mb=shard_mb, root=root, device=device,
                              allow_outside=allow_outside, reporter=cli_reporter())
    console.print(f"[bold green]done[/]: {res.written} computed, {res.reused} reused, verified; store {res.store} "
                  f"({res.dtype}, F {baseline} fingerprint {res.fingerprint[:16]})", highlight=False)
