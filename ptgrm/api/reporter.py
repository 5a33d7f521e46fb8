"""How a long API call talks to its caller: lines of news and progress counts. Quiet by default.

The CLI passes its console and progress bar (`ptg.cli.console`); a notebook or a service passes
nothing, or its own logger.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator


def _quiet(message: str) -> None:
    return None


@contextmanager
def _no_bar(total: int | None, label: str, unit: str = "it") -> Iterator[Callable[..., None]]:
    yield lambda n=1, **fields: None


@dataclass(frozen=True)
class Reporter:
    """Where an API call's news goes."""

    log: Callable[[str], None] = _quiet  # one line of news (which checkpoint, where F comes from, ...)
    # progress(total, label, unit) -> a context manager yielding advance(n=1, **fields)
    progress: Callable[..., ContextManager[Callable[..., Any]]] = _no_bar


QUIET = Reporter()
