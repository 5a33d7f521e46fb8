"""`ptg encoders`: the registered encoders with their output dimension and pinned preprocessing."""
from __future__ import annotations


def encoders() -> None:
    """List the encoders `ptg extract-priors --model` accepts (nothing is loaded)."""
    from rich.table import Table

    from ptg.pipeline.encoders import list_encoders
    from ptg.pipeline.encoders.degradation import LISTING

    from .console import console

    table = Table(title="encoders (--model)", show_lines=True)
    for col in ("name", "prior", "dim", "preprocessing", "default weights"):
        table.add_column(col, overflow="fold")
    rows = [(i.name, i.summary, i.dim, i.preprocessing, i.default_weights) for i in list_encoders()]
    rows.append(tuple(LISTING[k] for k in ("name", "summary", "dim", "preprocessing", "default_weights")))
    for row in sorted(rows):  # the degradation prior is a row source of the engine, not a registered encoder
        table.add_row(*row)
    console.print(table)
