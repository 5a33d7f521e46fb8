"""Prior normalisation and the ridge probe, written once and torch-free (numpy only).

The trainer's prior transform (`ptg.ptgrm.priors.PriorTransform`), `ptg distill` (its training
targets and its agreement probe) and `ptg priors probe` all take their choices, default, floors and
maths from here, so a prior means the same thing in every one of them:

- ``standardize``: per dimension ``(g - mean) / std`` over the training rows; a dimension whose
  std is at most `STD_FLOOR` never varied and carries nothing, so it is centred, not divided by ~0.
- ``l2``: each vector divided by its L2 norm (at least `L2_EPS`), as the authors do for CLIP.
- ``none``: the vectors as the store holds them.

Ridge: an unpenalised intercept, solved through the SVD of the centred features (so it works for
more dimensions than rows); `ridge_r2` is the probe `ptg distill` reports per degradation field.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import PtgError

# Every normalisation, in the order reports list them (from the raw store to the default).
NORMALIZE = ("none", "l2", "standardize")
DEFAULT_NORMALIZE = "standardize"  # training's and distillation's default (why: docs/RESULTS.md)
STD_FLOOR = 1e-8  # a training std at most this is replaced by 1 (the dimension is only centred)
L2_EPS = 1e-12  # smallest norm a vector is divided by


def check_normalize(name: str, option: str = "priors.normalize") -> str:
    """``name`` if it is one of `NORMALIZE`.

    Raises:
        PtgError: any other name, naming the choices.
    """
    if name not in NORMALIZE:
        raise PtgError(f"{option}={name!r} is not one of {', '.join(NORMALIZE)}")
    return name


def row_norms(x: np.ndarray) -> np.ndarray:
    """L2 norm of each row of ``x`` [..., D] as ``sqrt(dot(v, v))`` in its own dtype, at least
    `L2_EPS`; shape [..., 1].

    One dot product per row (BLAS): the numerics every trained run so far used (a vectorised
    reduction sums in another order and differs in the last bit for most float32 vectors).
    """
    flat = x.reshape(-1, x.shape[-1])
    norms = np.array([max(float(np.sqrt(np.dot(v, v))), L2_EPS) for v in flat], dtype=x.dtype)
    return norms.reshape(*x.shape[:-1], 1)


def floor_std(std: np.ndarray) -> np.ndarray:
    """``std`` with every value at most `STD_FLOOR` replaced by 1."""
    return np.where(std > STD_FLOOR, std, np.ones_like(std))


def standardize_stats(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, floored population std) per dimension of ``rows`` [N, D], in float64."""
    x = np.asarray(rows, dtype=np.float64).reshape(-1, rows.shape[-1])
    return x.mean(0), floor_std(x.std(0))


def normalize_rows(x: np.ndarray, how: str, train: np.ndarray | None = None) -> np.ndarray:
    """``x`` [N, D] normalised ``how``; ``standardize`` uses the statistics of ``train`` [M, D]."""
    check_normalize(how, "normalize")
    if how == "l2":
        return x / row_norms(x)
    if how == "standardize":
        if train is None:
            raise PtgError("standardize needs the training rows' statistics")
        mean, std = standardize_stats(train)
        return (x - mean) / std
    return x


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge with an unpenalised intercept: (w [D, K], b [K]) for x [N, D], y [N, K]."""
    mx, my = x.mean(0), y.mean(0)
    u, s, vt = np.linalg.svd(x - mx, full_matrices=False)
    w = vt.T @ ((s / (s * s + alpha))[:, None] * (u.T @ (y - my)))  # works for D > N as well
    return w, my - mx @ w


def r2(pred: np.ndarray, y: np.ndarray) -> float:
    """Coefficient of determination of ``pred`` for ``y`` (nan when y is constant)."""
    sst = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / sst if sst > 0 else float("nan")


def ridge_r2(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, alpha: float = 1.0
             ) -> float | None:
    """Test R² of a ridge read-out of ``y`` from features standardised on the train rows; None
    when undefined (fewer than two rows on a side, or a constant target)."""
    if len(x_tr) < 2 or len(x_te) < 2 or np.var(y_te) == 0 or np.var(y_tr) == 0:
        return None
    xtr = normalize_rows(np.asarray(x_tr, np.float64), "standardize", x_tr)
    xte = normalize_rows(np.asarray(x_te, np.float64), "standardize", x_tr)
    w, b = ridge_fit(xtr, np.asarray(y_tr, np.float64)[:, None], alpha)
    return r2((xte @ w + b)[:, 0], np.asarray(y_te, np.float64))


__all__ = ["DEFAULT_NORMALIZE", "L2_EPS", "NORMALIZE", "STD_FLOOR", "check_normalize", "floor_std", "normalize_rows",
           "r2", "ridge_fit", "ridge_r2", "row_norms", "standardize_stats"]
