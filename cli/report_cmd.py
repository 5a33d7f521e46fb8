"""`ptg report`: merge several evaluations into one comparison table and a bar chart."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report_command(
    sources: Annotated[list[Path], typer.Argument(help="Eval folders (with metrics.json), run folders evaluated by `ptg eval`, or --pred JSON files.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.md and report.png.")] = Path("report"),
) -> None:
    """Write OUT/report.md (the paper's Table 1 layout: Original, + PTG-RM per prior, deltas) and OUT/report.png."""
    from ptg.ptgrm.report import write_report

    from .console import console

    md, png = write_report(sources, out)
    console.print(md.read_text(encoding="utf-8"), highlight=False, markup=False)
    console.print(f"wrote {md} and {png}", highlight=False)
