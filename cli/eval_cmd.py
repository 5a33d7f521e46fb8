"""`ptg eval`: PSNR/SSIM (and LPIPS) of F and F + PTG-RM on a test split, or of existing outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional, Sequence

import typer

from ptg.pipeline.core.errors import PtgError

from .options import AllowOutside, DeviceOpt, MaxMemoryOpt, RootOpt, TrustOpt, TrustRecordedOpt

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
    from .console import console

    settings = _settings(crop_border, y_channel, matlab_round_y, lpips, lpips_net, lpips_weights)
    access = {"outside": "allow" if allow_outside else "refuse", "trust": trust_recorded}
    if pred is not None:
        if run is not None or ckpt is not None:
            raise PtgError("--pred scores existing outputs; drop --run/--ckpt (or drop --pred to run the model)")
        _score_pred(pred, manifest, root, out, split, settings, access["outside"])
        return
    if (run is None) == (ckpt is None):
        raise PtgError("give exactly one of --run RUN_DIR or --ckpt CHECKPOINT (or --pred DIR to score existing outputs)")
    live = (baseline, baseline_weights) if baseline else None
    _eval_model(run or ckpt, run is not None, manifest, root, priors, out, split, settings, tile, overlap, grids,
                not no_images, dataset, name, device, console, max_memory, prior_from, trust_network or (), access,
                f_source=(f_outputs, live, image_store))


def _score_pred(pred: Path, manifest: Path | None, root: Path | None, out: Path | None, split: str, settings,
                outside: str = "refuse") -> None:
    from ptg.pipeline.core.fsio import atomic_write_json
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.ptgrm.evaluate import score_predictions

    from .console import console, progress_bar

    if manifest is None:
        raise PtgError("--pred needs --manifest M (its targets are the references)")
    if out is None or out.suffix.lower() != ".json":
        raise PtgError(f"with --pred, --out must be a .json file (got {out}); e.g. --out scores.json")
    samples = load_manifest(manifest, root, outside=outside).split(split)
    with progress_bar(len(samples), "scoring", unit="img") as advance:
        result = score_predictions(pred, samples, settings, on_progress=advance)
    atomic_write_json(out, result)
    m = result["mean"]
    extra = f", LPIPS {m['lpips']:.4f}" if "lpips" in m else ""
    console.print(f"{len(samples)} image(s): PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}{extra} -> {out}", highlight=False)


def _prior_label(stores: Sequence[Any]) -> str:
    """How the table names the priors: each store's encoder (and its architecture)."""
    names = []
    for e in stores:
        enc = e.encoder
        arch = (enc.get("details") or {}).get("arch")
        label = enc.get("name") or Path(e.path).stem
        if arch and str(arch).endswith(".json"):  # an open_clip model-config file: its name is enough
            arch = Path(str(arch)).stem
        names.append(label if not arch or enc.get("name") == "imagenet" else f"{label}:{arch}")
    return "+".join(names)


