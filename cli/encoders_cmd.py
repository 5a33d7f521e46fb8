"""`ptg encoders`: the registered encoders with their output dimension and pinned preprocessing."""
from __future__ import annotations


def encoders() -> None:
    """List the encoders `ptg extract-priors --model` accepts (nothing is loaded)."""
    from rich.table import Table

    from ptg.pipeline.encoders import list_encoders

    from .console import console

    table = Table(title="encoders (--model)", show_lines=True)
    for col in ("name", "prior", "dim", "preprocessing", "default weights"):
        table.add_column(col, overflow="fold")
    for info in list_encoders():
        table.add_row(info.name, info.summary, info.dim, info.preprocessing, info.default_weights)
    console.print(table)
