"""The trainer's plumbing: torch.distributed, devices, signals, validation and best-checkpoint rules."""
from __future__ import annotations

import atexit
import inspect
import os
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

from ptg.pipeline.core.errors import PtgError

from ..restorer import Restorer
from ..runtime import StopSignals as _StopSignals
from ..runtime import resolve_device  # noqa: F401 (re-exported: the trainer's device rule is everyone's)
from .config import TrainConfig, from_dict, load_yaml, to_dict
from .data import ValDataset


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_dist(cfg: TrainConfig) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = cfg.run.dist_backend
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() and cfg.run.device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
        # Torn down before the interpreter's own teardown: a gloo group still alive then was seen to
        # abort a rank at exit ("terminate called without an active exception", exit -6) after a
        # finished run.
        atexit.register(_destroy_group)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_of(cfg: TrainConfig, d: Dist) -> torch.device:
    return resolve_device(cfg.run.device, d.local_rank)


def all_sum(values: Sequence[float], d: Dist, device: torch.device) -> list[float]:
    if not d.active:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def progress_caller(on_progress: Callable[..., None] | None) -> Callable[..., None]:
    """Call ``on_progress(n, **fields)``, or ``on_progress(n)`` if it takes no keyword fields."""
    if on_progress is None:
        return lambda n, **fields: None
    try:
        params = inspect.signature(on_progress).parameters.values()
        takes_fields = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    except (TypeError, ValueError):
        takes_fields = False
    return on_progress if takes_fields else (lambda n, **fields: on_progress(n))


class StopSignals(_StopSignals):
    """`ptg.ptgrm.runtime.StopSignals`, agreed over the ranks of a distributed run."""

    def agreed(self, d: Dist, device: torch.device) -> int:
        """The signal received (by any rank: all stop at the same step), or 0."""
        if not d.active:
            return self.signum
        t = torch.tensor([self.signum], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())


def worker_init(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM (sent to the whole process group by Ctrl-C or a
    job queue) to the trainer, which stops after the step it is in and then ends them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def is_legacy_run(folder: Path) -> bool:
    """A run folder written before folders carried ptg's marker."""
    return (folder / "config.yaml").is_file() and (folder / "checkpoints").is_dir()


def check_resume_config(cfg: TrainConfig, out: Path) -> None:
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    saved = to_dict(from_dict(load_yaml(saved_path)))
    now = to_dict(cfg)
    if saved["model"] != now["model"]:
        raise PtgError(f"--resume: the model settings differ from the run's {saved_path} "
                       f"(saved {saved['model']}, now {now['model']}); resume with the same model or use a new --out")
    diff = [k for k in now if k not in ("resume", "steps", "run") and saved.get(k) != now[k]]
    if diff:
        warnings.warn(f"--resume: settings {', '.join(diff)} differ from the interrupted run's config.yaml; "
                      "the resumed run will not match an uninterrupted one", stacklevel=3)


@torch.no_grad()
def validate(nets: Restorer, ds: ValDataset, d: Dist, device: torch.device, amp_dtype: torch.dtype | None
             ) -> dict[str, float]:
    """Mean PSNR/SSIM (the same `ptg.pipeline.core.metrics` as `ptg eval`) of the final output and of F.

    The forward is the restore loop of `ptg eval` (`ptg.ptgrm.infer.restore_each`: `Restorer.restore`
    on the raw priors, padded to the models' multiple): the same numbers as `ptg eval` before its
    uint8 rounding.
    """
    from ptg.pipeline.core.metrics import psnr, ssim

    from ..infer import restore_each

    was = nets.training
    nets.eval()
    sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # psnr, ssim, psnr_f, ssim_f, count
    targets: list[torch.Tensor] = []  # the item being restored: one image in memory at a time

    def inputs():
        for i in range(d.rank, len(ds), d.world):
            item = ds[i]
            targets.append(item["y"])
            yield item["x"].unsqueeze(0), [p.unsqueeze(0) for p in item["priors"]] or None, f"validation image {i}"

    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for ihat, out, _ in restore_each(nets, inputs(), device=device):
            y = targets.pop().permute(1, 2, 0).numpy()
            final = (out if out is not None else ihat)[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            fimg = ihat[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            sums = [sums[0] + psnr(final, y), sums[1] + ssim(final, y), sums[2] + psnr(fimg, y),
                    sums[3] + ssim(fimg, y), sums[4] + 1]
    sums = all_sum(sums, d, device)
    nets.train(was)
    if sums[4] == 0:
        return {}
    n = sums[4]
    out = {"psnr": sums[0] / n, "ssim": sums[1] / n}
    if nets.r is not None:
        out.update({"psnr_f": sums[2] / n, "ssim_f": sums[3] / n})
    return out


def update_best(best: dict[str, Any], metrics: dict[str, float], step: int) -> bool:
    """Record ``metrics`` in ``best`` if they beat it (higher is better for PSNR and SSIM).

    Never on a split where selection is off (``best["enabled"]`` False: validation on test).
    """
    value = metrics.get(best["metric"])
    if value is None or not best.get("enabled", True):
        return False
    if best["value"] is None or value > best["value"]:
        best.update(value=value, step=step)
        return True
    return False
