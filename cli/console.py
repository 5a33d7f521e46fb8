"""One console and one progress helper for every command (library code stays quiet).

Library functions that do long work take an ``on_progress(n)`` callback; commands pass the
``advance`` function of `progress_bar` so the bar lives here, at the edge.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console()
err_console = Console(stderr=True)

# Off a terminal (a log file, CI, nohup) a bar cannot redraw: print a plain line this often instead.
PLAIN_EVERY_S = float(os.environ.get("PTG_PROGRESS_EVERY", "30"))


def _fields(fields: dict[str, object]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


def _clock_text(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


@contextmanager
def progress_bar(
    total: int | None,
    description: str,
    unit: str = "it",
    every: float | None = None,
    out: Console | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Callable[..., None]]:
    """Show progress of a long stage; yields ``advance(n=1, **fields)``.

    On a terminal: a rich bar with rate and ETA, extra fields (e.g. ``loss=0.03``) after it. Off a
    terminal: one plain line every `every` seconds (default `PLAIN_EVERY_S`, env
    ``PTG_PROGRESS_EVERY``) with done/total, rate, ETA and the fields, and a last line at the end
    (unless the stage took under a second).
    Nothing is drawn before the first ``advance``, so a stage that fails while setting up shows
    its error alone, not an empty bar.

    Args:
        total: units of work in all (None: unknown).
        description: what is running, e.g. "train (joint)".
        unit: name of one unit in the rate ("it", "img").
        every: seconds between plain lines off a terminal.
        out: the console to draw on (default: stderr).
        clock: time source in seconds (tests pass a fake one).
    """
    con = out or err_console
    if con.is_terminal:
        with _rich_bar(con, total, description, unit) as advance:
            yield advance
        return
    period = PLAIN_EVERY_S if every is None else every
    start = clock()
    state: dict = {"done": 0, "last": start, "fields": {}}

    def line(now: float, final: bool = False) -> str:
        done, elapsed = state["done"], max(now - start, 1e-9)
        rate = done / elapsed
        parts = [f"{description}: {done}/{total if total is not None else '?'} {unit}"]
        if total:
            parts[0] += f" ({100 * done / total:.0f}%)"
        parts.append(f"{rate:.3g} {unit}/s" if done else "")
        if final:
            parts.append(f"took {_clock_text(elapsed)}")
        elif total and done:
            parts.append(f"eta {_clock_text((total - done) / rate)}")
        parts.append(_fields(state["fields"]))
        return ", ".join(p for p in parts if p)

    def advance(n: int = 1, **fields: object) -> None:
        state["done"] += n
        state["fields"].update(fields)
        now = clock()
        if now - state["last"] >= period and state["done"] != total:  # the end has its own line
            state["last"] = now
            con.print(escape(line(now)), highlight=False, soft_wrap=True)

    yield advance
    if state["done"] and clock() - start >= 1.0:  # a stage that took under a second needs no summary line
        con.print(escape(line(clock(), final=True)), highlight=False, soft_wrap=True)


@contextmanager
def _rich_bar(con: Console, total: int | None, description: str, unit: str) -> Iterator[Callable[..., None]]:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=con,
        transient=False,
    )
    task = progress.add_task(description, total=total, rate="", info="")
    started = False

    def advance(n: int = 1, **fields: object) -> None:
        nonlocal started
        if not started:  # drawn lazily, see progress_bar
            progress.start()
            started = True
        progress.advance(task, n)
        speed = progress.tasks[task].speed
        progress.update(task, rate=f"{speed:.2f} {unit}/s" if speed else "", info=_fields(fields))

    try:
        yield advance
    finally:
        if started:
            progress.stop()


def cli_reporter():
    """The API's `Reporter` for a command: news lines on the console, progress as `progress_bar`."""
    from ptg.ptgrm.api.reporter import Reporter

    return Reporter(log=lambda message: console.print(message, highlight=False, markup=False), progress=progress_bar)


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``: sizes in messages."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