def _eval_model(source: Path, is_run: bool, manifest: Path | None, root: Path | None, priors: list[Path] | None,
                out: Path | None, split: str, settings, tile: int | None, overlap: int, grids: int, save_images: bool,
                dataset: str | None, name: str | None, device: str, console, max_memory: str = "auto",
                prior_from: list[Path] | None = None, trusted: Sequence[str] = (), access: dict | None = None,
                f_source: tuple[Any, Any, Any] = (None, None, None)) -> None:
    from ptg.pipeline.core import fsio
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.ptgrm.artifacts import load
    from ptg.ptgrm.evaluate import EvalOptions
    from ptg.ptgrm.infer import check_tiling
    from ptg.ptgrm.runtime import resolve_device

    dev = str(resolve_device(device))
    restorer, run = load(source, device=dev, trusted=trusted)
    console.print(f"scoring {run.source} (step {run.step}, {run.weights} weights)", highlight=False)
    access = {"outside": "refuse", "trust": False, **(access or {})}
    if manifest is None:
        manifest, recorded_root = run.manifest
        if manifest is None:
            raise PtgError(f"{run.source} records no manifest; pass --manifest M")
        recorded = {"manifest": manifest, **({"dataset root": recorded_root} if root is None else {})}
        fsio.check_recorded_paths(_recorded_in(run), recorded, access["trust"], "--manifest M --root DIR")
        root = root or recorded_root
        console.print(f"manifest {manifest} (recorded in the run)", highlight=False, markup=False)
    named_out = out is not None
    if out is None:
        if not is_run:
            raise PtgError("with --ckpt, give --out DIR for the evaluation's outputs")
        out = source / "eval"
    fsio.claim_out_dir(out, "eval", named=named_out, legacy=lambda f: (f / "metrics.json").is_file())
    check_tiling(tile, overlap, restorer.multiple)
    samples = load_manifest(manifest, root, outside=access["outside"]).split(split)
    if not samples:
        raise PtgError(f"the manifest {manifest} has no {split!r} rows; choose another --split")
    recorded_images = (run.config.get("data") or {}).get("image_store")
    if f_source[2] is None and recorded_images:  # a teammate's run may record any folder as its image store
        fsio.check_recorded_paths(_recorded_in(run), {"image store": recorded_images}, access["trust"], "--image-store STORE")
    io = _f_and_pixels(restorer, run, samples, *f_source, dev, console)
    info = _eval_info(restorer, run, name, dataset, manifest, split, priors)
    info["f_source"] = io.pop("f_source")
    options = EvalOptions(tile=tile, overlap=overlap, save_images=save_images, grids=grids, device=dev, max_memory=max_memory)
    if restorer.needs_priors and not priors:
        console.print(f"priors stores recorded in the run: {', '.join(e.path for e in run.priors)}", highlight=False, markup=False)
    stores = lambda: fsio.check_recorded_paths(_recorded_in(run), {f"priors store {e.path}": e.path for e in run.priors},  # noqa: E731
                                               access["trust"] or bool(priors), "--priors STORE, one per store")
    result = _run_evals(restorer, run, samples, out, settings, options, info, priors, prior_from, dev, console, stores, io)
    console.print((out / "table.md").read_text(encoding="utf-8"), highlight=False, markup=False)
    console.print(f"wrote {out}/metrics.json, per_image.csv, table.md"
                  + (", images/" if save_images else "") + (", grids/" if grids else "")
                  + f" ({result['n_images']} image(s), {result['n_scored']} scored; checkpoint {run.source})",
                  highlight=False)


def _recorded_in(run) -> Path:
    """The file a run's recorded paths come from: the checkpoint, or an export's config.json."""
    src = Path(run.source)
    return src / "config.json" if src.is_dir() else src


def _f_and_pixels(restorer, run, samples, f_outputs: Path | None, live: tuple[str, Path | None] | None,
                  image_store: Path | None, dev: str, console) -> dict[str, Any]:
    """Where F's outputs come from (the run's F, a live F for a cached run, or cached outputs) and
    where pixels come from (the image store when it holds a file's bytes: `image_loader`)."""
    from ptg.pipeline.storage.imagestore import image_loader
    from ptg.ptgrm import f_outputs as fo

    recorded = run.baseline.weights_sha256 if run.baseline.kind == "cached-outputs" else None
    io: dict[str, Any] = {"f_source": "live"}
    if f_outputs is not None and live is not None:
        raise PtgError("give --f-outputs (cached F outputs) or --baseline (a live F), not both")
    if f_outputs is not None:
        outs = fo.open_cached_outputs(f_outputs, samples)
        restorer.f = fo.stand_in_for(restorer.f, run.baseline.name, recorded, outs).to(dev)
        io.update(f_outputs=outs, f_source=f"cached {outs.kind} {outs.source}")
    elif live is not None:
        from ptg.ptgrm.frozen_f import use_live_f

        use_live_f(restorer, run, *live, dev)
        io["f_source"] = f"live {live[0]}"
    elif run.baseline.kind == "cached-outputs":
        raise PtgError(f"{run.source} was trained on F's cached outputs ({run.baseline.args.get('f') or 'a folder'}): pass "
                       "--f-outputs OUTS (the test split's outputs, `ptg extract-outputs`) or --baseline NAME "
                       "[--baseline-weights FILE] to run that F live")
    store = image_store or ((run.config.get("data") or {}).get("image_store") or None)
    io["read"] = image_loader(store)
    console.print(f"F: {io['f_source']}; pixels from the image store {store or 'default'} where it holds them",
                  highlight=False)
    return io


