"""Training logs: log.csv, TensorBoard scalars and images, optional wandb, and the curves PNG written
at the end of a run.

wandb is optional (the ``wandb`` extra): it is imported only when a run names a project
(``run.wandb=PROJECT`` or the ``PTG_WANDB_PROJECT`` environment variable), and then it gets the
same scalars and images as TensorBoard plus the run's config. ``WANDB_MODE=offline`` writes
``RUN/wandb/offline-run-*`` with no network (``wandb sync`` uploads it later).
"""
from __future__ import annotations

import csv
import math
import os
import re
import secrets
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.fsio import atomic_write_text, no_symlink, open_nofollow

WANDB_ENV = "PTG_WANDB_PROJECT"  # the wandb project when run.wandb is empty

LOG_FIELDS = ("step", "epoch", "loss", "loss_f", "loss_r", "lr", "grad_norm", "skipped", "sec_per_step",
              "val_psnr", "val_ssim", "val_psnr_f", "val_ssim_f")


class Logs:
    """log.csv and TensorBoard on rank 0; a no-op elsewhere."""

    def __init__(self, out: Path, start_step: int, enabled: bool, wandb: str = "", config: dict[str, Any] | None = None):
        self.enabled = enabled
        self.path = no_symlink(out / "log.csv", "the run's log")  # a shared run must not redirect the log
        self.tb = None
        self.wandb: Any = None
        if not enabled:
            return
        project = wandb or os.environ.get(WANDB_ENV, "")
        if project:  # first: a wandb that cannot start stops the run before anything is written
            self.wandb = start_wandb(project, out, config or {})
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
        if self.wandb is not None:
            self.wandb.log({(f"val/{k[4:]}" if k.startswith("val_") else f"train/{k}"): v for k, v in row.items()
                            if k not in ("step", "epoch") and isinstance(v, (int, float)) and math.isfinite(v)},
                           step=row["step"])

    def images(self, step: int, named: dict[str, np.ndarray]) -> None:
        """H×W×3 uint8 images by tag, at ``step``: TensorBoard's images tab and wandb."""
        if not self.enabled:
            return
        if self.tb is not None:
            for tag, img in named.items():
                self.tb.add_image(tag, img, step, dataformats="HWC")
            self.tb.flush()  # a viewer sees each validation's images as soon as they exist
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Image(img, caption=tag.rsplit("/", 1)[-1]) for tag, img in named.items()}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def start_wandb(project: str, out: Path, config: dict[str, Any]) -> Any:
    """A wandb run in ``out/wandb`` logging to ``project``; a resumed ptg run continues its wandb run.

    The wandb run id is kept in ``out/wandb_id.txt``, so ``--resume`` logs to the same wandb run
    (steps the killed run logged past its last checkpoint are dropped by wandb with a warning).
    """
    try:
        import wandb
    except ImportError:
        raise PtgError(f"run.wandb={project!r} needs the wandb package: pip install 'ptg[wandb]' (or wandb), "
                       f"or leave run.wandb and {WANDB_ENV} unset") from None
    id_file = no_symlink(out / "wandb_id.txt", "the run's wandb id file")
    run_id = id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else ""
    if not re.fullmatch(r"[a-z0-9]{8,64}", run_id):  # a damaged or foreign id: start a new wandb run
        run_id = secrets.token_hex(8)
    (out / "wandb").mkdir(exist_ok=True)
    try:
        run = wandb.init(project=project, dir=str(out), id=run_id, resume="allow", config=config, name=out.name,
                         job_type="train")
    except Exception as exc:  # wandb raises its own types (no login, no network, bad project)
        raise PtgError(f"wandb could not start a run in project {project!r}: {exc}. Log in (`wandb login`), set "
                       f"WANDB_MODE=offline to log without a network, or leave run.wandb and {WANDB_ENV} unset") from exc
    atomic_write_text(id_file, run_id + "\n")
    return run


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
