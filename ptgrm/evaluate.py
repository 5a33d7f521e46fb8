"""The evaluation engine: per-image metrics of F and F + R, restored images, CSV, JSON, tables.

Conventions are BasicSR's (see `ptg.pipeline.core.metrics`): every output is rounded to uint8 first,
so a number is that of the saved PNG; ``crop_border`` and ``y_channel`` as in BasicSR; the
dataset score is the mean of per-image scores. LPIPS, when asked, is computed on RGB (after the
border crop) whatever ``y_channel`` says, as restoration papers report it.

What `evaluate` writes into its output folder::

    images/baseline/<id>.png   F's output          images/ptgrm/<id>.png   F + R's output
    images/input/<id>.png      the degraded input  images/target/<id>.png  the target (8-bit copies for `ptg report`)
    grids/<id>.png             input | F | F + R | target, zoomed crop, error maps (first few)
    per_image.csv              one row per image: metrics of F, of F + R, and their deltas
    metrics.json               settings, provenance, per-image and mean metrics (see `evaluate`)
    table.md                   the paper's form: baseline, + PTG-RM with deltas (SSIM delta ×100)

`score_predictions` scores an existing folder of outputs (``DIR/<id>.png``) against a manifest's
targets, with no model.
"""
from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.fsio import atomic_write_json, atomic_write_text
from ptg.pipeline.core.imageio import read_image, to_uint8, write_image
from ptg.pipeline.datasets.manifest import Sample
from ptg.pipeline.core.metrics import psnr, ssim

ProgressFn = Callable[[int], None]
METHODS = ("baseline", "ptgrm")  # F alone, F + R


@dataclass
class MetricSettings:
    """How images are scored (recorded in every output)."""

    crop_border: int = 0  # pixels removed on every side before scoring (BasicSR crop_border)
    y_channel: bool = False  # PSNR/SSIM on MATLAB's BT.601 Y instead of RGB (BasicSR test_y_channel)
    matlab_round_y: bool = False  # round Y to integers like some MATLAB scripts; never the default
    lpips: bool = False  # also compute LPIPS (needs the backbone weights, see lpips_metric)
    lpips_net: str = "alex"  # LPIPS backbone: "alex" (usual in restoration papers) or "vgg"
    lpips_weights: str | None = None  # torchvision backbone file; None = torch hub cache

    def __post_init__(self) -> None:
        if self.crop_border < 0:
            raise PtgError(f"--crop-border must be >= 0, got {self.crop_border}")
        if self.matlab_round_y and not self.y_channel:
            raise PtgError("--matlab-round-y applies to --y-channel scoring only; add --y-channel or drop it")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Scorer:
    """Scores one prediction against its target with fixed settings (LPIPS built once)."""

    def __init__(self, settings: MetricSettings, device: str = "cpu"):
        self.settings = settings
        self._lpips = None
        if settings.lpips:
            from .lpips_metric import LPIPS

            self._lpips = LPIPS(settings.lpips_net, settings.lpips_weights, device)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("psnr", "ssim", "lpips") if self._lpips is not None else ("psnr", "ssim")

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Metrics of an H×W×C prediction (float [0, 1] or uint8) against its target."""
        s = self.settings
        # Round to uint8 here (BasicSR's tensor2img rounding): the metrics then run in float64 on
        # exact integers; float32 inputs would keep float32 arithmetic and drift by ~1e-6 dB.
        pred, target = _u8(pred), _u8(target)
        kw = dict(crop_border=s.crop_border, y_channel=s.y_channel, matlab_round_y=s.matlab_round_y)
        out = {"psnr": psnr(pred, target, **kw), "ssim": ssim(pred, target, **kw)}
        if self._lpips is not None:
            k = s.crop_border
            crop = (slice(k, -k), slice(k, -k)) if k else (slice(None), slice(None))
            out["lpips"] = self._lpips(pred[crop], target[crop])
        return out


def _u8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    return img if img.dtype == np.uint8 else to_uint8(img)


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over images (the dataset score, as BasicSR averages per-image values)."""
    if not rows:
        return {}
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _check_pairs(samples: Sequence[Sample], what: str) -> None:
    unpaired = [s.id for s in samples if s.target is None]
    if unpaired:
        raise PtgError(f"{what} needs a target for every row; {len(unpaired)} row(s) have none (e.g. {unpaired[0]!r}). "
                       "Use a paired manifest or another --split")


