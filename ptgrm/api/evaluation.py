"""Evaluate a trained model on a manifest split, or score outputs that exist: `ptg eval` as a function.

`evaluate(EvalRequest(...))` loads the model (`ptg.ptgrm.artifacts.load`), decides where F's
outputs come from (its own F, a live F for a cached-outputs run, or cached outputs), where pixels
and priors come from, and runs the evaluation engine (`ptg.ptgrm.evaluate.evaluate`), which
writes images, per_image.csv, metrics.json, grids and table.md. It returns the numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ptg.pipeline.core import fsio
from ptg.pipeline.core.errors import PtgError

from ..evaluate import EvalOptions, MetricSettings
from .reporter import QUIET, Reporter


@dataclass
class EvalRequest:
    """What to evaluate and how; each field is the `ptg eval` option of the same name."""

    model: str | Path  # a `ptg train` run folder (best.pt, else last.pt), a checkpoint file or a `ptg export` folder
    out: str | Path | None = None  # output folder; None: MODEL/eval for a run folder
    manifest: str | Path | None = None  # None: the manifest recorded in the run
    root: str | Path | None = None  # folder the manifest's paths are relative to (None: the recorded one / its folder)
    split: str = "test"  # the manifest split scored
    priors: list[str] | None = None  # priors stores, one per store the model was trained with (None: the recorded ones)
    metrics: MetricSettings = field(default_factory=MetricSettings)  # crop border, Y channel, LPIPS
    tile: int | None = None  # tiled inference with this tile side (None: tile only over max_memory)
    overlap: int = 32  # overlap between tiles, in pixels
    max_memory: str = "auto"  # memory budget per image ("auto" or e.g. "8GiB")
    grids: int = 4  # comparison grids for the first N images
    save_images: bool = True  # write the restored images
    dataset: str | None = None  # test-set name in tables (None: the manifest's name)
    name: str | None = None  # the evaluation's name in reports (None: the run folder's name)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    prior_from: list[Path] | None = None  # `ptg distill` folders: score with the students' priors too
    trusted_networks: Sequence[str] = ()  # user networks (package.module:Class) the checkpoint may import
    allow_outside: bool = False  # accept manifest paths outside the root
    trust_recorded: bool = False  # follow paths recorded in a run that is not yours
    f_outputs: str | Path | None = None  # F's cached outputs of the split instead of running F
    baseline: str | None = None  # a cached-outputs run: run this F live instead
    baseline_weights: str | Path | None = None  # with baseline: F's weights file
    image_store: str | Path | None = None  # image store serving decoded pixels (None: the run's, else the default)


@dataclass
class EvalResult:
    """What an evaluation measured (the whole record is ``out/metrics.json``)."""

    out: Path  # the folder written
    checkpoint: str  # what was scored
    n_images: int  # images in the split
    n_scored: int  # images with a target, scored
    mean: dict[str, Any]  # {"baseline": {"psnr": ..., "ssim": ...}, "ptgrm": {...} or None, ...}
    table: str  # table.md: the paper's form
    teacher_vs_student: str | None = None  # with prior_from and readable stores: the comparison table
    record: dict[str, Any] = field(default_factory=dict, repr=False)  # the full metrics.json content


def score_outputs(pred: str | Path, manifest: str | Path, out: str | Path, *, root: str | Path | None = None,
                  split: str = "test", metrics: MetricSettings | None = None, allow_outside: bool = False,
                  reporter: Reporter = QUIET) -> dict[str, Any]:
    """Score existing outputs ``PRED/<id>.png`` against a manifest's targets; writes ``out`` (.json)."""
    from ptg.pipeline.datasets.manifest import load_manifest

    from ..evaluate import score_predictions

    out = Path(out)
    if out.suffix.lower() != ".json":
        raise PtgError(f"with --pred, --out must be a .json file (got {out}); e.g. --out scores.json")
    samples = load_manifest(manifest, root, outside="allow" if allow_outside else "refuse").split(split)
    with reporter.progress(len(samples), "scoring", "img") as advance:
        result = score_predictions(Path(pred), samples, metrics or MetricSettings(), on_progress=advance)
    fsio.atomic_write_json(out, result)
    return result


