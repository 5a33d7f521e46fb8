"""What every long-running ptgrm job shares (`ptg train`, `ptg distill`, eval and restore):
choosing the torch device, and turning SIGINT/SIGTERM into a request to stop after the current
step. Torch only; nothing of training (so inference and distillation may import it)."""
from __future__ import annotations

import signal
import threading
from typing import Any

import torch

from ptg.pipeline.core.errors import PtgError


def resolve_device(want: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA if present, else CPU) | cpu | cuda | cuda:N, checked.

    Raises:
        PtgError: CUDA asked for where none is available, or a name torch does not know.
    """
    name = want
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PtgError(f"device {want!r} but no CUDA device is available; use cpu (or auto)")
        if name == "cuda":
            name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise PtgError(f"device {want!r} is not a torch device; use auto, cpu or cuda[:i]") from exc
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


class StopSignals:
    """Turn SIGINT/SIGTERM into a request to stop after the current step (``signum`` set).

    The first signal only records itself; the handler is then put back, so a second Ctrl-C
    stops at once as usual. Installed only in the main thread (signals cannot be caught
    elsewhere; there a kill simply ends the process, and the job's saved state stays behind).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum = 0
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
