"""`ptg manifest check|build`: validate manifests and make them from folders or benchmark templates."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ptg.pipeline.core.errors import PtgError

from .console import console, err_console
from .options import RootOpt

app = typer.Typer(help="Check and build dataset manifests.", no_args_is_help=True)


DECODE_AUTO_ROWS = 500  # `check` decodes every image by default up to this many rows


@app.command("check")
def check(
    manifest: Annotated[Path, typer.Argument(help="Manifest (JSONL) to check.")],
    root: RootOpt = None,
    sizes: Annotated[bool, typer.Option(help="Also check that input and target sizes agree.")] = True,
    decode: Annotated[Optional[bool], typer.Option(
        "--decode/--no-decode",
        help=f"Decode every image in full (finds truncated or corrupt files). Default: on for manifests of up to "
             f"{DECODE_AUTO_ROWS} rows, off above (then only the headers are read).",
        show_default=False)] = None,
    allow_outside: Annotated[bool, typer.Option(
        "--allow-outside", help="Accept paths that lead outside the root (absolute, '..', or through a symlink).")] = False,
) -> None:
    """Check every row: ids are safe file names and unique, splits known, files exist and decode,
    paths stay inside the root, input and target sizes agree."""
    from ptg.pipeline.datasets.manifest import check_manifest

    from .console import progress_bar

    if not manifest.is_file():
        raise PtgError(f"manifest not found: {manifest}")
    with open(manifest, encoding="utf-8") as f:
        n_rows = sum(1 for line in f if line.strip())
    if n_rows == 0:
        raise PtgError(f"manifest {manifest} has no rows; build one with `ptg manifest build --root DIR --out {manifest}`")
    if decode is None:
        decode = n_rows <= DECODE_AUTO_ROWS
    with progress_bar(n_rows, "check (decode)" if decode else "check", unit="row") as advance:
        samples, problems = check_manifest(manifest, root, check_files=True, check_sizes=sizes, decode=decode,
                                           outside="allow" if allow_outside else "refuse", on_row=advance)
    for p in problems:
        err_console.print(f"[red]{escape(str(manifest))}:{escape(str(p))}[/]", highlight=False, soft_wrap=True)
    if problems:
        raise PtgError(f"{len(problems)} problem(s) in {manifest}; {len(samples)} of {n_rows} rows good")
    splits = {s: sum(1 for x in samples if x.split == s) for s in ("train", "val", "test")}
    how = "every image decoded" if decode else f"headers only (over {DECODE_AUTO_ROWS} rows; --decode to decode all)"
    console.print(f"{manifest}: {len(samples)} rows OK ({', '.join(f'{k} {v}' for k, v in splits.items() if v)}; {how})",
                  highlight=False, soft_wrap=True)


@app.command("build")
def build(
    out: Annotated[Path, typer.Option("--out", "-o", help="Manifest file to write (a folder gets manifest.jsonl).")],
    root: Annotated[Path, typer.Option("--root", help="Dataset folder.")],
    dataset: Annotated[Optional[str], typer.Option(
        help="Benchmark template name (`ptg manifest datasets` lists them and their layouts).")] = None,
    test_fraction: Annotated[float, typer.Option(
        "--test-fraction", help="Folder mode: share of the pairs whose path names no split (a flat input/ + target/ "
                                "folder) drawn into test, per image, seeded by --seed; the rest is train.")] = 0.2,
    split: Annotated[Optional[str], typer.Option(
        help="Folder mode: put every pair whose path names no split into this split instead (train | val | test).",
        show_default=False)] = None,
    sigma: Annotated[Optional[float], typer.Option(help="Clean-only sets: Gaussian noise level (0-255).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the train/test draw (folder mode) and of the noise (clean-only sets).")] = 0,
) -> None:
    """Pair files by stem from (input|lq|low|blur|noisy)/ + (target|gt|high|normal|sharp|clean)/ folders,
    or from a benchmark's layout with --dataset NAME.

    Splits come from the folder names (root/train/input + root/train/target, root/test/...); a flat root/input + root/target is split by --test-fraction.
    """
    from ptg.pipeline.datasets.manifest import write_manifest
    from ptg.pipeline.datasets.pairing import build_from_template, pair_tree

    path = out / "manifest.jsonl" if out.suffix != ".jsonl" else out
    if dataset:
        report = build_from_template(dataset, root, out=path.parent / "synth", sigma=sigma, seed=seed)
    else:
        report = pair_tree(root, default_split=split, test_fraction=test_fraction, seed=seed)
    for line in report.missing:
        err_console.print(f"[yellow]missing:[/] {escape(line)}", highlight=False)
    if report.outside:
        err_console.print(f"[yellow]{len(report.outside)} file(s) left out: a symlink leads outside --root[/]: "
                          + escape(", ".join(report.outside[:20])) + (" ..." if len(report.outside) > 20 else ""),
                          highlight=False)
    if report.unmatched:
        shown = report.unmatched[:20]
        err_console.print(f"[yellow]{len(report.unmatched)} file(s) without a partner[/]: " + escape(", ".join(shown))
                          + (" ..." if len(report.unmatched) > 20 else ""), highlight=False)
    if not report.rows:
        raise PtgError(f"no pairs found under {root}; nothing written")
    write_manifest(path, report.rows)
    counts = ", ".join(f"{k} {v}" for k, v in report.counts().items())
    console.print(f"wrote {path}: {len(report.rows)} pairs ({counts})", highlight=False, soft_wrap=True)
    if report.drawn:
        console.print(f"{report.drawn} pair(s) in folders that name no split were drawn by image: "
                      f"--test-fraction {test_fraction} to test, seed {seed}", highlight=False, soft_wrap=True)
    if not root.resolve().is_relative_to(path.resolve().parent):
        err_console.print(f"[yellow]note:[/] {escape(str(path))} is not in or above --root, so its paths are absolute; check it "
                          f"with `ptg manifest check {escape(str(path))} --root {escape(str(root))}`", highlight=False, soft_wrap=True)


@app.command("datasets")
def datasets() -> None:
    """List the benchmark templates and the folder layout each expects."""
    from ptg.pipeline.datasets.pairing import list_datasets, load_template

    for name in list_datasets():
        t = load_template(name)
        console.print(f"[bold]{name}[/] ({t['task']}): {t.get('description', '')}\n    layout: {t.get('layout', '')}")
