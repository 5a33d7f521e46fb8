"""Every on-disk form of a trained model, in one place: `ptg train` checkpoints (run folders),
`ptg export` folders and `ptg distill` students.

`load(source)` is the one loading path: it returns the networks as a `Restorer` (which only runs
them) and a typed `RunInfo` (what was loaded). Inference imports this package, never
`ptg.ptgrm.train`; training imports the checkpoint reader from here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..restorer import Restorer
from .checkpoint import pick_weights, read_checkpoint
from .export import EXPORT_CONFIG, EXPORT_FORMAT, export_run, is_export, read_export
from .info import NETWORK_KINDS, NetworkSpec, PriorStoreInfo, RunInfo
from .student import PriorStudent, load_student, student_priors

__all__ = ["EXPORT_CONFIG", "EXPORT_FORMAT", "NETWORK_KINDS", "NetworkSpec", "PriorStoreInfo", "PriorStudent", "RunInfo",
           "export_run", "is_export", "load", "load_student", "pick_weights", "student_priors"]


def load(source: str | Path, device: str | torch.device = "cpu", prefer: str = "best", trusted: Sequence[str] = (),
         use_ema: bool = True) -> tuple[Restorer, RunInfo]:
    """A trained model from an export folder, a run folder (best.pt, else last.pt) or a checkpoint file.

    Args:
        source: where it is.
        device: where the networks go.
        prefer: for a run folder, "best" or "last" first.
        trusted: user-network names the user passed on the command line (`build_network`).
        use_ema: take EMA weights where a checkpoint keeps them (exports hold what was exported).

    Returns:
        (the networks in eval mode, what was loaded).
    """
    f, r, info = read_export(source) if is_export(source) else read_checkpoint(source, prefer, trusted, use_ema)
    return Restorer(f, r, info.transform, info.baseline.interface).to(device).eval(), info
