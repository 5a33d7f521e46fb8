"""`ptg priors probe`: does a priors store carry the degradation? Linear probes, before any GPU day.

For every degradation field a manifest records (task, blur kind, sigma, exposure, gamma, photons,
read noise, blur size, JPEG quality; see `encoders.degradation.fields_of`), fit a ridge model from
the prior to the field on the *train* rows and score it on the *test* rows:

- numeric fields: R² on the test rows (0 = no better than the train mean; can be negative);
- categorical fields: one-vs-rest ridge, accuracy on the test rows against chance = always
  answering the train rows' majority class;
- numeric fields with at most `MAX_LEVELS` distinct values (e.g. sigma in {10, 30, 50}), also as
  "levels": the numeric probe's prediction rounded to the nearest train level, accuracy vs chance.

The ridge penalty is chosen by k-fold cross-validation on the train rows only (closed form via an
SVD, so a 1280-d prior on 60 rows is cheap and exact). Two geometry statistics need no labels
learned: the mean pairwise cosine of the vectors (near 1: nearly parallel, the per-image part is a
small wiggle on a shared direction) and, per field, the fraction of the total variance that lies
between its groups. Each is computed with the prior as stored (``none``), L2-normalised (``l2``)
and standardised per dimension with train-row statistics (``standardize``), the normalisations the
trainer offers. numpy only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.errors import PtgError
from .normalize import NORMALIZE, check_normalize, normalize_rows, r2, ridge_fit

NORMALIZATIONS = NORMALIZE  # every normalisation the trainer knows, each probed
MAX_LEVELS = 8  # a numeric field with at most this many distinct (repeated) values is also probed as levels
ALPHAS = tuple(10.0 ** e for e in range(-4, 5))  # ridge penalties tried by cross-validation
# Fewer test rows than this and a score is not reported: the R² or accuracy of a handful of rows
# swings by more than the differences a probe is read for (how much: docs/RESULTS.md, "Numbers
# behind defaults in the code").
MIN_TEST_ROWS = 10
MIN_TRAIN_ROWS = 4


@dataclass
class ProbeRow:
    """One probe: a field under one normalisation."""

    field: str  # degradation field (e.g. sigma, task, "sigma (levels)")
    kind: str  # numeric | categorical
    normalize: str  # none | l2 | standardize
    n_train: int  # train rows with the field
    n_test: int  # test rows with the field
    score: float | None  # R² (numeric) or accuracy (categorical) on the test rows; None when it cannot be fit
    chance: float | None  # categorical: accuracy of the train majority class on the test rows
    alpha: float | None  # ridge penalty chosen by cross-validation on the train rows
    between_var: float | None  # categorical: fraction of the variance between the field's groups (all rows)
    note: str = ""  # why a probe was skipped


@dataclass
class ProbeReport:
    """Everything `ptg priors probe` reports."""

    store: str  # the store probed
    manifest: str  # the manifest whose rows and fields were used
    encoder: str  # the store's encoder name
    dim: int  # prior length
    view: str  # the view read
    train_split: str
    test_split: str
    n_train: int
    n_test: int
    mean_cosine: dict[str, float]  # normalisation -> mean pairwise cosine over all rows
    rows: list[ProbeRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        head = (f"Probe of {self.store} ({self.encoder}, {self.dim}-d, view {self.view}) on {self.manifest}: "
                f"{self.n_train} {self.train_split} rows -> {self.n_test} {self.test_split} rows.\n\n"
                "Mean pairwise cosine: " + ", ".join(f"{k} {v:.3f}" for k, v in self.mean_cosine.items()) + "\n\n")
        lines = ["| field | kind | normalize | test score | chance | between-group var | alpha | train/test rows |",
                 "|---|---|---|---:|---:|---:|---:|---|"]
        for r in self.rows:
            score = "—" if r.score is None else (f"R² {r.score:.3f}" if r.kind == "numeric" else f"acc {r.score:.3f}")
            lines.append(f"| {r.field} | {r.kind} | {r.normalize} | {score}{' (' + r.note + ')' if r.note else ''} | "
                         f"{'—' if r.chance is None else f'{r.chance:.3f}'} | "
                         f"{'—' if r.between_var is None else f'{r.between_var:.3f}'} | "
                         f"{'—' if r.alpha is None else f'{r.alpha:g}'} | {r.n_train}/{r.n_test} |")
        return head + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Numerics


def mean_cosine(x: np.ndarray) -> float:
    """Mean cosine over all pairs of distinct rows of `x` [N, D]."""
    n = len(x)
    if n < 2:
        return float("nan")
    u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    s = u.sum(0)
    return float((s @ s - (u * u).sum()) / (n * (n - 1)))  # sum over i != j of u_i . u_j


def between_fraction(x: np.ndarray, groups: Sequence[Any]) -> float:
    """Fraction of the total variance of `x` [N, D] that lies between the means of `groups`."""
    g = np.asarray([str(v) for v in groups])
    mu = x.mean(0)
    total = float(((x - mu) ** 2).sum())
    if total <= 0:
        return 0.0
    between = sum(float((g == k).sum() * ((x[g == k].mean(0) - mu) ** 2).sum()) for k in np.unique(g))
    return between / total


def _folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(n), min(k, n))


def choose_alpha(x: np.ndarray, y: np.ndarray, loss, k: int = 5) -> float:
    """The penalty of `ALPHAS` with the lowest k-fold cross-validated `loss(pred, y)` on these rows."""
    folds = _folds(len(x), k)
    best, best_loss = ALPHAS[0], np.inf
    for a in ALPHAS:
        total = 0.0
        for f in folds:
            tr = np.setdiff1d(np.arange(len(x)), f)
            w, b = ridge_fit(x[tr], y[tr], a)
            total += loss(x[f] @ w + b, y[f])
        if total < best_loss - 1e-12:
            best, best_loss = a, total
    return best


def probe_numeric(xtr, ytr, xte, yte) -> tuple[float, float, np.ndarray]:
    """(test R², alpha, test predictions) of a ridge probe trained on (xtr, ytr)."""
    alpha = choose_alpha(xtr, ytr[:, None], lambda p, y: float(((p - y) ** 2).sum()))
    w, b = ridge_fit(xtr, ytr[:, None], alpha)
    pred = (xte @ w + b)[:, 0]
    return r2(pred, yte), alpha, pred


def _chance(ctr: Sequence[Any], cte: Sequence[Any]) -> float:
    values, counts = np.unique(np.asarray(ctr), return_counts=True)
    return float((np.asarray(cte) == values[counts.argmax()]).mean())


def probe_categorical(xtr, ctr, xte, cte) -> tuple[float, float, float]:
    """(test accuracy, chance, alpha) of a one-vs-rest ridge classifier; chance = train majority class."""
    classes = sorted(set(ctr))
    onehot = lambda c: (np.asarray(c)[:, None] == np.asarray(classes)[None, :]).astype(np.float64)  # noqa: E731
    alpha = choose_alpha(xtr, onehot(ctr), lambda p, y: float((p.argmax(1) != y.argmax(1)).sum()))
    w, b = ridge_fit(xtr, onehot(ctr), alpha)
    pred = np.asarray(classes)[(xte @ w + b).argmax(1)]
    return float((pred == np.asarray(cte)).mean()), _chance(ctr, cte), alpha


# ---------------------------------------------------------------------------------------------
# The probe


def probe_arrays(x_train: np.ndarray, x_test: np.ndarray, f_train: list[dict[str, Any]], f_test: list[dict[str, Any]],
                 normalizations: Sequence[str] = NORMALIZATIONS) -> tuple[list[ProbeRow], dict[str, float]]:
    """Probe priors (train/test arrays) against per-row field dicts; returns the rows and mean cosines."""
    names: list[str] = []
    for d in f_train + f_test:
        names += [k for k in d if k not in names]
    rows, cosines = [], {}
    for how in normalizations:
        xtr = normalize_rows(x_train.astype(np.float64), how, x_train.astype(np.float64))
        xte = normalize_rows(x_test.astype(np.float64), how, x_train.astype(np.float64))
        cosines[how] = mean_cosine(np.concatenate([xtr, xte]))
        for name in names:
            itr = [i for i, d in enumerate(f_train) if d.get(name) is not None]
            ite = [i for i, d in enumerate(f_test) if d.get(name) is not None]
            vtr, vte = [f_train[i][name] for i in itr], [f_test[i][name] for i in ite]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vtr + vte)
            targets = [(name, "numeric")] if numeric else [(name, "categorical")]
            n_levels = len(set(vtr + vte))
            if numeric and n_levels <= MAX_LEVELS and 2 * n_levels <= len(vtr + vte):  # levels that repeat
                targets.append((f"{name} (levels)", "categorical"))
            for label, kind in targets:
                row = ProbeRow(label, kind, how, len(itr), len(ite), None, None, None, None)
                both = np.concatenate([xtr[itr], xte[ite]]) if itr or ite else np.zeros((0, xtr.shape[1]))
                if kind == "categorical" and len(both) > 1:
                    row.between_var = between_fraction(both, vtr + vte)
                if len(itr) < MIN_TRAIN_ROWS or len(ite) < MIN_TEST_ROWS:
                    row.note = f"too few rows: {len(itr)} train / {len(ite)} test, the probe needs " \
                               f"{MIN_TRAIN_ROWS} / {MIN_TEST_ROWS}"
                elif len(set(map(str, vtr))) < 2:
                    row.note = "constant in train"
                elif kind == "numeric":
                    row.score, row.alpha, _ = probe_numeric(xtr[itr], np.asarray(vtr, float), xte[ite], np.asarray(vte, float))
                elif numeric:  # ordered levels: the regression probe's nearest train level (a one-vs-rest linear
                    # classifier cannot pick out a middle level along a single direction)
                    _, row.alpha, pred = probe_numeric(xtr[itr], np.asarray(vtr, float), xte[ite], np.asarray(vte, float))
                    levels = np.unique(np.asarray(vtr, float))
                    nearest = levels[np.abs(pred[:, None] - levels[None, :]).argmin(1)]
                    row.score, row.chance = float((nearest == np.asarray(vte, float)).mean()), _chance(vtr, vte)
                else:
                    row.score, row.chance, row.alpha = probe_categorical(xtr[itr], [str(v) for v in vtr], xte[ite],
                                                                          [str(v) for v in vte])
                rows.append(row)
    return rows, cosines


def probe_store(store: str | Path, manifest: str | Path, *, train_split: str = "train", test_split: str = "test",
                view: str = "identity", root: str | Path | None = None,
                normalizations: Sequence[str] = NORMALIZATIONS, outside: str = "refuse") -> ProbeReport:
    """Probe a priors store against a manifest's recorded degradation fields (train rows -> test rows).

    ``outside`` is `load_manifest`'s (``"allow"`` only from the user's ``--allow-outside``).

    Raises:
        PtgError: a split without rows, rows without a prior in the store, no recorded fields.
    """
    from ..encoders.degradation import fields_of
    from ..datasets.manifest import load_manifest
    from ..storage.store import open_priors, sample_keys

    for how in normalizations:
        check_normalize(how, "normalize")  # rejects an unknown name before any work
    m = load_manifest(manifest, root=root, outside=outside)
    reader = open_priors(store)
    tr, te = m.split(train_split), m.split(test_split)
    if len(tr) < 4 or not te:
        raise PtgError(f"the probe needs at least 4 {train_split!r} rows and 1 {test_split!r} row in {m.path}; "
                       f"it has {len(tr)} and {len(te)}. Choose splits with --train-split/--test-split")
    x_train, x_test = reader.get(sample_keys(tr), view), reader.get(sample_keys(te), view)
    f_train, f_test = [fields_of(s.extra) for s in tr], [fields_of(s.extra) for s in te]
    if not any(v is not None for d in f_train for v in d.values()):
        raise PtgError(f"the rows of {m.path} record no degradation (no 'task'/'degradation' fields) to probe for")
    rows, cos = probe_arrays(x_train, x_test, f_train, f_test, normalizations)
    return ProbeReport(str(store), str(m.path), str(reader.metadata.get("encoder", {}).get("name")), reader.dim, view,
                       train_split, test_split, len(tr), len(te), cos, rows)


def plot_report(report: ProbeReport, path: str | Path) -> Path:
    """A bar chart: test score per field, one bar per normalisation, chance marked for categorical fields."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.fsio import atomic_write

    fields = list(dict.fromkeys(r.field for r in report.rows))
    norms = list(dict.fromkeys(r.normalize for r in report.rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(fields) + 2), 3.6))
    width = 0.8 / max(1, len(norms))
    for j, how in enumerate(norms):
        ys = [next((r.score for r in report.rows if r.field == f and r.normalize == how and r.score is not None), np.nan)
              for f in fields]
        ax.bar(np.arange(len(fields)) + (j - (len(norms) - 1) / 2) * width, ys, width, label=how)
    for i, f in enumerate(fields):
        chance = next((r.chance for r in report.rows if r.field == f and r.chance is not None), None)
        if chance is not None:
            ax.hlines(chance, i - 0.4, i + 0.4, colors="k", linestyles="dashed", linewidth=1)
    ax.set_xticks(np.arange(len(fields)), fields, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test R² (numeric) / accuracy (levels)")
    low = min([r.score for r in report.rows if r.score is not None] or [0.0])
    ax.set_ylim(max(-1.0, min(-0.1, low)), 1.05)  # R² far below 0 is clipped: "worse than the mean" is enough
    ax.axhline(0, color="gray", linewidth=0.6)
    ax.set_title(f"{report.encoder} prior ({report.dim}-d): linear probes, dashed = chance", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return out
