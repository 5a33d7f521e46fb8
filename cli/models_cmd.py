"""`ptg models`: every registered model with its parameter count, MACs at 512×512 and config."""
from __future__ import annotations

from typing import Annotated

import typer


def models(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (one object per model) instead of a table.")] = False,
) -> None:
    """List the registered models (names for --model/--baseline); R is counted at prior dim 512."""
    import dataclasses
    import json

    from rich.table import Table

    from ptg.ptgrm.models import list_models
    from ptg.ptgrm.models.summary import summarize_model

    from .console import console

    rows = [summarize_model(name) for name in list_models()]
    if json_out:
        console.print_json(json.dumps([dataclasses.asdict(r) for r in rows]))
        return
    table = Table(title="models (R counted at prior dim 512; MACs for one 512×512 image)")
    for col in ("name", "kind", "params", "GMACs@512", "description"):
        table.add_column(col, overflow="fold", justify="right" if col in ("params", "GMACs@512") else "left")
    for r in rows:
        table.add_row(r.name, r.kind, f"{r.params:,}", f"{r.macs_512 / 1e9:.2f}", r.description)
    console.print(table)
    console.print("Configs: ptg models --json. A user network: --baseline package.module:ClassName.")
