"""`ptg report`: merge several evaluations into one comparison table and a bar chart."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report_command(
    sources: Annotated[list[Path], typer.Argument(help="Eval folders (with metrics.json), run folders evaluated by `ptg eval`, --pred JSON files, or a folder of eval folders (a study).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.md, report.png and report.html.")] = Path("report"),
    images: Annotated[int, typer.Option(help="Before/after viewers per evaluation in report.html (the images R helped and hurt most first).")] = 8,
) -> None:
    """Write OUT/report.md (the paper's Table 1 layout: Original, + PTG-RM per prior, deltas), OUT/report.png
    and OUT/report.html (one self-contained page: tables, sortable per-image scores, before/after viewers)."""
    from ptg.ptgrm.report_html import write_report_page

    from .console import console

    md, png, html = write_report_page(sources, out, images)
    console.print(md.read_text(encoding="utf-8"), highlight=False, markup=False)
    console.print(f"wrote {md}, {png} and {html} (open it in a browser)", highlight=False)
