"""`ptg manifest check|build`: validate manifests and make them from folders or benchmark templates."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ptg.pipeline.errors import PtgError

from .console import console, err_console
from .options import RootOpt

app = typer.Typer(help="Check and build dataset manifests.", no_args_is_help=True)


@app.command("check")
def check(
    manifest: Annotated[Path, typer.Argument(help="Manifest (JSONL) to check.")],
    root: RootOpt = None,
    sizes: Annotated[bool, typer.Option(help="Also check that input and target sizes agree.")] = True,
) -> None:
    """Check every row: files exist, ids unique, splits known, paths inside the root, sizes agree."""
    from ptg.pipeline.manifest import check_manifest

    samples, problems = check_manifest(manifest, root, check_files=True, check_sizes=sizes)
    for p in problems:
        err_console.print(f"[red]{manifest}:{p}[/]", highlight=False)
    if problems:
        raise PtgError(f"{len(problems)} bad row(s) in {manifest}; {len(samples)} good")
    splits = {s: sum(1 for x in samples if x.split == s) for s in ("train", "val", "test")}
    console.print(f"{manifest}: {len(samples)} rows OK ({', '.join(f'{k} {v}' for k, v in splits.items() if v)})")


@app.command("build")
def build(
    out: Annotated[Path, typer.Option("--out", "-o", help="Manifest file to write (a folder gets manifest.jsonl).")],
    root: Annotated[Path, typer.Option("--root", help="Dataset folder.")],
    dataset: Annotated[Optional[str], typer.Option(help="Benchmark template name (see --list).")] = None,
    split: Annotated[str, typer.Option(help="Split for pairs whose path names none (folder mode).")] = "test",
    sigma: Annotated[Optional[float], typer.Option(help="Clean-only sets: Gaussian noise level (0-255).")] = None,
    seed: Annotated[int, typer.Option(help="Clean-only sets: noise seed.")] = 0,
) -> None:
    """Pair files by stem from (input|lq|low|blur|noisy)/ + (target|gt|high|normal|sharp|clean)/ trees,
    or from a benchmark's layout with --dataset NAME."""
    from ptg.pipeline.manifest import write_manifest
    from ptg.pipeline.pairing import build_from_template, pair_tree

    path = out / "manifest.jsonl" if out.suffix != ".jsonl" else out
    if dataset:
        report = build_from_template(dataset, root, out=path.parent / "synth", sigma=sigma, seed=seed)
    else:
        report = pair_tree(root, default_split=split)
    for line in report.missing:
        err_console.print(f"[yellow]missing:[/] {line}", highlight=False)
    if report.unmatched:
        shown = report.unmatched[:20]
        err_console.print(f"[yellow]{len(report.unmatched)} file(s) without a partner[/]: " + ", ".join(shown)
                          + (" ..." if len(report.unmatched) > 20 else ""), highlight=False)
    if not report.rows:
        raise PtgError(f"no pairs found under {root}; nothing written")
    write_manifest(path, report.rows)
    console.print(f"wrote {path}: {len(report.rows)} pairs")


@app.command("datasets")
def datasets() -> None:
    """List the benchmark templates and the folder layout each expects."""
    from ptg.pipeline.pairing import list_datasets, load_template

    for name in list_datasets():
        t = load_template(name)
        console.print(f"[bold]{name}[/] ({t['task']}): {t.get('description', '')}\n    layout: {t.get('layout', '')}")
