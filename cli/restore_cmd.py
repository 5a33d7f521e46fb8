"""`ptg restore`: restore new images (outside any manifest) with F + PTG-RM."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ptg.pipeline.core.errors import PtgError

from .options import DeviceOpt, MaxMemoryOpt, TrustOpt


def restore_command(
    input: Annotated[Path, typer.Option("--input", "-i", help="An image file or a folder of images.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the restored images (<name>.png).")],
    ckpt: Annotated[Optional[Path], typer.Option("--ckpt", help="Checkpoint file or run folder of `ptg train`, or a `ptg export` folder.")] = None,
    onnx: Annotated[Optional[Path], typer.Option("--onnx", help="Instead of --ckpt: a `ptg export --format onnx` model.onnx, run with onnxruntime.")] = None,
    priors: Annotated[Optional[list[str]], typer.Option("--priors", help="Priors store(s) (folders or s3:// URLs) holding these images; default: compute the priors with the checkpoint's encoder (needs the extract extra).")] = None,
    prior_from: Annotated[Optional[list[Path]], typer.Option("--prior-from", help="`ptg distill` folder(s), one per store: compute the priors with the distilled student, no foundation model.")] = None,
    tile: Annotated[Optional[int], typer.Option("--tile", help="Tiled inference with this tile side, for large images.")] = None,
    overlap: Annotated[int, typer.Option("--overlap", help="Overlap between tiles, in pixels.")] = 32,
    max_memory: MaxMemoryOpt = "auto",
    save_baseline: Annotated[bool, typer.Option("--save-baseline", help="Also write F's output to OUTPUT/baseline/.")] = False,
    device: DeviceOpt = "auto",
    trust_network: TrustOpt = None,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="A run trained on F's cached outputs: the F that made them, run live (its fingerprint must be the recorded one).")] = None,
    baseline_weights: Annotated[Optional[Path], typer.Option("--baseline-weights", help="With --baseline: F's weights file (as for `ptg extract-outputs`).")] = None,
) -> None:
    """Restore images with F + PTG-RM (F alone for a baseline run).

    Priors come from --priors stores (keyed by the image file's bytes), from distilled students
    (--prior-from, or those inside an export folder), or else are computed with the encoder
    recorded in the checkpoint (its weights must be available here).
    """
    from ptg.ptgrm import api

    from .console import cli_reporter, console

    if (ckpt is None) == (onnx is None):
        raise PtgError("give either --ckpt (a run, checkpoint or export folder) or --onnx FILE")
    if onnx is not None:
        res = api.restore_onnx(onnx, input, output, tile=tile, overlap=overlap, max_memory=max_memory)
        console.print(f"restored {len(res.written)} image(s) with {onnx} (onnxruntime) -> {res.output}", highlight=False)
        return
    req = api.RestoreRequest(model=ckpt, input=input, output=output, priors=priors, prior_from=prior_from, tile=tile,
                             overlap=overlap, max_memory=max_memory, save_baseline=save_baseline, device=device,
                             trusted_networks=tuple(trust_network or ()), baseline=baseline, baseline_weights=baseline_weights)
    res = api.restore(req, cli_reporter())
    what = "F + PTG-RM" if res.refined else "F"
    console.print(f"restored {len(res.written)} image(s) with {what} -> {res.output}", highlight=False)
