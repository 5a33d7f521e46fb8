"""Training logs: log.csv, TensorBoard scalars and the curves PNG written at the end of a run."""
from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Any

from ptg.pipeline.core.fsio import no_symlink, open_nofollow

LOG_FIELDS = ("step", "epoch", "loss", "loss_f", "loss_r", "lr", "grad_norm", "skipped", "sec_per_step",
              "val_psnr", "val_ssim", "val_psnr_f", "val_ssim_f")


class Logs:
    """log.csv and TensorBoard on rank 0; a no-op elsewhere."""

    def __init__(self, out: Path, start_step: int, enabled: bool):
        self.enabled = enabled
        self.path = no_symlink(out / "log.csv", "the run's log")  # a shared run must not redirect the log
        self.tb = None
        if not enabled:
            return
        rows = []
        if self.path.is_file() and start_step > 0:
            # A killed run may have logged past its last checkpoint: keep only rows it will not redo.
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        with open_nofollow(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            w.writeheader()
            w.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(out / "tb"), purge_step=start_step if start_step > 0 else None)
        except ImportError:  # tensorboard is a core dependency, but a missing one must not stop training
            warnings.warn("tensorboard is not installed: no TensorBoard logs (log.csv is still written)", stacklevel=2)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open_nofollow(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_FIELDS).writerow({k: row.get(k, "") for k in LOG_FIELDS})
        if self.tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)) and math.isfinite(v):
                    tag = f"val/{k[4:]}" if k.startswith("val_") else f"train/{k}"
                    self.tb.add_scalar(tag, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def loss_trend(log_csv: Path) -> tuple[float, float] | None:
    """The first and the last logged training loss of a run (None with fewer than two)."""
    try:
        with open(log_csv, newline="") as f:
            losses = [float(r["loss"]) for r in csv.DictReader(f) if r.get("loss") not in (None, "")]
    except OSError:
        return None
    return (losses[0], losses[-1]) if len(losses) >= 2 else None


def plot_curves(log_csv: Path, out_png: Path) -> None:
    """Training loss and validation PSNR against steps, from log.csv (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("loss", "total"), ("loss_f", "Lg(Ihat)"), ("loss_r", "Lg(Ibar)")):
        xs, ys = series(key)
        if xs:
            axes[0].plot(xs, ys, label=label)
    axes[0].set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    axes[0].legend()
    for key, label in (("val_psnr", "output"), ("val_psnr_f", "F only")):
        xs, ys = series(key)
        if xs:
            axes[1].plot(xs, ys, marker="o", label=label)
    axes[1].set(xlabel="step", ylabel="PSNR (dB)", title="validation")
    if axes[1].lines:
        axes[1].legend()
    fig.tight_layout()
    from ptg.pipeline.core.fsio import atomic_write

    try:
        atomic_write(out_png, lambda f: fig.savefig(f, dpi=100, format="png"))
    finally:
        plt.close(fig)
