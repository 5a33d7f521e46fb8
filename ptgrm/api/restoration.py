"""Restore images with a trained model: `ptg restore` as functions, for files or for arrays.

`load_model` gives a `Model` (the networks and what was loaded); `restore_arrays` runs it on
H×W×3 float images in memory; `restore` does what `ptg restore` does for image files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ptg.pipeline.core.errors import PtgError

from .reporter import QUIET, Reporter


@dataclass
class Model:
    """A trained model ready to run: the networks (`Restorer`) and what was loaded (`RunInfo`)."""

    restorer: Any  # ptg.ptgrm.restorer.Restorer: F (+ R), in eval mode on `device`
    run: Any  # ptg.ptgrm.artifacts.RunInfo
    device: str  # where the networks are


def load_model(source: str | Path, device: str = "auto", trusted_networks: Sequence[str] = (),
               baseline: str | None = None, baseline_weights: str | Path | None = None) -> Model:
    """A run folder, checkpoint or export, on ``device``; ``baseline``: run a cached-outputs run's F live."""
    from ..artifacts import load
    from ..frozen_f import use_live_f
    from ..runtime import resolve_device

    dev = str(resolve_device(device))
    restorer, run = load(source, device=dev, trusted=trusted_networks)
    if baseline is not None:
        use_live_f(restorer, run, baseline, baseline_weights, dev)
    if not getattr(restorer.f, "runs_on_new_photos", True):  # e.g. a run trained on F's cached outputs
        describe = getattr(restorer.f, "describe", lambda: f"F {run.baseline.name!r}")
        raise PtgError(f"{source} cannot restore new photos: its F is {describe()}, with no network to run. Pass that F "
                       "live: --baseline NAME [--baseline-weights FILE]")
    return Model(restorer, run, dev)


def restore_arrays(model: Model, images: Sequence[np.ndarray], *, prior_from: Sequence[str | Path] | None = None,
                   tile: int | None = None, overlap: int = 32, max_memory: str | None = "auto") -> list[np.ndarray]:
    """F + R (F alone for a baseline run) of H×W×3 float images in [0, 1]; returns H×W×3 float32.

    Arrays have no file bytes to look up in a store: priors come from distilled students
    (``prior_from``, or those an export carries) or from the encoder recorded with the model.
    """
    from ..infer import check_tiling, image_to_tensor, memory_budget, prior_source, restore_each, tensor_to_image

    check_tiling(tile, overlap, model.restorer.multiple)
    source, _ = prior_source(model.restorer, model.run, None, prior_from, model.device)
    order = model.restorer.transform.order(len(images)) if model.restorer.needs_priors else None
    budget = memory_budget(max_memory, model.device) if tile is None and max_memory is not None else None
    items = ((image_to_tensor(img), source(None, images[int(order[i])]) if source is not None else None, f"image {i}")
             for i, img in enumerate(images))
    outs = restore_each(model.restorer, items, tile=tile, overlap=overlap, device=model.device, budget=budget)
    return [tensor_to_image(r if r is not None else f) for f, r, _ in outs]


@dataclass
class RestoreRequest:
    """Image files to restore; each field is the `ptg restore` option of the same name."""

    model: str | Path  # a checkpoint file, a run folder or a `ptg export` folder
    input: str | Path  # an image file or a folder of images
    output: str | Path  # folder for the restored images (<name>.png)
    priors: list[str] | None = None  # priors stores holding these images (None: students or the recorded encoder)
    prior_from: list[Path] | None = None  # `ptg distill` folders computing the priors
    tile: int | None = None  # tiled inference with this tile side
    overlap: int = 32  # overlap between tiles, in pixels
    max_memory: str = "auto"  # memory budget per image
    save_baseline: bool = False  # also write F's output to OUTPUT/baseline/
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    trusted_networks: Sequence[str] = ()  # user networks the checkpoint may import
    baseline: str | None = None  # a cached-outputs run: its F, run live
    baseline_weights: str | Path | None = None  # with baseline: F's weights file


@dataclass
class RestoreResult:
    """What `restore` wrote."""

    output: Path  # the folder
    written: list[Path] = field(default_factory=list)  # one restored image per input
    refined: bool = False  # F + R (True) or F alone
    priors: str = ""  # where the priors came from, in words ("" when the model takes none)


def input_files(input: str | Path, output: str | Path) -> list[Path]:
    """The image files ``input`` names, refused when two would be written to the same name or over an input."""
    from ptg.pipeline.core.imageio import is_image_file

    input, output = Path(input), Path(output)
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
    return files


def _claim_output(output: Path) -> None:
    from ptg.pipeline.core import fsio
    from ptg.pipeline.core.imageio import is_image_file

    fsio.claim_out_dir(output, "restored", flag="--output", legacy=lambda f: all(p.is_dir() or is_image_file(p) for p in f.iterdir()))


def restore_onnx(model: str | Path, input: str | Path, output: str | Path, *, tile: int | None = None, overlap: int = 32,
                 max_memory: str = "auto", reporter: Reporter = QUIET) -> RestoreResult:
    """Restore image files with a `ptg export --format onnx` model through onnxruntime (ptg's tiling)."""
    from ptg.pipeline.core.imageio import write_image

    from ..onnx_run import restore_files_onnx

    files, output = input_files(input, output), Path(output)
    _claim_output(output)
    result = RestoreResult(output, refined=True, priors="inside the ONNX graph")
    with reporter.progress(len(files), "restore (onnx)", "img") as advance:
        for path, img in restore_files_onnx(model, files, tile=tile, overlap=overlap, max_memory=max_memory):
            write_image(output / f"{path.stem}.png", img)
            result.written.append(output / f"{path.stem}.png")
            advance(1)
    return result


def restore(req: RestoreRequest, reporter: Reporter = QUIET) -> RestoreResult:
    """Restore image files with F + R (see `RestoreRequest`); writes OUTPUT/<name>.png."""
    from ptg.pipeline.core.imageio import write_image

    from ..infer import check_tiling, memory_budget, prior_source, restore_files, tensor_to_image

    files = input_files(req.input, req.output)
    model = load_model(req.model, req.device, req.trusted_networks, req.baseline, req.baseline_weights)
    restorer, output = model.restorer, Path(req.output)
    check_tiling(req.tile, req.overlap, restorer.multiple)
    if req.tile is None:
        memory_budget(req.max_memory, model.device)  # a bad max_memory is refused before any prior is computed
    source, how = prior_source(restorer, model.run, req.priors, req.prior_from, model.device)
    priors = f"{how} ({restorer.transform.describe()})" if source is not None else ""
    if priors:
        reporter.log(f"priors {priors}")
    _claim_output(output)
    outputs = restore_files(restorer, files, source, tile=req.tile, overlap=req.overlap, device=model.device,
                            max_memory=req.max_memory)
    result = RestoreResult(output, refined=restorer.r is not None, priors=priors)
    with reporter.progress(len(files), "restore", "img") as advance:
        for path, (_, f_out, r_out, _) in zip(files, outputs):
            write_image(output / f"{path.stem}.png", tensor_to_image(r_out if r_out is not None else f_out))
            if req.save_baseline and r_out is not None:
                write_image(output / "baseline" / f"{path.stem}.png", tensor_to_image(f_out))
            result.written.append(output / f"{path.stem}.png")
            advance(1)
    return result