def score_predictions(
    pred_dir: str | Path,
    samples: Sequence[Sample],
    settings: MetricSettings,
    suffix: str = ".png",
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Score ``pred_dir/<id><suffix>`` against each sample's target, with no model.

    Args:
        pred_dir: folder of predictions named by manifest id.
        samples: the rows to score (all must have targets).
        settings: metric conventions.
        suffix: file name ending of the predictions.
        on_progress: called with 1 after each image.

    Returns:
        ``{"images": [{"id", "psnr", "ssim"}...], "mean": {"psnr", "ssim"}, "settings": {...}}``
        (plus "lpips" keys when asked).

    Raises:
        PtgError: a missing prediction (naming the id and the expected path), a size mismatch.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise PtgError(f"--pred {pred_dir} is not a directory of predictions")
    if not samples:
        raise PtgError("no rows to score; check --split")
    _check_pairs(samples, "--pred scoring")
    missing = [(s.id, pred_dir / f"{s.id}{suffix}") for s in samples if not (pred_dir / f"{s.id}{suffix}").is_file()]
    if missing:
        sid, path = missing[0]
        more = f" ({len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise PtgError(f"no prediction for id {sid!r}: expected {path}{more}. Name each output <id>{suffix} after the manifest's ids")
    scorer = Scorer(settings)
    images = []
    for s in samples:
        pred, target = read_image(pred_dir / f"{s.id}{suffix}"), read_image(s.target)
        if pred.shape != target.shape:
            raise PtgError(f"prediction {pred_dir / (s.id + suffix)} is {pred.shape[1]}x{pred.shape[0]} but the target "
                           f"{s.target} is {target.shape[1]}x{target.shape[0]}")
        images.append({"id": s.id, **scorer(pred, target)})
        if on_progress:
            on_progress(1)
    mean = mean_metrics([{k: v for k, v in r.items() if k != "id"} for r in images])
    return {"images": images, "mean": mean, "settings": settings.to_dict()}


# ---------------------------------------------------------------------------------------------
# Model evaluation


@dataclass
class EvalOptions:
    """How the model is run and what is written."""

    tile: int | None = None  # tile side for tiled inference; None = whole images (the paper's setting)
    overlap: int = 32  # overlap between tiles (see ptg.ptgrm.infer for where tiling changes results)
    save_images: bool = True  # write images/{baseline,ptgrm,input,target}/<id>.png (F, F + R, and what `ptg report`'s page compares them with)
    grids: int = 4  # comparison grids written for the first N images (0 = none)
    device: str = "cpu"  # torch device of the models
    max_memory: str = "auto"  # memory budget per image ("auto" or e.g. "8GiB"); larger images are tiled automatically


RestoreCall = Callable[[Any, Any], Any]  # (x[B,3,H,W], priors list[Tensor[B,D]] | None) -> (F out, R out | None)
PriorsFor = Callable[[Path, np.ndarray], Any]  # (degraded image file, its pixels) -> list[Tensor[1,D]] | None


def fmt_delta(value: float, digits: int) -> str:
    """A signed delta as the paper prints it ("+0.42", "-1.3")."""
    if math.isnan(value):
        return "n/a"
    return f"{value:+.{digits}f}".replace("+-", "-")


def paper_table(mean: dict[str, Any], labels: dict[str, str], caption: str = "") -> str:
    """Markdown table in the paper's form: F's row, then + PTG-RM with deltas in brackets.

    PSNR delta in dB with 2 decimals; SSIM delta ×100 with 1 decimal ("0.892(+4.3)"); LPIPS
    delta with 3 decimals (negative is better).

    Args:
        mean: ``{"baseline": {...}, "ptgrm": {...} or None}`` mean metrics.
        labels: ``{"baseline": "F's name", "ptgrm": "+ PTG-RM (...)"}``.
        caption: a line printed under the table.
    """
    base, ref = mean.get("baseline") or {}, mean.get("ptgrm")
    names = [m for m in ("psnr", "ssim", "lpips") if m in base]
    if not names:
        return "_no images with targets were scored_\n"
    heads = {"psnr": "PSNR ↑", "ssim": "SSIM ↑", "lpips": "LPIPS ↓"}
    digits = {"psnr": 2, "ssim": 3, "lpips": 3}
    lines = ["| Method | " + " | ".join(heads[n] for n in names) + " |", "|---|" + "---:|" * len(names)]
    lines.append(f"| {labels.get('baseline', 'F')} | " + " | ".join(f"{base[n]:.{digits[n]}f}" for n in names) + " |")
    if ref:
        cells = []
        for n in names:
            d = ref[n] - base[n]
            delta = fmt_delta(d * 100, 1) if n == "ssim" else fmt_delta(d, digits[n])
            cells.append(f"{ref[n]:.{digits[n]}f}({delta})")
        lines.append(f"| {labels.get('ptgrm', '+ PTG-RM')} | " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n"
    return out + (f"\n{caption}\n" if caption else "")


def settings_caption(settings: MetricSettings, n: int, dataset: str = "", tile: int | None = None, overlap: int = 0,
                     deltas: bool = True) -> str:
    """One line saying how the numbers were computed."""
    parts = [f"{dataset}: " if dataset else "", f"{n} image(s), ", "Y channel (BT.601)" if settings.y_channel else "RGB"]
    if settings.matlab_round_y:
        parts.append(", Y rounded (MATLAB)")
    parts.append(f", crop border {settings.crop_border}, uint8-rounded outputs")
    if tile:
        parts.append(f", tiled {tile}/{overlap}")
    parts.append(". (+) = change vs F; SSIM change ×100." if deltas else ".")
    return "".join(parts)


def evaluate(
    restore: RestoreCall,
    samples: Sequence[Sample],
    out_dir: str | Path,
    *,
    settings: MetricSettings,
    options: EvalOptions,
    priors_for: PriorsFor | None = None,
    info: dict[str, Any] | None = None,
    multiple: int = 1,
    on_progress: ProgressFn | None = None,
    read: Callable[[Path], np.ndarray] | None = None,
    f_outputs: Any = None,
) -> dict[str, Any]:
    """Run F and F + R over ``samples`` and write every output (see the module docstring).

    Args:
        restore: a `ptg.ptgrm.infer.Restorer` (its prior control is applied over ``samples``:
            under shuffle each image gets another's prior, as in validation; its ``multiple``
            is used), or any ``restore(x[1,3,H,W], priors) -> (F(x), R(F(x), x, g) or None)``.
        samples: rows to evaluate, in order; rows without a target are restored, not scored.
        out_dir: output folder (created).
        settings: metric conventions.
        options: tiling, device, what to write.
        priors_for: ``(input file, its pixels) -> list[Tensor[1, D]]`` or None for no priors
            (see `ptg.ptgrm.infer.StorePriors`, `EncoderPriors`).
        info: provenance copied into metrics.json (name, dataset, baseline, prior, checkpoint...).
            ``info["baseline"]`` and ``info["prior"]`` label the table's rows.
        multiple: pad images to this multiple (the models' down-sampling factor).
        on_progress: called with 1 after each image.
        read: decodes an input or target (default `read_image`; `ptg eval`: the image store's `image_loader`).
        f_outputs: F's cached outputs (`ptg.ptgrm.f_outputs.CachedOutputs`), for a `CachedF`: input ``Id ⊕ Ihat``.

    Returns:
        The metrics.json content: ``{"kind", "info", "settings", "options", "n_images",
        "n_scored", "mean": {"baseline", "ptgrm", "delta"}, "images": [...]}``.
    """
    from .infer import restore_files, tensor_to_image

    if not samples:
        raise PtgError("no rows to evaluate; check --split (the default is 'test')")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = dict(info or {})
    scorer = Scorer(settings, options.device)
    images: list[dict[str, Any]] = []
    has_refiner = False
    load = read or read_image
    outputs = restore_files(restore, [s.input for s in samples], priors_for, tile=options.tile, overlap=options.overlap,
                            device=options.device, max_memory=options.max_memory, multiple=multiple,
                            read=load if f_outputs is None else _with_outputs(load, samples, f_outputs))
    for i, (s, (x, f_out, r_out, seconds)) in enumerate(zip(samples, outputs)):
        x = x[..., :3]  # Id (the cached Ihat rode along as channels 3..5)
        f_img = tensor_to_image(f_out)
        r_img = tensor_to_image(r_out) if r_out is not None else None
        has_refiner = has_refiner or r_img is not None
        images.append(_score_one(s, x, f_img, r_img, seconds, scorer, out_dir, options, i < options.grids,
                                 info.get("baseline", "F"), load))
        if on_progress:
            on_progress(1)
    result = {"kind": "ptg-eval", "info": info, "settings": settings.to_dict(), "options": asdict(options),
              "n_images": len(images), "n_scored": sum("baseline" in r for r in images),
              "mean": _means(images, has_refiner), "images": images}
    _write_outputs(out_dir, result, scorer.metric_names, has_refiner)
    return result


def _with_outputs(load: Callable[[Path], np.ndarray], samples: Sequence[Sample], f_outputs: Any
                  ) -> Callable[[Path], np.ndarray]:
    """A reader of ``Id ⊕ Ihat`` (H×W×6 float32) per input file, ``Ihat`` from the cache."""
    by_path = {s.input: s for s in samples}

    def read(path: Path) -> np.ndarray:
        x = load(path)
        return np.concatenate([x, f_outputs.array(by_path[path])], axis=-1)  # float32: the conversion training uses

    return read


def _score_one(s: Sample, x: np.ndarray, f_img: np.ndarray, r_img: np.ndarray | None, seconds: float, scorer: "Scorer",
               out_dir: Path, options: EvalOptions, grid: bool, f_label: str,
               load: Callable[[Path], np.ndarray] = read_image) -> dict[str, Any]:
    """One image's row: saved outputs, metrics of F and F + R against the target, a grid."""
    from .report import make_grid

    row: dict[str, Any] = {"id": s.id, "seconds": round(seconds, 4)}
    target = load(s.target) if s.target is not None else None
    if options.save_images:
        write_image(out_dir / "images" / "baseline" / f"{s.id}.png", f_img)
        if r_img is not None:
            write_image(out_dir / "images" / "ptgrm" / f"{s.id}.png", r_img)
        # the input and target beside the outputs: `ptg report`'s page shows an eval folder without the dataset
        write_image(out_dir / "images" / "input" / f"{s.id}.png", x)
        if target is not None and target.shape == x.shape:
            write_image(out_dir / "images" / "target" / f"{s.id}.png", target)
    if target is not None:
        if target.shape != x.shape:
            raise PtgError(f"row {s.id!r}: input is {x.shape[1]}x{x.shape[0]} but target is {target.shape[1]}x{target.shape[0]}")
        row["baseline"] = scorer(f_img, target)
        if r_img is not None:
            row["ptgrm"] = scorer(r_img, target)
    if grid:
        write_image(out_dir / "grids" / f"{s.id}.png", make_grid(x, f_img, r_img, target, labels=(f_label, "+ PTG-RM")))
    return row


def _means(images: list[dict[str, Any]], has_refiner: bool) -> dict[str, Any]:
    """Mean metrics of F, of F + R, and their deltas over the scored images."""
    scored = [r for r in images if "baseline" in r]
    mean: dict[str, Any] = {"baseline": mean_metrics([r["baseline"] for r in scored]) or None, "ptgrm": None, "delta": None}
    if has_refiner and scored:
        mean["ptgrm"] = mean_metrics([r["ptgrm"] for r in scored])
        mean["delta"] = {k: mean["ptgrm"][k] - mean["baseline"][k] for k in mean["baseline"]}
        mean["delta"]["ssim_x100"] = mean["delta"]["ssim"] * 100
    return mean


def _write_outputs(out_dir: Path, result: dict[str, Any], names: tuple[str, ...], has_refiner: bool) -> None:
    info = result["info"]
    cols = ["id"] + [f"{n}_baseline" for n in names]
    if has_refiner:
        cols += [f"{n}_ptgrm" for n in names] + [f"{n}_delta" for n in names]
    cols.append("seconds")
    with open(out_dir / "per_image.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in result["images"]:
            b, p = r.get("baseline", {}), r.get("ptgrm", {})
            vals: list[Any] = [r["id"]] + [_num(b.get(n)) for n in names]
            if has_refiner:
                vals += [_num(p.get(n)) for n in names]
                vals += [_num(p[n] - b[n]) if n in p and n in b else "" for n in names]
            vals.append(r["seconds"])
            w.writerow(vals)
    atomic_write_json(out_dir / "metrics.json", result)  # a reader (ptg report) never sees half a file
    settings = MetricSettings(**result["settings"])
    opts = result["options"]
    caption = settings_caption(settings, result["n_scored"], info.get("dataset", ""), opts["tile"], opts["overlap"], has_refiner)
    labels = table_labels(info)
    atomic_write_text(out_dir / "table.md", paper_table(result["mean"], labels, caption))


def table_labels(info: dict[str, Any]) -> dict[str, str]:
    """Row labels: F's name, and "+ PTG-RM (prior)"."""
    prior = info.get("prior")
    return {"baseline": str(info.get("baseline") or "F"), "ptgrm": f"+ PTG-RM ({prior})" if prior else "+ PTG-RM"}


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6f}"
