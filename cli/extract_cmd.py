"""`ptg extract-priors`: run a frozen pre-trained encoder once over a manifest and cache its priors."""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Optional

import typer

from .console import console, err_console, human_bytes, progress_bar
from .options import AllowOutside, ManifestArg, RootOpt


def extract_priors(
    manifest: ManifestArg,
    model: Annotated[str, typer.Option("--model", help="Encoder (see `ptg encoders`): imagenet | clip | blip2 | sd | restoration | degradation (from the manifest).")] = "imagenet",
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Store directory (.zarr) or bucket URL (s3://bucket/prefix; credentials from AWS_* variables); default: a shared store per encoder under $PTG_CACHE (~/.cache/ptg).")] = None,
    root: RootOpt = None,
    allow_outside: AllowOutside = False,
    arch: Annotated[Optional[str], typer.Option(help="clip: open_clip model name (ViT-B-32) or a model-config .json.")] = None,
    pretrained: Annotated[Optional[str], typer.Option(help="Weights: open_clip tag, hub id, local file or directory (default: the encoder's).")] = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="Random weights, for tests only (recorded in the store; readers warn).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of --random-init weights.")] = 0,
    timestep: Annotated[Optional[int], typer.Option(help="sd: also pool UNet mid-block features at this timestep.")] = None,
    size: Annotated[Optional[int], typer.Option(help="Override the encoder's input side (e.g. sd at 256 on a CPU).")] = None,
    views: Annotated[str, typer.Option(help="identity | flips | d4 | tiles:N — the views whose priors are cached.")] = "identity",
    dtype: Annotated[str, typer.Option(help="Storage dtype: float16 | float32.")] = "float16",
    split: Annotated[Optional[str], typer.Option(help="Only rows of this split (default: all).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch (and rows per forward pass).")] = 16,
    loader_workers: Annotated[Optional[int], typer.Option(help="DataLoader processes decoding images; 0 = one decode thread in this process (default: 0 on <= 2 CPUs, else min(4, CPUs-1)).")] = None,
    workers: Annotated[int, typer.Option(help="Run on a local dask cluster of N processes (0: this process).")] = 0,
    dask_scheduler: Annotated[Optional[str], typer.Option(help="Address of an existing dask.distributed scheduler (workers read the manifest's image paths; a folder --out must be shared, an s3:// --out needs AWS_* on the workers).")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Leave unreadable images out (recorded in the metadata) instead of stopping.")] = False,
    rows_per_shard: Annotated[Optional[int], typer.Option(help="Rows per shard of a new store (default: ~4 MiB shards).")] = None,
    device: Annotated[str, typer.Option(help="Torch device of the encoder: cpu | cuda | cuda:1 ...")] = "cpu",
    force: Annotated[bool, typer.Option("--force", help="Write into an existing --out that is not a priors store (nothing in it is deleted).")] = False,
) -> None:
    """Compute the priors of a manifest's degraded images once, into a crash-safe Zarr store.

    Re-running computes only images whose bytes are not in the store yet (also after a crash).
    """
    from ptg.pipeline.encoders import EncoderSpec
    from ptg.pipeline.priors.extract import extract_priors as run

    spec = EncoderSpec(model, arch=arch, pretrained=pretrained, random_init=random_init, seed=seed,
                       timestep=timestep, size=size, device=device)
    if random_init:
        err_console.print(f"[bold yellow]warning:[/] building {model} with RANDOM weights (--random-init): the store's "
                          "priors carry no pre-trained knowledge and every reader will warn. Tests only.")
    with ExitStack() as stack:
        state: dict = {}

        def on_plan(plan) -> None:
            console.print(f"store {plan.store}: {plan.unique} distinct images, {plan.reused} already stored, "
                          f"{plan.to_compute} to compute in {plan.shards} shard(s)"
                          + (f", {len(plan.skipped)} skipped" if plan.skipped else ""), highlight=False)
            if plan.to_compute:
                state["advance"] = stack.enter_context(progress_bar(plan.to_compute, f"priors ({model})", unit="img"))

        def on_progress(n: int) -> None:
            if "advance" in state:
                state["advance"](n)

        # --model degradation is the engine's recorded-degradation row source (no image decoded)
        summary = run(manifest, spec, out=out, views=views, dtype=dtype, batch_size=batch_size,
                      loader_workers=loader_workers, workers=workers, dask_scheduler=dask_scheduler,
                      skip_bad=skip_bad, split=split, root=root, outside="allow" if allow_outside else "refuse",
                      rows_per_shard=rows_per_shard,
                      on_progress=on_progress, on_plan=on_plan, force=force)
    for s in summary.skipped:  # bad images are found while computing (--skip-bad)
        err_console.print(f"[yellow]skipped[/] line {s.line} (id {s.id!r}): {s.reason}", highlight=False)
    rate = f", {summary.computed / summary.seconds:.1f} img/s" if summary.computed and summary.seconds > 0 else ""
    console.print(
        f"[bold green]done[/]: {summary.computed} computed, {summary.reused} reused, {len(summary.skipped)} skipped "
        f"({summary.samples} manifest rows, {summary.unique} distinct) in {summary.seconds:.1f} s{rate}; "
        f"store {summary.store} ({human_bytes(summary.store_bytes)}, {summary.dim}-d x {len(summary.views)} view(s), "
        f"weights {'RANDOM INIT' if summary.random_init else summary.fingerprint[:16]})",
        highlight=False, soft_wrap=True,
    )
