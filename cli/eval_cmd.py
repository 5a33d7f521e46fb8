"""`ptg eval`: PSNR/SSIM (and LPIPS) of F and F + PTG-RM on a test split, or of existing outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ptg.pipeline.core.errors import PtgError

from .options import AllowOutside, DeviceOpt, MaxMemoryOpt, RootOpt, TrustOpt, TrustRecordedOpt

CropBorderOpt = Annotated[int, typer.Option("--crop-border", help="Pixels removed on every side before scoring (BasicSR crop_border).")]
YChannelOpt = Annotated[bool, typer.Option("--y-channel", help="Score PSNR/SSIM on the Y channel (MATLAB BT.601) instead of RGB.")]
MatlabRoundOpt = Annotated[bool, typer.Option("--matlab-round-y", help="Round Y to integers as some MATLAB scripts do (not BasicSR's default).")]
LpipsOpt = Annotated[bool, typer.Option("--lpips", help="Also compute LPIPS (needs torchvision's AlexNet/VGG ImageNet weights).")]
LpipsNetOpt = Annotated[str, typer.Option("--lpips-net", help="LPIPS backbone: alex | vgg.")]
LpipsWeightsOpt = Annotated[Optional[Path], typer.Option("--lpips-weights", help="torchvision backbone weights file for LPIPS (offline machines).")]


def eval_command(
    run: Annotated[Optional[Path], typer.Option("--run", help="Run folder of `ptg train` (uses checkpoints/best.pt, else last.pt; says which).")] = None,
    ckpt: Annotated[Optional[Path], typer.Option("--ckpt", help="A checkpoint file or a `ptg export` folder (instead of --run).")] = None,
    pred: Annotated[Optional[Path], typer.Option("--pred", help="Score existing outputs DIR/<id>.png instead of running a model.")] = None,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", "-m", help="Manifest of the test images (default: the run's).")] = None,
    root: RootOpt = None,
    allow_outside: AllowOutside = False,
    trust_recorded: TrustRecordedOpt = False,
    priors: Annotated[Optional[list[str]], typer.Option("--priors", help="Priors store(s) (folders or s3:// URLs), one per store the model was trained with (default: the recorded ones).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default RUN/eval); with --pred a .json file.")] = None,
    split: Annotated[str, typer.Option("--split", help="Manifest split to evaluate.")] = "test",
    crop_border: CropBorderOpt = 0,
    y_channel: YChannelOpt = False,
    matlab_round_y: MatlabRoundOpt = False,
    lpips: LpipsOpt = False,
    lpips_net: LpipsNetOpt = "alex",
    lpips_weights: LpipsWeightsOpt = None,
    tile: Annotated[Optional[int], typer.Option("--tile", help="Tiled inference with this tile side (bounded memory; see docs on where it changes results).")] = None,
    overlap: Annotated[int, typer.Option("--overlap", help="Overlap between tiles, in pixels.")] = 32,
    max_memory: MaxMemoryOpt = "auto",
    grids: Annotated[int, typer.Option("--grids", help="Write comparison grids for the first N images.")] = 4,
    no_images: Annotated[bool, typer.Option("--no-images", help="Do not write the restored images.")] = False,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Test-set name in tables (default: the manifest's file name).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Name of this evaluation in reports (default: the run folder's name).")] = None,
    device: DeviceOpt = "auto",
    prior_from: Annotated[Optional[list[Path]], typer.Option("--prior-from", help="`ptg distill` folder(s), one per store: score F + R with the students' priors, beside the teacher's (stores) when those are readable.")] = None,
    trust_network: TrustOpt = None,
    f_outputs: Annotated[Optional[Path], typer.Option("--f-outputs", help="Score with F's cached outputs of the split (a `ptg extract-outputs` store of the run's F, or a folder of <id>.png) instead of running F.")] = None,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="A run trained on cached outputs: run this F live instead (its fingerprint must be the recorded one).")] = None,
    baseline_weights: Annotated[Optional[Path], typer.Option("--baseline-weights", help="With --baseline: F's weights file (as for `ptg extract-outputs`).")] = None,
    image_store: Annotated[Optional[Path], typer.Option("--image-store", help="Image store serving decoded inputs and targets when it holds a file's current bytes (default: the run's data.image_store, else $PTG_CACHE/images; files are decoded otherwise).")] = None,
) -> None:
    """Evaluate F and F + PTG-RM on a test split, or score existing outputs with --pred.

    Writes restored images, per_image.csv, metrics.json, grids and table.md (the paper's form:
    baseline, + PTG-RM and the deltas, SSIM delta ×100).
    """
    from ptg.ptgrm import api

    from .console import cli_reporter, console

    metrics = api.MetricSettings(crop_border=crop_border, y_channel=y_channel, matlab_round_y=matlab_round_y, lpips=lpips,
                                 lpips_net=lpips_net, lpips_weights=str(lpips_weights) if lpips_weights else None)
    if pred is not None:
        if run is not None or ckpt is not None:
            raise PtgError("--pred scores existing outputs; drop --run/--ckpt (or drop --pred to run the model)")
        if manifest is None:
            raise PtgError("--pred needs --manifest M (its targets are the references)")
        if out is None:
            raise PtgError("with --pred, --out must be a .json file (got None); e.g. --out scores.json")
        result = api.score_outputs(pred, manifest, out, root=root, split=split, metrics=metrics,
                                   allow_outside=allow_outside, reporter=cli_reporter())
        m = result["mean"]
        extra = f", LPIPS {m['lpips']:.4f}" if "lpips" in m else ""
        console.print(f"{len(result['images'])} image(s): PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}{extra} -> {out}", highlight=False)
        return
    if (run is None) == (ckpt is None):
        raise PtgError("give exactly one of --run RUN_DIR or --ckpt CHECKPOINT (or --pred DIR to score existing outputs)")
    if ckpt is not None and out is None:
        raise PtgError("with --ckpt, give --out DIR for the evaluation's outputs")
    req = api.EvalRequest(
        model=run or ckpt, out=out, manifest=manifest, root=root, split=split, priors=priors, metrics=metrics, tile=tile,
        overlap=overlap, max_memory=max_memory, grids=grids, save_images=not no_images, dataset=dataset, name=name,
        device=device, prior_from=prior_from, trusted_networks=tuple(trust_network or ()), allow_outside=allow_outside,
        trust_recorded=trust_recorded, f_outputs=f_outputs, baseline=baseline, baseline_weights=baseline_weights,
        image_store=image_store)
    res = api.evaluate(req, cli_reporter())
    console.print(res.table, highlight=False, markup=False)
    if res.teacher_vs_student:
        console.print(res.teacher_vs_student, highlight=False, markup=False)
    console.print(f"wrote {res.out}/metrics.json, per_image.csv, table.md" + (", images/" if not no_images else "")
                  + (", grids/" if grids else "") + f" ({res.n_images} image(s), {res.n_scored} scored; checkpoint {res.checkpoint})",
                  highlight=False)
