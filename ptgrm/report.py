"""Pictures and comparison reports: image grids with a zoomed crop and error maps, and the
multi-run table (in the layout of the paper's Table 1) with a bar chart.

Grids are drawn with PIL; the bar chart with matplotlib's Agg backend (no display needed).
Error maps show the per-pixel mean absolute error against the target on a fixed scale
(`ERROR_VMAX`), so maps of F and F + R are directly comparable.

Names in a report come from metrics files a teammate may share: they are escaped (`md_text` for
Markdown, `plot_text` for matplotlib, whose ``$...$`` would otherwise be parsed as mathtext) and
every number is type-checked on load, so a crafted file ends in a named error, not a traceback or
a report with injected links or HTML.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.fsio import atomic_write, atomic_write_text, claim_out_dir
from ptg.pipeline.core.imageio import to_uint8
from ptg.pipeline.core.limits import read_json

MAX_LABEL = 120  # characters of a name shown in a report
_MD_SPECIAL = set("\\`*_{}[]()<>#+!|~$")

ERROR_VMAX = 0.2  # mean absolute error (on [0, 1]) shown at the top of the colour map
_LABEL_H = 18  # pixels of the caption strip above each cell
_PAD = 4  # pixels between cells


# ---------------------------------------------------------------------------------------------
# Grids


def pick_crop(shape: tuple[int, ...], error: np.ndarray | None = None, size: int | None = None) -> tuple[int, int, int]:
    """A square crop ``(top, left, side)`` for the zoomed view.

    Args:
        shape: the image shape (H, W, ...).
        error: H×W error map; the crop is centred where its box average is largest (where F is
            worst, so the zoom shows what R changes). None = the image centre.
        size: crop side; default a quarter of the short side (at least 16 pixels).
    """
    h, w = shape[:2]
    side = min(h, w, size or max(16, min(h, w) // 4))
    if error is None:
        return (h - side) // 2, (w - side) // 2, side
    from scipy import ndimage

    box = ndimage.uniform_filter(error.astype(np.float64), size=side, mode="constant")
    half = side // 2
    valid = box[half : h - side + half + 1, half : w - side + half + 1]  # centres whose crop fits
    cy, cx = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(cy), int(cx), side


def error_map(pred: np.ndarray, target: np.ndarray, vmax: float = ERROR_VMAX) -> np.ndarray:
    """|pred − target| averaged over channels, coloured with 'inferno' on [0, vmax]; H×W×3 float."""
    from matplotlib import colormaps

    err = np.abs(pred.astype(np.float32) - target.astype(np.float32)).mean(axis=-1)
    return colormaps["inferno"](np.clip(err / vmax, 0, 1))[..., :3].astype(np.float32)


def _zoom(img: np.ndarray, crop: tuple[int, int, int], width: int) -> np.ndarray:
    from PIL import Image

    top, left, side = crop
    patch = to_uint8(img[top : top + side, left : left + side])
    return np.asarray(Image.fromarray(patch).resize((width, width), Image.Resampling.NEAREST))


def _psnr_label(pred: np.ndarray, target: np.ndarray | None) -> str:
    if target is None:
        return ""
    from ptg.pipeline.core.metrics import psnr

    v = psnr(pred, target)
    return " inf dB" if math.isinf(v) else f" {v:.2f} dB"


def make_grid(
    inp: np.ndarray,
    baseline: np.ndarray,
    refined: np.ndarray | None,
    target: np.ndarray | None,
    labels: tuple[str, str] = ("F", "+ PTG-RM"),
    crop: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """A comparison picture: input | F | F + R | target, their zoomed crops, and error maps.

    Row 1 holds the full images (crop marked in red, PSNR against the target in the caption),
    row 2 the zoomed crop of each, row 3 (when there is a target) the error maps of input, F and
    F + R. Columns for a missing ``refined`` or ``target`` are left out.

    Args:
        inp, baseline, refined, target: H×W×3 float images in [0, 1].
        labels: captions of F's and F + R's columns.
        crop: ``(top, left, side)``; default where F's error is largest (see `pick_crop`).

    Returns:
        The grid as an H'×W'×3 uint8 array.
    """
    from PIL import Image, ImageDraw

    cols: list[tuple[str, np.ndarray]] = [("input", inp), (labels[0], baseline)]
    if refined is not None:
        cols.append((labels[1], refined))
    if target is not None:
        cols.append(("target", target))
    h, w = inp.shape[:2]
    if crop is None:
        err = np.abs(baseline - target).mean(axis=-1) if target is not None else None
        crop = pick_crop(inp.shape, err)
    top, left, side = crop

    rows: list[list[tuple[str, np.ndarray]]] = [
        [(name + _psnr_label(img, target if name != "target" else None), to_uint8(img)) for name, img in cols],
        [(f"zoom x{w / side:.1f}" if i == 0 else "", _zoom(img, crop, w)) for i, (_, img) in enumerate(cols)],
    ]
    if target is not None:
        errs = [(f"|{name} - target|", to_uint8(error_map(img, target))) for name, img in cols if name != "target"]
        rows.append(errs + [(f"error scale 0..{ERROR_VMAX:g}", to_uint8(_colorbar(h, w)))])

    cell_h = [max(img.shape[0] for _, img in r) + _LABEL_H for r in rows]
    canvas = Image.new("RGB", (len(cols) * (w + _PAD) - _PAD, sum(cell_h) + _PAD * (len(rows) - 1)), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for r, ch in zip(rows, cell_h):
        for c, (label, img) in enumerate(r):
            x0 = c * (w + _PAD)
            draw.text((x0 + 2, y + 3), label, fill="black")
            canvas.paste(Image.fromarray(img), (x0, y + _LABEL_H))
        y += ch + _PAD
    for c in range(len(cols)):  # mark the crop on each full image
        x0 = c * (w + _PAD)
        draw.rectangle([x0 + left, _LABEL_H + top, x0 + left + side - 1, _LABEL_H + top + side - 1], outline="red")
    return np.asarray(canvas)


def _colorbar(h: int, w: int) -> np.ndarray:
    from matplotlib import colormaps

    ramp = np.linspace(0, 1, w, dtype=np.float32)[None].repeat(max(1, h // 6), axis=0)
    bar = colormaps["inferno"](ramp)[..., :3]
    out = np.ones((h, w, 3), np.float32)
    out[: bar.shape[0]] = bar
    return out


# ---------------------------------------------------------------------------------------------
# Multi-run reports


@dataclass
class EvalSummary:
    """The mean metrics of one evaluation, as a report needs them."""

    label: str  # name of the run/evaluation
    dataset: str  # test set name
    baseline: str  # F's name
    prior: str  # prior label (encoder name), "" for none
    base: dict[str, float]  # mean metrics of F
    refined: dict[str, float] | None  # mean metrics of F + R; None for F alone
    n: int  # images scored
    settings: dict[str, Any] = field(default_factory=dict)  # metric settings
    source: Path | None = None  # the metrics file read
    mode: str = ""  # the run's training mode (joint | refine | baseline), "" when not recorded


def _plain(text: object) -> str:
    """One line of at most `MAX_LABEL` printable characters."""
    flat = "".join(c if c.isprintable() else " " for c in str(text))
    return flat if len(flat) <= MAX_LABEL else flat[: MAX_LABEL - 3] + "..."


def md_text(text: object) -> str:
    """``text`` as literal Markdown table-cell text: no markup, links, HTML or cell breaks."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in _plain(text))


