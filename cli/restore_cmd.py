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
    from ptg.pipeline.core import fsio
    from ptg.pipeline.core.imageio import is_image_file, write_image
    from ptg.ptgrm.artifacts import load
    from ptg.ptgrm.frozen_f import use_live_f
    from ptg.ptgrm.infer import check_tiling, memory_budget, prior_source, restore_files, tensor_to_image
    from ptg.ptgrm.runtime import resolve_device

    from .console import console, progress_bar

    if input.is_dir():
        files = sorted(p for p in input.iterdir() if p.is_file() and is_image_file(p))
        if not files:
            raise PtgError(f"no image files in {input}")
    elif input.is_file():
        files = [input]
    else:
        raise PtgError(f"--input {input} is neither an image file nor a folder")
    stems = [p.stem for p in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise PtgError(f"several inputs would be written as {dup[0]}.png (e.g. {dup[0]}.jpg and {dup[0]}.png); restore them separately")
    if input.is_dir() and output.resolve() == input.resolve():
        raise PtgError("--output must differ from --input, so that no input is overwritten")

    if (ckpt is None) == (onnx is None):
        raise PtgError("give either --ckpt (a run, checkpoint or export folder) or --onnx FILE")
    if onnx is not None:
        from ptg.ptgrm.onnx_run import restore_files_onnx

        fsio.claim_out_dir(output, "restored", flag="--output", legacy=lambda f: all(p.is_dir() or is_image_file(p) for p in f.iterdir()))
        for path, img in restore_files_onnx(onnx, files, tile=tile, overlap=overlap, max_memory=max_memory):
            write_image(output / f"{path.stem}.png", img)
        console.print(f"restored {len(files)} image(s) with {onnx} (onnxruntime) -> {output}", highlight=False)
        return
    dev = str(resolve_device(device))
    restorer, run = load(ckpt, device=dev, trusted=trust_network or ())
    if baseline is not None:
        use_live_f(restorer, run, baseline, baseline_weights, dev)
    if not getattr(restorer.f, "runs_on_new_photos", True):  # e.g. a run trained on F's cached outputs
        describe = getattr(restorer.f, "describe", lambda: f"F {run.baseline.name!r}")
        raise PtgError(f"{ckpt} cannot restore new photos: its F is {describe()}, with no network to run. Pass that F "
                       "live: --baseline NAME [--baseline-weights FILE]")
    check_tiling(tile, overlap, restorer.multiple)
    if tile is None:
        memory_budget(max_memory, dev)  # a bad --max-memory is refused before any prior is computed
    source, how = prior_source(restorer, run, priors, prior_from, dev)
    if source is not None:
        console.print(f"priors {how} ({restorer.transform.describe()})", highlight=False)
    fsio.claim_out_dir(output, "restored", flag="--output", legacy=lambda f: all(p.is_dir() or is_image_file(p) for p in f.iterdir()))
    outputs = restore_files(restorer, files, source, tile=tile, overlap=overlap, device=dev, max_memory=max_memory)
    with progress_bar(len(files), "restore", unit="img") as advance:
        for path, (_, f_out, r_out, _) in zip(files, outputs):
            final = r_out if r_out is not None else f_out
            write_image(output / f"{path.stem}.png", tensor_to_image(final))
            if save_baseline and r_out is not None:
                write_image(output / "baseline" / f"{path.stem}.png", tensor_to_image(f_out))
            advance(1)
    what = "F + PTG-RM" if restorer.r is not None else "F"
    console.print(f"restored {len(files)} image(s) with {what} -> {output}", highlight=False)
