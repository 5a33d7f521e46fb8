"""How far a `ptg distill` student agrees with its teacher: cosine, MSE, and a degradation probe.

`agreement` compares student and teacher priors of the same rows, beside the score of the
train-mean prior (a student must beat it to carry per-image information). `probe_report` reads
each numeric degradation field of the manifest (``degradation: {sigma: ...}``) linearly from the
teacher's and from the student's priors with the shared ridge read-out
(`ptg.pipeline.priors.normalize.ridge_r2`: fitted on the train rows, R² on the test rows).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ptg.pipeline.priors.normalize import ridge_r2

if TYPE_CHECKING:
    from .artifacts.student import Normalizer


def agreement(pred: np.ndarray, teacher: np.ndarray, norm: Normalizer, train_mean: np.ndarray) -> dict[str, float]:
    """Student vs teacher on the same rows: raw cosine, MSE (raw and training space) and a baseline.

    ``cos_mean_prior`` is what predicting the train-rows' mean prior for every image achieves:
    the floor a student must beat to carry any per-image information.
    """
    p, t = torch.from_numpy(pred).float(), torch.from_numpy(teacher).float()
    base = torch.from_numpy(train_mean).float().expand_as(t)
    return {"cos": float(F.cosine_similarity(p, t, dim=1).mean()),
            "cos_min": float(F.cosine_similarity(p, t, dim=1).min()),
            "mse": float(F.mse_loss(p, t)),
            "mse_normalized": float(F.mse_loss(norm.forward(p), norm.forward(t))),
            "cos_mean_prior": float(F.cosine_similarity(base, t, dim=1).mean()),
            "mse_normalized_mean_prior": float(F.mse_loss(norm.forward(base), norm.forward(t)))}


def _numeric_fields(samples) -> list[str]:
    names = set()
    for s in samples:
        deg = s.extra.get("degradation")
        if isinstance(deg, dict):
            names |= {k for k, v in deg.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return sorted(names)


def _field(samples, name: str) -> np.ndarray | None:
    vals = [(s.extra.get("degradation") or {}).get(name) for s in samples]
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in vals):
        return None
    return np.asarray(vals, dtype=np.float64)


def probe_report(train_s, test_s, teacher_tr, teacher_te, student_tr, student_te) -> dict[str, dict[str, float | None]]:
    """R² of the degradation fields read linearly from teacher priors and from student priors."""
    out = {}
    for name in _numeric_fields(train_s + test_s):
        y_tr, y_te = _field(train_s, name), _field(test_s, name)
        if y_tr is None or y_te is None:
            continue
        out[name] = {"teacher_r2": ridge_r2(teacher_tr, y_tr, teacher_te, y_te),
                     "student_r2": ridge_r2(student_tr, y_tr, student_te, y_te)}
    return out