def plot_text(text: object) -> str:
    """``text`` as literal matplotlib label text (a ``$`` would start mathtext)."""
    return _plain(text).replace("$", r"\$")


def _metric_means(value: Any, key: str, src: Path) -> dict[str, float]:
    """A ``mean`` entry: a mapping with finite-or-nan numbers for psnr and ssim."""
    if not isinstance(value, dict) or not all(isinstance(value.get(m), (int, float)) and not isinstance(value.get(m), bool)
                                              for m in ("psnr", "ssim")):
        raise PtgError(f"{src}: mean.{key} must map psnr and ssim to numbers; the file is damaged or not from `ptg eval`")
    return value


def _find_metrics(path: Path) -> Path:
    if path.is_file():
        return path
    for cand in (path / "metrics.json", path / "eval" / "metrics.json"):
        if cand.is_file():
            return cand
    if (path / "config.yaml").is_file() or (path / "checkpoints").is_dir():
        raise PtgError(f"run {path} has not been evaluated yet: run `ptg eval --run {path}` first (it writes {path / 'eval' / 'metrics.json'})")
    raise PtgError(f"{path} holds no metrics.json; give an output folder of `ptg eval` or a run folder evaluated with it")


def _prior_label(info: dict[str, Any]) -> str:
    """The prior's name, and the study control when it is not the real prior (a run with
    ``priors.control=constant`` is evaluated with the same stores, so its prior name alone would
    put it in the real prior's column)."""
    prior = str(info.get("prior") or "")
    m = re.search(r"control=(\w+)", str(info.get("prior_transform") or ""))
    return f"{prior} ({m.group(1)})" if prior and m and m.group(1) != "real" else prior


