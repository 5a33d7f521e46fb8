"""One console and one progress helper for every command (library code stays quiet).

Library functions that do long work take an ``on_progress(n)`` callback; commands pass the
``advance`` function of `progress_bar` so the bar lives here, at the edge.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
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


@contextmanager
def progress_bar(total: int | None, description: str, unit: str = "it") -> Iterator[Callable[..., None]]:
    """A rich progress bar showing rate and ETA; yields ``advance(n=1, **fields)``.

    Extra fields (e.g. ``loss=0.03``) are shown after the bar.
    """
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total, rate="", info="")

        def advance(n: int = 1, **fields: object) -> None:
            progress.advance(task, n)
            speed = progress.tasks[task].speed
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            progress.update(task, rate=f"{speed:.2f} {unit}/s" if speed else "", info=info)

        yield advance