def _eval_info(restorer, run, name: str | None, dataset: str | None, manifest: Path, split: str,
               priors: list[Path] | None) -> dict[str, Any]:
    """The provenance metrics.json records (and `ptg report` reads)."""
    return {
        "name": name or run.run_dir.name,
        # a manifest called manifest.jsonl is named by its folder (as `ptg data samples` writes it)
        "dataset": dataset or (manifest.resolve().parent.name if manifest.stem == "manifest" else manifest.stem),
        "baseline": run.baseline.name,
        "refiner": run.refiner.name if restorer.r is not None else None,
        "prior": _prior_label(run.priors) if restorer.uses_priors else None,
        "prior_transform": restorer.transform.describe() if restorer.uses_priors else None,
        "mode": run.mode,
        "checkpoint": run.source,
        "weights": run.weights,
        "step": run.step,
        "manifest": str(manifest),
        "split": split,
        "priors": [str(p) for p in priors] if priors else [e.path for e in run.priors],
    }


def _run_evals(restorer, run, samples, out: Path, settings, options, info: dict[str, Any], priors: list[Path] | None,
               prior_from: list[Path] | None, dev: str, console, check_stores=lambda: None,
               io: dict[str, Any] | None = None) -> dict[str, Any]:
    """F + R with the teacher's cached priors, or with students' priors and then (when the stores
    are readable) the teacher's beside them in ``out/teacher``. ``check_stores`` refuses recorded
    store paths ptg may not follow (`fsio.check_recorded_paths`)."""
    from ptg.pipeline.core.fsio import atomic_write_text
    from ptg.ptgrm.evaluate import evaluate
    from ptg.ptgrm.infer import StorePriors, chosen_students, prior_source

    from .console import progress_bar

    def run_one(where: Path, source, run_info: dict[str, Any], what: str) -> dict[str, Any]:
        with progress_bar(len(samples), f"eval {info['name']}{what}", unit="img") as advance:
            return evaluate(restorer, samples, where, settings=settings, options=options, priors_for=source,
                            info=run_info, on_progress=advance, **(io or {}))

    students = chosen_students(run, priors, prior_from) if restorer.needs_priors else []
    if not students:
        if restorer.needs_priors:
            check_stores()
        return run_one(out, StorePriors(run.priors, priors) if restorer.needs_priors else None, info, "")
    student, how = prior_source(restorer, run, None, students, dev)
    console.print(f"priors {how}", highlight=False)
    try:
        check_stores()
        teacher = StorePriors(run.priors, priors)
    except PtgError as exc:
        teacher = None
        console.print(f"[yellow]no teacher comparison[/]: {exc}", highlight=False)
    info["prior_from"] = [str(p) for p in students]
    result = run_one(out, student, info, " (student priors)")
    if teacher is not None and result["mean"]["ptgrm"] is not None:
        by_teacher = run_one(out / "teacher", teacher, {**info, "prior_from": None}, " (teacher priors)")
        atomic_write_text(out / "teacher_vs_student.md", _teacher_vs_student(by_teacher, result))
        console.print((out / "teacher_vs_student.md").read_text(encoding="utf-8"), highlight=False, markup=False)
    return result


def _teacher_vs_student(teacher: dict[str, Any], student: dict[str, Any]) -> str:
    """F + R with the teacher's cached priors beside F + R with the distilled students' priors."""
    t, st = teacher["mean"]["ptgrm"], student["mean"]["ptgrm"]
    f = teacher["mean"]["baseline"]
    rows = ["| F alone PSNR | F + R, teacher priors PSNR | SSIM | F + R, student priors PSNR | SSIM | student − teacher PSNR |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {f['psnr']:.2f} | {t['psnr']:.2f} | {t['ssim']:.4f} | {st['psnr']:.2f} | {st['ssim']:.4f} | "
            f"{st['psnr'] - t['psnr']:+.3f} |"]
    return f"F + R with teacher vs student priors ({student['n_scored']} image(s)):\n\n" + "\n".join(rows) + "\n"