def load_summary(path: str | Path) -> EvalSummary:
    """Read an eval folder, a run folder (``RUN/eval``), a metrics.json, or a `--pred` JSON."""
    path = Path(path)
    src = _find_metrics(path)
    data = read_json(src, "metrics file")
    if not isinstance(data, dict):
        raise PtgError(f"{src} is not a metrics file of `ptg eval` (not a JSON object)")
    if data.get("kind") == "ptg-eval":
        info, mean = data.get("info", {}), data.get("mean")
        if not isinstance(info, dict) or not isinstance(mean, dict) or not isinstance(data.get("n_scored", 0), int):
            raise PtgError(f"{src}: 'info' and 'mean' must be objects and 'n_scored' an integer; the file is damaged")
        if not mean.get("baseline"):
            raise PtgError(f"{src} has no scored images (no targets?); nothing to report")
        _metric_means(mean["baseline"], "baseline", src)
        if mean.get("ptgrm") is not None:
            _metric_means(mean["ptgrm"], "ptgrm", src)
        return EvalSummary(
            label=str(info.get("name") or (src.parent.parent.name if src.parent.name == "eval" else src.parent.name)),
            dataset=str(info.get("dataset") or "?"),
            baseline=str(info.get("baseline") or "F"),
            prior=_prior_label(info),
            base=mean["baseline"],
            refined=mean.get("ptgrm"),
            n=int(data.get("n_scored", 0)),
            settings=data.get("settings") if isinstance(data.get("settings"), dict) else {},
            source=src,
            mode=str(info.get("mode") or ""),
        )
    if isinstance(data.get("mean"), dict) and "psnr" in data["mean"] and isinstance(data.get("images"), (list, dict)):
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}  # `ptg eval --pred`
        return EvalSummary(src.stem, "-", src.stem, "", _metric_means(data["mean"], "mean", src), None,
                           len(data["images"]), settings, src)
    raise PtgError(f"{src} is not a metrics file of `ptg eval`")


def comparison_table(summaries: Sequence[EvalSummary]) -> str:
    """Markdown in the layout of the paper's Table 1: one row per (dataset, F), "Original" then
    one PSNR/SSIM column pair per prior, each cell with its delta against "Original".

    "Original" is F trained alone (an evaluation without R) when the group has one, as in the
    paper; otherwise it is the F of the first run (trained jointly with its R, or frozen in refine mode).
    """
    if not summaries:
        raise PtgError("no evaluations to report")
    priors: list[str] = []
    for s in summaries:
        if s.refined is not None and s.prior not in priors:
            priors.append(s.prior)
    groups: dict[tuple[str, str], list[EvalSummary]] = {}
    for s in summaries:
        groups.setdefault((s.dataset, s.baseline), []).append(s)

    heads = ["Dataset", "Method", "Original PSNR", "SSIM"]
    for p in priors:
        heads += [f"+ PTG-RM{'-' + md_text(p) if p else ''} PSNR", "SSIM"]
    lines = ["| " + " | ".join(heads) + " |", "|---|---|" + "---:|" * (len(heads) - 2)]
    notes: list[str] = []
    for (dataset, base_name), runs in groups.items():
        alone = [s for s in runs if s.refined is None]
        first = alone[0] if alone else runs[0]
        if not alone:
            how = "the frozen F refined" if first.mode == "refine" else "the F trained jointly"
            notes.append(f"{md_text(dataset)}/{md_text(base_name)}: no F-only run; 'Original' is {how} "
                         f"in {md_text(first.label)}")
        row = [md_text(dataset), md_text(base_name), f"{first.base['psnr']:.2f}", f"{first.base['ssim']:.3f}"]
        for p in priors:
            match = [s for s in runs if s.refined is not None and s.prior == p]
            if not match:
                row += ["", ""]
                continue
            s = match[0]
            if len(match) > 1:
                notes.append(f"{md_text(dataset)}/{md_text(base_name)}/{md_text(p)}: {len(match)} runs, the first "
                             f"({md_text(s.label)}) is shown")
            dp, ds = s.refined["psnr"] - first.base["psnr"], s.refined["ssim"] - first.base["ssim"]
            row += [f"{s.refined['psnr']:.2f}({dp:+.2f})", f"{s.refined['ssim']:.3f}({ds * 100:+.1f})"]
        lines.append("| " + " | ".join(row) + " |")
    keyset = {json.dumps({k: s.settings.get(k) for k in ("crop_border", "y_channel", "matlab_round_y")}, sort_keys=True) for s in summaries}
    if len(keyset) > 1:
        notes.append("the evaluations used different metric settings (crop border / Y channel): numbers are not comparable across rows")
    out = "\n".join(lines) + "\n\n(+) = change vs Original; SSIM change ×100, as in the paper.\n"
    return out + "".join(f"\n- note: {n}" for n in notes) + ("\n" if notes else "")


