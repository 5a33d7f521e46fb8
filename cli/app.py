"""The `ptg` command: registers one small module per command and turns known errors into one line.

Command modules import heavy libraries (torch, zarr, foundation models) inside their functions,
so `ptg --help` stays fast and `ptg train` never imports a foundation-model library.

Exit codes: 0 success, 1 a user error (`PtgError`), 2 bad usage (unknown command or option, bad
value), 130/143 interrupted (Ctrl-C / SIGTERM).
"""
from __future__ import annotations

import difflib
import re
import sys
import warnings
from typing import Any

import typer
from rich.markup import escape

from ptg.pipeline.core.errors import PtgError

from . import (data_cmd, demo_cmd, distill_cmd, encoders_cmd, eval_cmd, export_cmd, extract_cmd, manifest_cmd, models_cmd,
               priors_cmd, report_cmd, restore_cmd, train_cmd)
from . import extract_outputs_cmd, study_cmd

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
app.command("extract-outputs")(extract_outputs_cmd.extract_outputs)
app.add_typer(priors_cmd.app, name="priors")
app.add_typer(models_cmd.app, name="models")
app.command("train")(train_cmd.train)
app.command("distill")(distill_cmd.distill_command)
app.command("eval")(eval_cmd.eval_command)
app.command("restore")(restore_cmd.restore_command)
app.command("export")(export_cmd.export_command)
app.command("report")(report_cmd.report_command)
app.command("study")(study_cmd.study_command)
app.command("demo")(demo_cmd.demo)


def _click_modules() -> list[Any]:
    """The click implementations typer may raise from: its vendored copy (typer >= 0.16) and click."""
    mods = []
    try:
        from typer import _click  # type: ignore[attr-defined]

        mods.append(_click)
    except ImportError:
        pass
    try:
        import click

        mods.append(click)
    except ImportError:  # pragma: no cover - typer < 0.16 depends on click
        pass
    return mods


def _classes(name: str) -> tuple[type, ...]:
    """Exception class `name` from every click implementation (and typer's own, for Exit/Abort)."""
    found = []
    for mod in _click_modules():
        cls = getattr(mod, name, None) or getattr(getattr(mod, "exceptions", None), name, None)
        if isinstance(cls, type):
            found.append(cls)
    own = getattr(typer, name, None)
    if isinstance(own, type) and issubclass(own, BaseException):
        found.append(own)
    return tuple(dict.fromkeys(found))


_USAGE, _CLICK, _EXIT, _ABORT = (_classes("UsageError"), _classes("ClickException"), _classes("Exit"), _classes("Abort"))
_NO_ARGS = _classes("NoArgsIsHelpError")


def _closest(word: str, choices: list[str]) -> str | None:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return match[0] if match else None


def _option_names(ctx: Any) -> list[str]:
    names: list[str] = []
    for param in getattr(getattr(ctx, "command", None), "params", []):
        names += [o for o in (*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])) if o.startswith("-")]
    return names


def usage_line(exc: Exception) -> str:
    """One line for a click/typer usage error: what was wrong, the closest valid choice, where to look."""
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "ptg"
    msg = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    hint = None
    option = getattr(exc, "option_name", None)
    if option is not None and type(exc).__name__ == "NoSuchOption":
        msg = f"unknown option {option}"
        hint = _closest(option, _option_names(ctx))
    elif m := re.match(r"No such command '(.+?)'", msg):
        msg = f"unknown command {m.group(1)!r}"
        commands = ctx.command.list_commands(ctx) if ctx is not None and hasattr(ctx.command, "list_commands") else []
        hint = _closest(m.group(1), commands)
    else:
        msg = re.sub(r"\s*Did you mean .*$", "", msg.strip())
        choices = getattr(getattr(getattr(exc, "param", None), "type", None), "choices", None)
        if choices and (m := re.search(r"'([^']*)' is not", msg)):
            hint = _closest(m.group(1), [str(c) for c in choices])
    msg = " ".join(msg.split())  # one line whatever the message's layout
    return msg + (f"; did you mean {hint}?" if hint else "") + f" (see `{path} --help`)"


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """Python warnings as one styled line on stderr, without the source line that looks like a crash."""
    from .console import err_console

    text = " ".join(str(message).split())
    err_console.print(f"[yellow]warning:[/] {escape(text)} [dim]({category.__name__})[/]", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ptg` script; returns the exit code (see the module docstring)."""
    from .console import err_console

    def error(text: str) -> None:
        # escape: messages quote things like pip's 'ptg[extract]', which rich would read as markup
        err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)

    try:
        rv = app(args=argv, prog_name="ptg", standalone_mode=False)
    except PtgError as exc:
        error(str(exc))
        return exc.exit_code
    except _NO_ARGS as exc:  # `ptg manifest` alone: its help, as click prints it
        err_console.print(exc.format_message(), highlight=False, markup=False)
        return 2
    except _USAGE as exc:
        error(usage_line(exc))
        return 2
    except _CLICK as exc:
        error(" ".join(exc.format_message().split()))
        return exc.exit_code
    except _EXIT as exc:
        return _interrupted(exc.exit_code)
    except (*_ABORT, KeyboardInterrupt):
        return _interrupted(130)
    return _interrupted(rv) if isinstance(rv, int) and not isinstance(rv, bool) else 0


def _interrupted(code: int) -> int:
    """typer >= 0.16 turns Ctrl-C into Exit(130) (older ones into Abort): say so in one line."""
    if code == 130:
        from .console import err_console

        err_console.print("[bold red]interrupted[/] (Ctrl-C)", highlight=False)
    return code


def run() -> None:
    """Console-script target: warnings as one line, and the process exits with `main`'s code.

    The warning hook is set here, for the script's process, not in `main`: code that calls `main`
    (tests, `ptg demo`) keeps its own warning handling, e.g. pytest.warns.
    """
    warnings.showwarning = _show_warning
    sys.exit(main())


if __name__ == "__main__":
    run()