def evaluate(req: EvalRequest, reporter: Reporter = QUIET) -> EvalResult:
    """Score F and F + R of a trained model on ``req.split`` of its manifest (see `EvalRequest`)."""
    from ptg.pipeline.datasets.manifest import load_manifest

    from ..artifacts import load
    from ..infer import check_tiling
    from ..runtime import resolve_device

    dev = str(resolve_device(req.device))
    source = Path(req.model)
    restorer, run = load(source, device=dev, trusted=req.trusted_networks)
    reporter.log(f"scoring {run.source} (step {run.step}, {run.weights} weights)")
    manifest, root = _manifest_of(req, run, reporter)
    out = _claim_out(req, source)
    check_tiling(req.tile, req.overlap, restorer.multiple)
    samples = load_manifest(manifest, root, outside="allow" if req.allow_outside else "refuse").split(req.split)
    if not samples:
        raise PtgError(f"the manifest {manifest} has no {req.split!r} rows; choose another --split")
    io = _f_and_pixels(req, restorer, run, samples, dev, reporter)
    info = _eval_info(req, restorer, run, manifest)
    info["f_source"] = io.pop("f_source")
    options = EvalOptions(tile=req.tile, overlap=req.overlap, save_images=req.save_images, grids=req.grids, device=dev,
                          max_memory=req.max_memory)
    if restorer.needs_priors and not req.priors:
        reporter.log(f"priors stores recorded in the run: {', '.join(e.path for e in run.priors)}")
    stores = lambda: fsio.check_recorded_paths(run.recorded_in, {f"priors store {e.path}": e.path for e in run.priors},  # noqa: E731
                                               req.trust_recorded or bool(req.priors), "--priors STORE, one per store")
    result, vs = _run_evals(req, restorer, run, samples, out, options, info, dev, reporter, stores, io)
    return EvalResult(out=out, checkpoint=str(run.source), n_images=result["n_images"], n_scored=result["n_scored"],
                      mean=result["mean"], table=(out / "table.md").read_text(encoding="utf-8"), teacher_vs_student=vs,
                      record=result)


def _manifest_of(req: EvalRequest, run: Any, reporter: Reporter) -> tuple[Path, Path | None]:
    """The manifest and root to score: the request's, else those recorded in the run (if ptg may follow them)."""
    if req.manifest is not None:
        return Path(req.manifest), Path(req.root) if req.root is not None else None
    manifest, recorded_root = run.manifest
    if manifest is None:
        raise PtgError(f"{run.source} records no manifest; pass --manifest M")
    recorded = {"manifest": manifest, **({"dataset root": recorded_root} if req.root is None else {})}
    fsio.check_recorded_paths(run.recorded_in, recorded, req.trust_recorded, "--manifest M --root DIR")
    reporter.log(f"manifest {manifest} (recorded in the run)")
    return Path(manifest), Path(req.root) if req.root is not None else recorded_root


def _claim_out(req: EvalRequest, source: Path) -> Path:
    """The output folder, claimed for an evaluation (an old evaluation's folder is recognised)."""
    if req.out is None and not (source / "checkpoints").is_dir():
        raise PtgError("with --ckpt, give --out DIR for the evaluation's outputs")
    out = Path(req.out) if req.out is not None else source / "eval"
    fsio.claim_out_dir(out, "eval", named=req.out is not None, legacy=lambda f: (f / "metrics.json").is_file())
    return out


def _f_and_pixels(req: EvalRequest, restorer: Any, run: Any, samples: Sequence[Any], dev: str,
                  reporter: Reporter) -> dict[str, Any]:
    """Where F's outputs come from (the run's F, a live F for a cached run, or cached outputs) and
    where pixels come from (the image store when it holds a file's bytes: `image_loader`)."""
    from ptg.pipeline.storage.imagestore import image_loader

    from .. import f_outputs as fo
    from ..frozen_f import use_live_f

    recorded_images = (run.config.get("data") or {}).get("image_store")
    if req.image_store is None and recorded_images:  # a teammate's run may record any folder as its image store
        fsio.check_recorded_paths(run.recorded_in, {"image store": recorded_images}, req.trust_recorded,
                                  "--image-store STORE")
    io: dict[str, Any] = {"f_source": "live"}
    if req.f_outputs is not None and req.baseline is not None:
        raise PtgError("give --f-outputs (cached F outputs) or --baseline (a live F), not both")
    if req.f_outputs is not None:
        outs = fo.open_cached_outputs(req.f_outputs, samples)
        recorded = run.baseline.weights_sha256 if run.baseline.kind == "cached-outputs" else None
        restorer.f = fo.stand_in_for(restorer.f, run.baseline.name, recorded, outs).to(dev)
        io.update(f_outputs=outs, f_source=f"cached {outs.kind} {outs.source}")
    elif req.baseline is not None:
        use_live_f(restorer, run, req.baseline, req.baseline_weights, dev)
        io["f_source"] = f"live {req.baseline}"
    elif run.baseline.kind == "cached-outputs":
        raise PtgError(f"{run.source} was trained on F's cached outputs ({run.baseline.args.get('f') or 'a folder'}): pass "
                       "--f-outputs OUTS (the test split's outputs, `ptg extract-outputs`) or --baseline NAME "
                       "[--baseline-weights FILE] to run that F live")
    store = req.image_store or recorded_images or None
    io["read"] = image_loader(store)
    reporter.log(f"F: {io['f_source']}; pixels from the image store {store or 'default'} where it holds them")
    return io


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