def bar_chart(summaries: Sequence[EvalSummary], path: str | Path) -> Path:
    """PSNR and SSIM of F and F + R for each evaluation, side by side; saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    names = [f"{plot_text(s.label)}\n{plot_text(s.dataset)}" for s in summaries]
    x = np.arange(len(summaries))
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.6 * len(summaries) + 3), 3.6))
    for ax, metric in zip(axes, ("psnr", "ssim")):
        base = [s.base[metric] for s in summaries]
        ref = [s.refined[metric] if s.refined else np.nan for s in summaries]
        ax.bar(x - 0.2, base, 0.4, label="F", color="#8c8c8c")
        ax.bar(x + 0.2, ref, 0.4, label="F + PTG-RM", color="#d95f02")
        vals = [v for v in base + ref if not np.isnan(v) and np.isfinite(v)]
        if vals:  # start the axis near the data, so differences of a few tenths are visible
            lo, hi = min(vals), max(vals)
            margin = max((hi - lo) * 0.5, 0.5 if metric == "psnr" else 0.01)
            ax.set_ylim(lo - margin, hi + margin)
        ax.set_xticks(x, names, fontsize=7)
        ax.set_title(metric.upper())
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    plt.close(fig)
    return path


def expand_sources(sources: Sequence[str | Path], limit: int = 500) -> list[Path]:
    """Each source as given, except a folder that is neither an evaluation nor a run (a study's
    folder, or any folder of evaluations): the evaluations found under it (depth <= 3, sorted;
    links are not followed)."""
    out: list[Path] = []
    for src in map(Path, sources):
        if src.is_file() or not src.is_dir() or (src / "metrics.json").is_file() or (src / "eval" / "metrics.json").is_file() \
                or (src / "config.yaml").is_file() or (src / "checkpoints").is_dir():
            out.append(src)
            continue
        found = sorted(p.parent for depth in ("*", "*/*", "*/*/*") for p in src.glob(f"{depth}/metrics.json")
                       if not any(q.is_symlink() for q in [p, *p.parents][: depth.count("/") + 2]))
        if not found:
            out.append(src)  # load_summary names what is missing
        out += found
        if len(out) > limit:
            raise PtgError(f"{src} holds more than {limit} evaluations; report a smaller folder")
    return out


def write_report(sources: Sequence[str | Path], out_dir: str | Path) -> tuple[Path, Path]:
    """Merge several evaluations into ``out_dir/report.md`` (table) and ``out_dir/report.png``
    (`ptg.ptgrm.report_html.write_report_page` adds the page, report.html).

    Args:
        sources: eval folders, run folders evaluated by `ptg eval`, metrics files, or folders of
            evaluations (a study's folder: see `expand_sources`).
        out_dir: claimed like every ``--out`` (`fsio.claim_out_dir`): a folder ptg did not make, or
            one holding a symlink, is refused.
    """
    summaries = [load_summary(p) for p in expand_sources(sources)]
    out_dir = claim_out_dir(out_dir, "report", legacy=lambda f: (f / "report.md").is_file())  # after the sources load
    png = bar_chart(summaries, out_dir / "report.png")
    lines = ["# PTG-RM comparison", "", comparison_table(summaries), "", "![PSNR and SSIM per run](report.png)", "",
             "| Run | Dataset | F | Prior | Images | Source |", "|---|---|---|---|---:|---|"]
    for s in summaries:
        cells = (s.label, s.dataset, s.baseline, s.prior or "-", s.n, s.source)
        lines.append("| " + " | ".join(md_text(c) for c in cells) + " |")
    md = out_dir / "report.md"
    atomic_write_text(md, "\n".join(lines) + "\n")
    return md, png
