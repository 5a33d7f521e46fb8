"""`ptg eval`: PSNR/SSIM (and LPIPS) of F and F + PTG-RM on a test split, or of existing outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional, Sequence

import typer

from ptg.pipeline.errors import PtgError

from .options import DeviceOpt, MaxMemoryOpt, RootOpt, TrustOpt

CropBorderOpt = Annotated[int, typer.Option("--crop-border", help="Pixels removed on every side before scoring (BasicSR crop_border).")]
YChannelOpt = Annotated[bool, typer.Option("--y-channel", help="Score PSNR/SSIM on the Y channel (MATLAB BT.601) instead of RGB.")]
MatlabRoundOpt = Annotated[bool, typer.Option("--matlab-round-y", help="Round Y to integers as some MATLAB scripts do (not BasicSR's default).")]
LpipsOpt = Annotated[bool, typer.Option("--lpips", help="Also compute LPIPS (needs torchvision's AlexNet/VGG ImageNet weights).")]
LpipsNetOpt = Annotated[str, typer.Option("--lpips-net", help="LPIPS backbone: alex | vgg.")]
LpipsWeightsOpt = Annotated[Optional[Path], typer.Option("--lpips-weights", help="torchvision backbone weights file for LPIPS (offline machines).")]


def _settings(crop_border: int, y_channel: bool, matlab_round_y: bool, lpips: bool, lpips_net: str, lpips_weights: Path | None):
    from ptg.ptgrm.evaluate import MetricSettings

    return MetricSettings(crop_border=crop_border, y_channel=y_channel, matlab_round_y=matlab_round_y, lpips=lpips,
                          lpips_net=lpips_net, lpips_weights=str(lpips_weights) if lpips_weights else None)


def eval_command(
    run: Annotated[Optional[Path], typer.Option("--run", help="Run folder of `ptg train` (uses checkpoints/best.pt, else last.pt; says which).")] = None,
    ckpt: Annotated[Optional[Path], typer.Option("--ckpt", help="A checkpoint file or a `ptg export` folder (instead of --run).")] = None,
    pred: Annotated[Optional[Path], typer.Option("--pred", help="Score existing outputs DIR/<id>.png instead of running a model.")] = None,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", "-m", help="Manifest of the test images (default: the run's).")] = None,
    root: RootOpt = None,
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
) -> None:
    """Evaluate F and F + PTG-RM on a test split, or score existing outputs with --pred.

    Writes restored images, per_image.csv, metrics.json, grids and table.md (the paper's form:
    baseline, + PTG-RM and the deltas, SSIM delta ×100).
    """
    from .console import console

    settings = _settings(crop_border, y_channel, matlab_round_y, lpips, lpips_net, lpips_weights)
    if pred is not None:
        if run is not None or ckpt is not None:
            raise PtgError("--pred scores existing outputs; drop --run/--ckpt (or drop --pred to run the model)")
        _score_pred(pred, manifest, root, out, split, settings)
        return
    if (run is None) == (ckpt is None):
        raise PtgError("give exactly one of --run RUN_DIR or --ckpt CHECKPOINT (or --pred DIR to score existing outputs)")
    _eval_model(run or ckpt, run is not None, manifest, root, priors, out, split, settings, tile, overlap, grids,
                not no_images, dataset, name, device, console, max_memory, prior_from, trust_network or ())


def _score_pred(pred: Path, manifest: Path | None, root: Path | None, out: Path | None, split: str, settings) -> None:
    from ptg.pipeline.fsio import atomic_write_json
    from ptg.pipeline.manifest import load_manifest
    from ptg.ptgrm.evaluate import score_predictions

    from .console import console, progress_bar

    if manifest is None:
        raise PtgError("--pred needs --manifest M (its targets are the references)")
    if out is None or out.suffix.lower() != ".json":
        raise PtgError(f"with --pred, --out must be a .json file (got {out}); e.g. --out scores.json")
    samples = load_manifest(manifest, root).split(split)
    with progress_bar(len(samples), "scoring", unit="img") as advance:
        result = score_predictions(pred, samples, settings, on_progress=advance)
    atomic_write_json(out, result)
    m = result["mean"]
    extra = f", LPIPS {m['lpips']:.4f}" if "lpips" in m else ""
    console.print(f"{len(samples)} image(s): PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}{extra} -> {out}", highlight=False)


def _prior_label(entries: list[dict[str, Any]]) -> str:
    names = []
    for e in entries:
        enc = (e.get("metadata") or {}).get("encoder") or {}
        arch = (enc.get("details") or {}).get("arch")
        label = enc.get("name") or Path(str(e.get("path"))).stem
        if arch and str(arch).endswith(".json"):  # an open_clip model-config file: its name is enough
            arch = Path(str(arch)).stem
        names.append(label if not arch or enc.get("name") == "imagenet" else f"{label}:{arch}")
    return "+".join(names)


def _eval_model(source: Path, is_run: bool, manifest: Path | None, root: Path | None, priors: list[Path] | None,
                out: Path | None, split: str, settings, tile: int | None, overlap: int, grids: int, save_images: bool,
                dataset: str | None, name: str | None, device: str, console, max_memory: str = "auto",
                prior_from: list[Path] | None = None, trusted: Sequence[str] = ()) -> None:
    from ptg.pipeline.manifest import load_manifest
    from ptg.ptgrm.evaluate import EvalOptions, evaluate
    from ptg.ptgrm.infer import Restorer, StorePriors, check_tiling, prior_source
    from ptg.ptgrm.train.run_utils import resolve_device

    from .console import progress_bar

    dev = str(resolve_device(device))
    restorer = Restorer.load(source, device=dev, trusted=trusted)
    meta = restorer.info
    console.print(f"scoring {meta['source']} (step {meta['step']}, {meta['weights']} weights)", highlight=False)
    data_cfg = meta["config"].get("data", {})
    if manifest is None:
        if not data_cfg.get("manifest"):
            raise PtgError(f"{meta['source']} records no manifest; pass --manifest M")
        manifest = Path(data_cfg["manifest"])
        root = root or (Path(data_cfg["root"]) if data_cfg.get("root") else None)
    if out is None:
        if not is_run:
            raise PtgError("with --ckpt, give --out DIR for the evaluation's outputs")
        out = source / "eval"
    multiple = restorer.multiple
    check_tiling(tile, overlap, multiple)
    samples = load_manifest(manifest, root).split(split)
    if not samples:
        raise PtgError(f"the manifest {manifest} has no {split!r} rows; choose another --split")
    if not prior_from and not priors and meta.get("students"):
        prior_from = [Path(p) for p in meta["students"]]  # an export that carries its students
    teacher = StorePriors(meta["priors"], priors) if restorer.needs_priors and not prior_from else None
    if prior_from and restorer.needs_priors:
        student, how = prior_source(restorer, None, prior_from, dev)
        console.print(f"priors {how}", highlight=False)
        try:
            teacher = StorePriors(meta["priors"], priors)
        except PtgError as exc:
            console.print(f"[yellow]no teacher comparison[/]: {exc}", highlight=False)
    src = Path(meta["source"])
    run_dir = src.parent.parent if src.parent.name == "checkpoints" else src
    info = {
        "name": name or run_dir.name,
        # a manifest called manifest.jsonl is named by its folder (as `ptg data samples` writes it)
        "dataset": dataset or (manifest.resolve().parent.name if manifest.stem == "manifest" else manifest.stem),
        "baseline": meta["baseline"]["name"],
        "refiner": meta["refiner"]["name"] if restorer.r is not None else None,
        "prior": _prior_label(meta["priors"]) if restorer.uses_priors else None,
        "prior_transform": restorer.transform.describe() if restorer.uses_priors else None,
        "mode": meta["mode"],
        "checkpoint": meta["source"],
        "weights": meta["weights"],
        "step": meta["step"],
        "manifest": str(manifest),
        "split": split,
        "priors": [str(p) for p in priors] if priors else [str(e["path"]) for e in meta["priors"]],
    }
    options = EvalOptions(tile=tile, overlap=overlap, save_images=save_images, grids=grids, device=dev, max_memory=max_memory)
    if prior_from and restorer.needs_priors:
        info["prior_from"] = [str(p) for p in prior_from]
        with progress_bar(len(samples), f"eval {info['name']} (student priors)", unit="img") as advance:
            result = evaluate(restorer, samples, out, settings=settings, options=options, priors_for=student,
                              info=info, on_progress=advance)
        if teacher is not None and result["mean"]["ptgrm"] is not None:
            with progress_bar(len(samples), f"eval {info['name']} (teacher priors)", unit="img") as advance:
                by_teacher = evaluate(restorer, samples, out / "teacher", settings=settings, options=options,
                                      priors_for=teacher, info={**info, "prior_from": None}, on_progress=advance)
            from ptg.pipeline.fsio import atomic_write_text

            atomic_write_text(out / "teacher_vs_student.md", _teacher_vs_student(by_teacher, result))
            console.print((out / "teacher_vs_student.md").read_text(encoding="utf-8"), highlight=False, markup=False)
    else:
        with progress_bar(len(samples), f"eval {info['name']}", unit="img") as advance:
            result = evaluate(restorer, samples, out, settings=settings, options=options, priors_for=teacher,
                              info=info, on_progress=advance)
    console.print((out / "table.md").read_text(encoding="utf-8"), highlight=False, markup=False)
    console.print(f"wrote {out}/metrics.json, per_image.csv, table.md"
                  + (", images/" if save_images else "") + (", grids/" if grids else "")
                  + f" ({result['n_images']} image(s), {result['n_scored']} scored; checkpoint {meta['source']})",
                  highlight=False)


def _teacher_vs_student(teacher: dict[str, Any], student: dict[str, Any]) -> str:
    """F + R with the teacher's cached priors beside F + R with the distilled students' priors."""
    t, st = teacher["mean"]["ptgrm"], student["mean"]["ptgrm"]
    f = teacher["mean"]["baseline"]
    rows = ["| F alone PSNR | F + R, teacher priors PSNR | SSIM | F + R, student priors PSNR | SSIM | student − teacher PSNR |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {f['psnr']:.2f} | {t['psnr']:.2f} | {t['ssim']:.4f} | {st['psnr']:.2f} | {st['ssim']:.4f} | "
            f"{st['psnr'] - t['psnr']:+.3f} |"]
    return f"F + R with teacher vs student priors ({student['n_scored']} image(s)):\n\n" + "\n".join(rows) + "\n"