def _eval_info(req: EvalRequest, restorer: Any, run: Any, manifest: Path) -> dict[str, Any]:
    """The provenance metrics.json records (and `ptg report` reads)."""
    return {
        "name": req.name or run.run_dir.name,
        # a manifest called manifest.jsonl is named by its folder (as `ptg data samples` writes it)
        "dataset": req.dataset or (manifest.resolve().parent.name if manifest.stem == "manifest" else manifest.stem),
        "baseline": run.baseline.name,
        "refiner": run.refiner.name if restorer.r is not None else None,
        "prior": _prior_label(run.priors) if restorer.uses_priors else None,
        "prior_transform": restorer.transform.describe() if restorer.uses_priors else None,
        "mode": run.mode,
        "checkpoint": run.source,
        "weights": run.weights,
        "step": run.step,
        "manifest": str(manifest),
        "split": req.split,
        "priors": [str(p) for p in req.priors] if req.priors else [e.path for e in run.priors],
    }


def _run_evals(req: EvalRequest, restorer: Any, run: Any, samples: Sequence[Any], out: Path, options: EvalOptions,
               info: dict[str, Any], dev: str, reporter: Reporter, check_stores: Callable[[], Any],
               io: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """F + R with the teacher's cached priors, or with students' priors and then (when the stores
    are readable) the teacher's beside them in ``out/teacher``. ``check_stores`` refuses recorded
    store paths ptg may not follow (`fsio.check_recorded_paths`)."""
    from ..evaluate import evaluate as run_engine
    from ..infer import StorePriors, chosen_students, prior_source

    def run_one(where: Path, source: Any, run_info: dict[str, Any], what: str) -> dict[str, Any]:
        with reporter.progress(len(samples), f"eval {info['name']}{what}", "img") as advance:
            return run_engine(restorer, samples, where, settings=req.metrics, options=options, priors_for=source,
                              info=run_info, on_progress=advance, **io)

    students = chosen_students(run, req.priors, req.prior_from) if restorer.needs_priors else []
    if not students:
        if restorer.needs_priors:
            check_stores()
        return run_one(out, StorePriors(run.priors, req.priors) if restorer.needs_priors else None, info, ""), None
    student, how = prior_source(restorer, run, None, students, dev)
    reporter.log(f"priors {how}")
    try:
        check_stores()
        teacher = StorePriors(run.priors, req.priors)
    except PtgError as exc:
        teacher = None
        reporter.log(f"no teacher comparison: {exc}")
    info["prior_from"] = [str(p) for p in students]
    result = run_one(out, student, info, " (student priors)")
    if teacher is None or result["mean"]["ptgrm"] is None:
        return result, None
    by_teacher = run_one(out / "teacher", teacher, {**info, "prior_from": None}, " (teacher priors)")
    table = _teacher_vs_student(by_teacher, result)
    fsio.atomic_write_text(out / "teacher_vs_student.md", table)
    return result, table


def _teacher_vs_student(teacher: dict[str, Any], student: dict[str, Any]) -> str:
    """F + R with the teacher's cached priors beside F + R with the distilled students' priors."""
    t, st = teacher["mean"]["ptgrm"], student["mean"]["ptgrm"]
    f = teacher["mean"]["baseline"]
    rows = ["| F alone PSNR | F + R, teacher priors PSNR | SSIM | F + R, student priors PSNR | SSIM | student − teacher PSNR |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {f['psnr']:.2f} | {t['psnr']:.2f} | {t['ssim']:.4f} | {st['psnr']:.2f} | {st['ssim']:.4f} | "
            f"{st['psnr'] - t['psnr']:+.3f} |"]
    return f"F + R with teacher vs student priors ({student['n_scored']} image(s)):\n\n" + "\n".join(rows) + "\n"
