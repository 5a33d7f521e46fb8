"""`ptg models`: the registered models (parameters, MACs at 512×512, config); `ptg models inspect FILE`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The models F and R (names for --baseline/--refiner); inspect a checkpoint.",
                  invoke_without_command=True, no_args_is_help=False)


@app.callback()
def models(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (one object per model) instead of a table.")] = False,
) -> None:
    """List the registered models (names for --model/--baseline); R is counted at prior dim 512."""
    if ctx.invoked_subcommand is not None:
        return
    import dataclasses
    import json

    from rich.table import Table

    from ptg.ptgrm.models import get_model_spec, list_models
    from ptg.ptgrm.models.summary import summarize_model

    from .console import console

    rows = []
    for name in list_models():
        spec = get_model_spec(name)
        if spec.external:  # built from a file or another package: nothing to count without it
            rows.append({"name": name, "kind": spec.kind, "params": None, "macs_512": None,
                         "description": spec.description, "config": {}, "external": True})
        else:
            rows.append({**dataclasses.asdict(summarize_model(name)), "external": False})
    if json_out:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="models (R counted at prior dim 512; MACs for one 512×512 image)")
    for col in ("name", "kind", "params", "GMACs@512", "description"):
        table.add_column(col, overflow="fold", justify="right" if col in ("params", "GMACs@512") else "left")
    for r in rows:
        params = "from file" if r["external"] else f"{r['params']:,}"
        macs = "-" if r["external"] else f"{r['macs_512'] / 1e9:.2f}"
        table.add_row(r["name"], r["kind"], params, macs, r["description"])
    console.print(table)
    console.print("Configs: ptg models --json. A checkpoint: ptg models inspect FILE. "
                  "A user network: --baseline package.module:ClassName.")


@app.command("inspect")
def inspect(
    weights: Annotated[Path, typer.Argument(help="A checkpoint (.pth/.pt/.ckpt/.safetensors) of a restoration network.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """What spandrel detects in a checkpoint (read safely: nothing in it runs), or why it cannot be F.

    Exit code 1 when the file cannot serve as F (not 1x RGB restoration, or not recognised).
    """
    import dataclasses
    import json

    from rich.table import Table

    from ptg.ptgrm.models.spandrel_f import inspect_weights

    from .console import console, err_console

    d = inspect_weights(weights)
    if json_out:
        console.print_json(json.dumps(dataclasses.asdict(d)))
    else:
        table = Table(title=f"{weights}", show_header=False)
        size = "-" if d.size_multiple is None else ", ".join(
            [f"padded to a multiple of {d.size_multiple}"] + ([f"at least {d.size_minimum}"] if d.size_minimum else [])
            + (["square"] if d.square else []))
        for key, value in (("architecture", d.architecture), ("purpose", d.purpose),
                           ("scale", f"{d.scale}x" if d.scale is not None else None),
                           ("channels", f"{d.input_channels} -> {d.output_channels}" if d.input_channels else None),
                           ("parameters", f"{d.parameters:,}" if d.parameters is not None else None),
                           ("size", size), ("sha256", d.sha256)):
            table.add_row(key, "-" if value is None else str(value))
        console.print(table)
    if d.refused:
        err_console.print(f"refused as F: {d.refused}")
        raise typer.Exit(1)
    if not json_out:
        console.print(f"usable as F: ptg train --mode refine --baseline spandrel --baseline-weights {weights} ...")
