"""The `ptg` command: registers one small module per command and turns known errors into one line.

Command modules import heavy libraries (torch, zarr, foundation models) inside their functions,
so `ptg --help` stays fast and `ptg train` never imports a foundation-model library.
"""
from __future__ import annotations

import sys

import click
import typer
from rich.markup import escape

from ptg.pipeline.errors import PtgError

from . import distill_cmd  # noqa: I001
from . import (data_cmd, demo_cmd, encoders_cmd, eval_cmd, extract_cmd, manifest_cmd, models_cmd, priors_cmd, report_cmd,
               restore_cmd, train_cmd)

app = typer.Typer(
    name="ptg",
    help="Boost image restoration with priors cached from frozen pre-trained models (PTG-RM).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# In the order a user meets them.
app.add_typer(data_cmd.app, name="data")
app.add_typer(manifest_cmd.app, name="manifest")
app.command("encoders")(encoders_cmd.encoders)
app.command("extract-priors")(extract_cmd.extract_priors)
app.add_typer(priors_cmd.app, name="priors")
app.command("models")(models_cmd.models)
app.command("train")(train_cmd.train)
app.command("distill")(distill_cmd.distill_command)
app.command("eval")(eval_cmd.eval_command)
app.command("restore")(restore_cmd.restore_command)
app.command("report")(report_cmd.report_command)
app.command("demo")(demo_cmd.demo)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ptg` script: exit 0 on success, 1 on a user error, 2 on bad usage."""
    from .console import err_console

    try:
        app(args=argv, prog_name="ptg", standalone_mode=False)
    except PtgError as exc:
        # escape: messages quote things like pip's 'ptg[extract]', which rich would read as markup
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    return 0


def run() -> None:
    """Console-script target."""
    sys.exit(main())


if __name__ == "__main__":
    run()
