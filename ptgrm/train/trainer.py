"""`train(config)`: F and PTG-RM trained together from cached priors (paper Eq. 8).

Modes:
    baseline   F alone, ``Lg(Ihat, Ic)``.
    joint      F and R together, ``λf·Lg(Ihat, Ic) + λ1·Lg(Ibar, Ic)`` (a "-f" F takes the priors itself).
    refine     a trained F frozen (``model.baseline_weights`` or a pretrained F), only R trained.

The run reads top to bottom in `_Run.execute`: set-up (data, models, `TrainState`) -> resume ->
for each step `train_step` -> `maybe_validate` -> `maybe_log` -> `maybe_save` -> `finish`.

The process never imports a foundation-model library: priors are read from the stores (float
vectors) and nothing else of the encoder is needed. Under ``torchrun`` (WORLD_SIZE > 1) the same
code runs DistributedDataParallel: each process loads ``batch_size / world`` samples of every
global batch, gradients and logged metrics are all-reduced, rank 0 alone writes.

Exact resume: sample randomness comes from (seed, epoch, index), the epoch order from
DistributedSampler's seeded permutation, and a checkpoint (`TrainState`) holds everything else; a
resumed run skips the batches of the interrupted epoch that were already used. SIGINT/SIGTERM
finish the current step, save ``last.pt`` and raise `Interrupted` (exit 130/143).
"""
from __future__ import annotations

import math
from contextlib import nullcontext
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from ptg.pipeline.core import fsio
from ptg.pipeline.core.errors import Interrupted, PtgError

from ..restorer import Restorer
from . import checkpoint as ckpt_mod
from .config import TrainConfig, save_yaml, to_dict
from .data import (InputGuard, TrainDataset, ValDataset, augment_views, check_missing, fit_transform, load_tables,
                   open_images)
from .logs import Logs, loss_trend, plot_curves
from .losses import build_loss
from .memory import guard_fp16, has_batch_norm, micro_slices, set_checkpointing, speed_switches
from .memplan import MemoryPlanError, Probe, plan_memory, record
from .pixels import to_float
from .ring import BatchRing, ring_batches, ring_slots
from .run_utils import (Dist, StopSignals, all_sum, check_resume_config, device_of, init_dist, is_legacy_run,
                        progress_caller, update_best, validate, worker_init)
from .setup import build_models, make_ema, param_groups, read_samples
from .state import TrainState
from .val_images import ValImages


class NonFiniteLossError(PtgError):
    """Training stopped after too many consecutive non-finite losses."""


def train(config: TrainConfig, on_progress: Callable[..., None] | None = None, force: bool = False) -> dict[str, Any]:
    """Train as ``config`` says; return the content of ``RUN/final.json``.

    Args:
        config: a resolved `TrainConfig` (see `ptg.ptgrm.train.config.resolve`).
        on_progress: called as ``on_progress(1, loss=..., lr=...)`` after every step (or
            ``on_progress(1)`` when it takes no keyword fields); a resumed run first reports the
            steps already done with one ``on_progress(step)``.
        force: write into an existing ``--out`` folder that is not a ptg run.

    Raises:
        PtgError: bad input (manifest, stores, dims, config), a run folder in use by another
            trainer, too many non-finite losses.
        Interrupted: SIGINT/SIGTERM; ``last.pt`` holds the step reached.
    """
    if not config.out:
        raise PtgError("no output folder: pass --out RUN")
    d = init_dist(config)
    out = Path(config.out)
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else None  # what was there: kept on a refusal
    if d.main:
        fsio.claim_out_dir(out, "run", force, legacy=is_legacy_run)
    lock = fsio.exclusive_lock(out / "train.lock", f"the run folder {out}") if d.main else nullcontext()
    try:
        with lock, StopSignals() as stop:
            return _Run(config, d, progress_caller(on_progress), stop).execute()
    except MemoryPlanError:
        if d.main and not before:  # a run refused before its first step leaves nothing behind
            _unclaim(out, remove_folder=before is None)
        raise


def _unclaim(out: Path, remove_folder: bool) -> None:
    """Remove what `train` wrote into a new or empty ``out`` before a plan refused it (its marker, its lock)."""
    for name in (fsio.ARTIFACT_FILE, "train.lock"):
        (out / name).unlink(missing_ok=True)
    if remove_folder and not any(out.iterdir()):
        out.rmdir()


class _Run:
    """One training run, one method per phase."""

    def __init__(self, cfg: TrainConfig, d: Dist, progress: Callable[..., None], stop: StopSignals):
        self.cfg, self.d, self.progress, self.stop = cfg, d, progress, stop
        self.out = Path(cfg.out)
        self.last_path = self.out / "checkpoints" / "last.pt"
        self.t_start = time.perf_counter()

    def execute(self) -> dict[str, Any]:
        self.setup_hardware()
        resume = self.find_resume()
        self.setup_data()
        self.setup_state()
        self.plan_memory(resumed=resume is not None)
        speed_switches([self.state.f, self.state.r], False, self.cfg.run.compile)  # after the plan: it measures uncompiled
        if resume is not None:
            self.state.load_state_dict(resume)
        self.start_outputs()
        try:
            while self.state.step < self.cfg.steps:
                for batch in self.epoch_batches():
                    self.train_step(batch)
                    self.maybe_validate()
                    self.maybe_log()
                    self.maybe_save()
                    self.maybe_stop()
                    if self.state.step >= self.cfg.steps:
                        break
            return self.finish()
        finally:
            self.logs.close()

    # -- set-up

    def setup_hardware(self) -> None:
        cfg, d = self.cfg, self.d
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.device = device_of(cfg, d)
        if self.device.type == "cpu":
            # Subnormal floats take the CPU's slow path: R at lr 3e-4 ran 2.5x slower per step once its
            # activations and gradients reached them (0.146 vs 0.061 s, the same run with this on). Flushing
            # them to zero changes values below 1.2e-38 only.
            torch.set_flush_denormal(True)
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=self.device.type == "cuda")
        self.amp_dtype = None
        if cfg.run.amp != "none":
            if self.device.type == "cuda":
                self.amp_dtype = torch.bfloat16 if cfg.run.amp == "bf16" else torch.float16
            elif d.main:
                warnings.warn(f"run.amp={cfg.run.amp} needs a CUDA device; training in float32 on {self.device}", stacklevel=3)

    def find_resume(self) -> dict[str, Any] | None:
        if self.last_path.is_file():
            if not self.cfg.resume:
                raise PtgError(f"{self.out} already holds a run (checkpoints/last.pt); pass --resume to continue it "
                               "or choose another --out")
            ck = ckpt_mod.load_checkpoint(self.last_path, for_resume=True)
            check_resume_config(self.cfg, self.out)
            return ck
        if self.cfg.resume and self.d.main:
            warnings.warn(f"--resume: {self.last_path} does not exist yet; starting from step 0", stacklevel=3)
        return None

    def setup_data(self) -> None:
        """Samples, priors stores (read only when a network takes priors), datasets, transform."""
        cfg, d = self.cfg, self.d
        train_samples, val_samples, self.val_split = read_samples(cfg)
        from ptg.pipeline.storage.store import open_priors
        from ptg.ptgrm.models import uses_priors

        # asked once, of the models' configs: does F (a "-f" network) or R take priors?
        self.needs_priors = (uses_priors(cfg.model.baseline, **cfg.model.baseline_args)
                             or (cfg.mode != "baseline" and uses_priors(cfg.model.refiner, **cfg.model.refiner_args)))
        if self.needs_priors and not cfg.data.priors:
            raise PtgError(f"mode {cfg.mode} needs priors: pass --priors STORE (made by `ptg extract-priors`), "
                           "or train F alone with --mode baseline")
        if cfg.data.priors and not self.needs_priors and d.main:
            warnings.warn(f"{cfg.model.refiner if cfg.mode != 'baseline' else 'mode baseline'} takes no priors: the --priors "
                          "stores are not read (only their views set data.augment=store)", stacklevel=3)
        stores = [open_priors(p) for p in cfg.data.priors] if self.needs_priors else []
        first_views = (stores[0] if stores else open_priors(cfg.data.priors[0])).views if cfg.data.priors else None
        if cfg.data.augment == "store" and first_views is None and d.main:
            warnings.warn("data.augment=store but no priors store is given: training crops use the identity view only. "
                          "To give this run the same views as runs with priors, pass the same --priors (its views are "
                          "used, its priors are not read) or set data.augment=flips|d4", stacklevel=3)
        self.dims = [int(s.dim) for s in stores]
        # the keys (of priors and cached F outputs), and a check on every read
        guard = InputGuard(train_samples + val_samples) if stores or cfg.data.f_outputs else None
        keys = guard.keys if guard else []
        train_keys, val_keys = keys[: len(train_samples)], keys[len(train_samples):]
        if stores:
            keep = check_missing(train_samples, train_keys, stores, cfg.data.allow_missing_priors)
            train_samples, train_keys = [train_samples[i] for i in keep], [train_keys[i] for i in keep]
        if not train_samples:
            raise PtgError("no training samples left after dropping those without priors")
        if stores and val_samples:
            vkeep = check_missing(val_samples, val_keys, stores, cfg.data.allow_missing_priors)
            val_samples, val_keys = [val_samples[i] for i in vkeep], [val_keys[i] for i in vkeep]
        self.augment = augment_views(cfg.data.augment, first_views)
        with warnings.catch_warnings():
            if not d.main:
                warnings.simplefilter("ignore")
            in_memory = cfg.data.priors_in_memory
            tables = load_tables(stores, train_keys, self.augment, in_memory) if stores else []
            val_tables = load_tables(stores, val_keys, ("identity",), in_memory) if stores and val_samples else []
        self.priors_meta = [t.describe() for t in tables]
        self.transform = fit_transform(tables, cfg.priors, cfg.seed)
        self.loss_fn = build_loss(cfg.loss).to(self.device)
        if d.world > 1 and cfg.data.batch_size % d.world:
            raise PtgError(f"data.batch_size={cfg.data.batch_size} must divide by the {d.world} torchrun processes")
        self.per_rank = cfg.data.batch_size // d.world
        repeat = max(1, math.ceil(cfg.data.batch_size / len(train_samples)))
        images = open_images(cfg.data, train_samples + val_samples, guard, main=d.main)  # data.images: store or files
        outs = self.open_f_outputs(train_samples + val_samples, guard)
        self.train_ds = TrainDataset(train_samples, tables, cfg.data, cfg.priors, self.augment, cfg.seed, repeat,
                                     need_target=self.loss_fn.needs_target, transform=self.transform, guard=guard,
                                     images=images, raw=True, f_outputs=outs)
        self.val_ds = (ValDataset(val_samples, val_tables, self.transform.order(len(val_samples)), cfg.data.val_crop, guard,
                                  images, f_outputs=outs) if val_samples else None)
        self.steps_per_epoch = len(self.train_ds) // cfg.data.batch_size
        # the batch buffers, allocated once, before any worker starts (`ring_slots`: why that many)
        self.ring = BatchRing(self.train_ds, self.per_rank, ring_slots(cfg.data.num_workers, cfg.data.prefetch))

    def open_f_outputs(self, samples: list[Any], guard: InputGuard | None) -> Any:
        """``data.f_outputs``: F's cached outputs of every row (F itself is never built); None without."""
        self.f_record = None
        if not self.cfg.data.f_outputs:
            return None
        from ..f_outputs import open_cached_outputs

        keys = [guard._key[s.input] for s in samples] if guard is not None else None
        outs = open_cached_outputs(self.cfg.data.f_outputs, samples, keys)
        lacking = outs.fallback_views(self.augment)
        if lacking and self.d.main:
            warnings.warn(f"--f-outputs {outs.source} holds F's outputs of the views {', '.join(outs.views)} only: crops "
                          f"drawn in {', '.join(lacking)} get the view of F's identity output (extract with --views to "
                          "match data.augment)", stacklevel=3)
        if self.d.main and self.cfg.model.baseline not in ("f-outputs", outs.f, "unet"):  # unet: the default
            warnings.warn(f"--f-outputs: F is not built, so --baseline {self.cfg.model.baseline} is not used (the outputs "
                          f"were made by {outs.f or 'another tool'})", stacklevel=3)
        self.f_record = outs.record()
        return outs

    def setup_state(self) -> None:
        """Models, optimiser, schedule, scaler, EMA: the `TrainState`."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        f, r, f_kind = build_models(cfg, self.dims, self.f_record)
        if cfg.run.amp == "fp16":  # before the EMA copies, which validation runs under the same autocast
            guard_fp16(f), guard_fp16(r)
        train_f = cfg.mode != "refine"
        nets = Restorer(f, r, self.transform, f_kind, train_f).to(self.device)
        opt = torch.optim.Adam(param_groups(cfg, f, r, train_f), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                               weight_decay=cfg.optim.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            opt, T_0=cfg.optim.restart_period or cfg.steps, T_mult=cfg.optim.restart_mult, eta_min=cfg.optim.eta_min)
        scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.trainable = [p for p in nets.parameters() if p.requires_grad]
        if not self.trainable:
            raise PtgError(f"mode {cfg.mode} leaves nothing to train")
        select = self.val_split != "test"  # best.pt is never chosen on the test split
        best = {"metric": cfg.run.best_metric, "value": None, "step": None, "split": self.val_split, "enabled": select}
        self.state = TrainState(to_dict(cfg), nets, opt, sched, scaler, make_ema(f, cfg.run.ema) if train_f else None,
                                make_ema(r, cfg.run.ema), self.priors_meta, best=best)
        set_checkpointing(f, r, cfg.run.checkpointing)
        speed_switches([f, r], cfg.run.channels_last, False)
        self.ddp: nn.Module = nets
        if self.d.active:
            self.ddp = nn.parallel.DistributedDataParallel(
                nets, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def plan_memory(self, resumed: bool) -> None:
        """``run.max_memory``: measure, set ``run.micro_batch`` and ``run.checkpointing``, record the plan in the
        config (config.yaml, checkpoints). A resumed run keeps the plan it started with."""
        cfg, s, d = self.cfg, self.state, self.d
        if cfg.run.max_memory and not (resumed and cfg.run.memory_plan):
            from ..tiling import memory_budget

            budget = memory_budget(cfg.run.max_memory, self.device)
            ema = sum(t.numel() * t.element_size() for e in (s.ema_f, s.ema_r) if e is not None
                      for t in (*e.parameters(), *e.buffers()))
            groups = lambda: param_groups(cfg, s.f, s.r, s.nets.train_f)  # noqa: E731
            probe = Probe(s.f, s.r, lambda: torch.optim.Adam(groups(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                                             weight_decay=cfg.optim.weight_decay),
                          self.synthetic_loss, self.device, ema)
            modes = ["none", "f", "both"] if s.nets.train_f and s.r is not None else ["none", "f" if s.nets.train_f else "r"]
            measured: list[Any] = []
            plan = plan_memory(probe, budget, self.per_rank, cfg.data.crop, modes, max(1, s.nets.multiple), measured)
            chosen = record(plan, cfg.run.max_memory, self.device, measured)
            if d.active:  # ranks measure alike but may time differently: rank 0's plan for all
                box = [chosen]
                dist.broadcast_object_list(box, src=0)
                chosen = box[0]
            cfg.run.micro_batch, cfg.run.checkpointing, cfg.run.memory_plan = (chosen["micro_batch"], chosen["checkpointing"],
                                                                               chosen)
            s.config = to_dict(cfg)
            set_checkpointing(s.f, s.r, cfg.run.checkpointing)
            if d.main:
                print(f"memory plan: {chosen['line']}", file=sys.stderr, flush=True)
        if 0 < cfg.run.micro_batch < self.per_rank and has_batch_norm(s.f if s.nets.train_f else None) and d.main:
            warnings.warn(f"F {cfg.model.baseline} has BatchNorm: its statistics are per micro-batch of {cfg.run.micro_batch}, "
                          "so the accumulated step is close to, not equal to, the whole batch's", stacklevel=3)

    def synthetic_loss(self, n: int, crop: int) -> torch.Tensor:
        """The loss of ``n`` random crops of side ``crop`` with priors of the run's dims (what `plan_memory` measures)."""
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, 3, crop, crop, generator=g).to(self.device)
        y = torch.rand(n, 3, crop, crop, generator=g).to(self.device) if self.loss_fn.needs_target else None
        priors = [torch.randn(n, dim, generator=g).to(self.device) for dim in self.dims]
        xin = torch.cat([x, torch.rand(n, 3, crop, crop, generator=g).to(self.device)], 1) if self.cfg.data.f_outputs else x
        return self.forward_loss(self.state.nets, xin, y, priors, x)[0]

    def start_outputs(self) -> None:
        s, d = self.state, self.d
        if d.main:
            if s.step == 0:
                shutil.rmtree(self.out / "tb", ignore_errors=True)  # a failed earlier start's empty event files
            (self.out / "checkpoints").mkdir(parents=True, exist_ok=True)
            save_yaml(self.cfg, self.out / "config.yaml")
            if self.val_ds is not None and not s.best["enabled"]:
                warnings.warn(f"validating on the {self.val_split!r} split (the manifest has no 'val' rows): its numbers are "
                              "reported, but best.pt is not selected on them; only last.pt is kept", stacklevel=3)
        self.logs = Logs(self.out, s.step, d.main, wandb=self.cfg.run.wandb, config=to_dict(self.cfg))
        self.val_images = ValImages(self.val_ds, self.cfg.run.val_images, self.cfg.run.val_image_side, self.out, self.logs,
                                    d.main)
        if s.step:
            self.progress(s.step)  # a resumed run's bar starts where the interrupted one stopped
        self.ddp.train()
        if not s.nets.train_f:
            s.f.eval()  # a frozen F keeps its inference behaviour (norm statistics, dropout off)
        self.window = _new_window()
        self.final_row: dict[str, Any] = {}

    # -- the loop

    def epoch_batches(self):
        """The remaining batches of the current epoch (a resumed epoch skips the ones used)."""
        cfg, d, step = self.cfg, self.d, self.state.step
        self.epoch, offset = divmod(step, self.steps_per_epoch)
        sampler = DistributedSampler(self.train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed,
                                     drop_last=True)
        sampler.set_epoch(self.epoch)
        indices = list(sampler)[offset * self.per_rank:]
        # written by the workers into the ring's shared slots (no batch crosses a queue); whole batches only
        return ring_batches(self.ring, [(self.epoch, i) for i in indices], self.per_rank, cfg.data.num_workers,
                            cfg.data.prefetch, worker_init, pin=self.device.type == "cuda")

    def train_step(self, batch: dict[str, Any]) -> None:
        """One optimiser step over the batch's micro-batches (or a skipped one for a non-finite loss), EMA, schedule.

        With ``run.micro_batch`` the batch is split and the gradients add up: each micro-batch's mean
        loss is weighted by its share of the batch, so the step is the whole batch's (a ragged last
        micro-batch included). Under torchrun only the last backward all-reduces (``no_sync``).
        """
        s, dev, w = self.state, self.device, self.window
        views = batch.get("view")  # uint8 crops from the image store: turned and converted on the device
        x = to_float(batch["x"].to(dev, non_blocking=True), views)
        y = to_float(batch["y"].to(dev, non_blocking=True), views) if batch["y"].numel() else None
        priors = [p.to(dev, non_blocking=True) for p in batch["priors"]]
        # cached F outputs: Id ⊕ Ihat into the network (its F returns the Ihat channels)
        xin = torch.cat([x, batch["ihat"].to(dev, non_blocking=True)], 1) if "ihat" in batch else x
        s.opt.zero_grad(set_to_none=True)
        parts = micro_slices(x.shape[0], self.cfg.run.micro_batch)
        sums = [0.0, 0.0, 0.0]  # loss, loss_f, loss_r of the whole batch
        finite = True
        for i, part in enumerate(parts):
            sync = self.ddp.no_sync() if self.d.active and i < len(parts) - 1 else nullcontext()
            with sync:
                loss, loss_f, loss_r = self.forward_loss(self.ddp, xin[part], None if y is None else y[part],
                                                         [p[part] for p in priors], x[part])
                finite = self.agreed_finite(loss)
                if not finite:  # every rank stops here together: the step is skipped
                    break
                share = (part.stop - part.start) / x.shape[0]
                self.backward(loss if len(parts) == 1 else loss * share)
            for k, v in enumerate((loss, loss_f, loss_r)):
                sums[k] += float(v.detach()) * share if v is not None else 0.0
        if not finite:
            s.opt.zero_grad(set_to_none=True)
            self.skip_nonfinite()
        else:
            s.nonfinite = 0
            gnorm = self.optimizer_step()
            for k, name in enumerate(("loss", "loss_f", "loss_r")):
                w[name] += sums[k]
            w["gnorm"] += gnorm if math.isfinite(gnorm) else 0.0
            w["n"] += 1
        s.sched.step()  # skipped steps still advance the schedule, so step and LR stay aligned
        s.step += 1
        self.progress(1, loss=sums[0] if finite else float(loss.detach()), lr=s.opt.param_groups[0]["lr"])

    def forward_loss(self, net: nn.Module, xin: torch.Tensor, y: torch.Tensor | None, priors: list[torch.Tensor],
                     x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The loss of Eq. 8 on one (micro-)batch: (loss, Lg of F or None, Lg of R or None), each a mean over its samples."""
        cfg, s = self.cfg, self.state
        if cfg.run.channels_last:
            xin = xin.contiguous(memory_format=torch.channels_last)
        with torch.autocast(xin.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            ihat, ibar = net(xin, priors)
            loss_f = loss_r = None
            if ibar is None:  # F alone (baseline mode, or a "-f" F with R inside)
                loss = loss_f = self.loss_fn(ihat.float(), y, x)
            elif not s.nets.train_f:  # refine: only R learns
                loss_r = self.loss_fn(ibar.float(), y, x)
                loss = cfg.loss.lambda_r * loss_r
            else:  # Eq. 8
                loss_f, loss_r = self.loss_fn(ihat.float(), y, x), self.loss_fn(ibar.float(), y, x)
                loss = cfg.loss.lambda_f * loss_f + cfg.loss.lambda_r * loss_r
        return loss, loss_f, loss_r

    def agreed_finite(self, loss: torch.Tensor) -> bool:
        finite = torch.isfinite(loss.detach()).to(torch.float32)
        if self.d.active:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)  # every rank skips together
        return finite.item() >= 1

    def backward(self, loss: torch.Tensor) -> None:
        scaler = self.state.scaler
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def optimizer_step(self) -> float:
        """Unscale, clip, step (counted once per batch, whatever its micro-batches), EMA; the gradient norm."""
        s, scaler = self.state, self.state.scaler
        if scaler is not None:
            scaler.unscale_(s.opt)
        gnorm = float("nan")
        if self.cfg.optim.grad_clip > 0:
            gnorm = float(torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.optim.grad_clip))
        if scaler is not None:
            scaler.step(s.opt)
            scaler.update()
        else:
            s.opt.step()
        if s.ema_f is not None:
            s.ema_f.update_parameters(s.f)
        if s.ema_r is not None:
            s.ema_r.update_parameters(s.r)
        return gnorm

    def skip_nonfinite(self) -> None:
        s = self.state
        s.nonfinite += 1
        s.skipped += 1
        self.window["skipped"] += 1
        if s.nonfinite >= self.cfg.run.max_nonfinite:
            path = self.out / "checkpoints" / "nonfinite.pt"
            self.save(path)
            raise NonFiniteLossError(
                f"{s.nonfinite} consecutive non-finite losses at step {s.step + 1} (run.max_nonfinite="
                f"{self.cfg.run.max_nonfinite}); lower optim.lr, set optim.grad_clip, or check the data. "
                f"The state before the stop is in {path}")

    def maybe_validate(self) -> None:
        """Every ``run.val_every`` steps (the final validation is in `finish`); best.pt if selection is on."""
        cfg, s = self.cfg, self.state
        self.val_row = {}
        if self.val_ds is None or not cfg.run.val_every or s.step % cfg.run.val_every or s.step >= cfg.steps:
            return
        t0 = time.perf_counter()
        s.last_val = validate(s.eval_nets(), self.val_ds, self.d, self.device, self.amp_dtype)
        self.val_images.write(s.eval_nets(), s.step, self.device, self.amp_dtype)
        self.window["t0"] += time.perf_counter() - t0  # sec_per_step counts training only
        self.val_row = {f"val_{k}": v for k, v in s.last_val.items()}
        if update_best(s.best, s.last_val, s.step):
            self.save(self.out / "checkpoints" / "best.pt")

    def maybe_log(self) -> None:
        """A log.csv/TensorBoard row every ``run.log_every`` steps and with each validation."""
        s = self.state
        row = self.train_row() if s.step % self.cfg.run.log_every == 0 or s.step == self.cfg.steps else {}
        if self.val_row:
            row = {"step": s.step, "epoch": self.epoch, **row, **self.val_row}
        if row and s.step == self.cfg.steps and self.val_ds is not None:
            self.final_row = row  # written with the final validation, as one row
        elif row:
            self.logs.write(row)

    def train_row(self) -> dict[str, Any]:
        """The training row of the steps since the last one (all-reduced over ranks)."""
        w, s = self.window, self.state
        v = all_sum([w["loss"], w["loss_f"], w["loss_r"], w["n"], w["skipped"], w["gnorm"]], self.d, self.device)
        n = max(v[3], 1.0)
        row = {"step": s.step, "epoch": self.epoch, "loss": v[0] / n, "lr": s.opt.param_groups[0]["lr"],
               "skipped": int(v[4]), "sec_per_step": (time.perf_counter() - w["t0"]) / max(1, w["n"] + w["skipped"])}
        if s.r is not None:
            row.update({"loss_f": v[1] / n, "loss_r": v[2] / n})
        if self.cfg.optim.grad_clip > 0:
            row["grad_norm"] = v[5] / n
        self.window = _new_window()
        return row

    def maybe_save(self) -> None:
        run, step = self.cfg.run, self.state.step
        if run.save_every and step % run.save_every == 0:
            self.save(self.last_path)  # first: once a step file exists, last.pt is at least as recent
            self.save(self.out / "checkpoints" / f"step_{step:06d}.pt")
        elif step % run.checkpoint_every == 0:
            self.save(self.last_path)

    def maybe_stop(self) -> None:
        """After a SIGINT/SIGTERM: the step is done; save it and stop with `Interrupted`."""
        signum = self.stop.agreed(self.d, self.device)
        if not signum:
            return
        self.save(self.last_path)
        name = "SIGINT" if signum == 2 else "SIGTERM" if signum == 15 else f"signal {signum}"
        raise Interrupted(f"interrupted by {name} after step {self.state.step} of {self.cfg.steps}; saved {self.last_path}. "
                          f"Continue with: ptg train --out {self.out} --resume", signum)

    def save(self, path: Path) -> None:
        if self.d.main:
            self.state.save(path)

    def finish(self) -> dict[str, Any]:
        s, cfg = self.state, self.cfg
        if self.val_ds is not None:
            s.last_val = validate(s.eval_nets(), self.val_ds, self.d, self.device, self.amp_dtype)
            self.val_images.write(s.eval_nets(), s.step, self.device, self.amp_dtype)
            self.logs.write({"step": s.step, **self.final_row, **{f"val_{k}": v for k, v in s.last_val.items()}})
            if update_best(s.best, s.last_val, s.step):
                self.save(self.out / "checkpoints" / "best.pt")
        self.save(self.last_path)
        final = {
            "step": s.step, "mode": cfg.mode, "baseline": cfg.model.baseline,
            "refiner": cfg.model.refiner if s.r is not None else None,
            "digest": ckpt_mod.parameter_digest([s.f if s.nets.train_f else None, s.r]),
            "val": s.last_val, "val_split": self.val_split if self.val_ds is not None else None,
            "best_selection": bool(s.best["enabled"] and self.val_ds is not None), "best": s.best,
            "skipped_steps": s.skipped, "world_size": self.d.world, "prior_dims": self.dims,
            "priors": s.nets.transform.describe() if self.dims else None, "augment": list(self.augment),
            "seconds": round(time.perf_counter() - self.t_start, 3),
        }
        if self.d.main:
            fsio.atomic_write_json(self.out / "final.json", final)
            self.warn_if_not_learning()
            try:
                plot_curves(self.out / "log.csv", self.out / "curves.png")
            except Exception as exc:  # a plotting problem must not lose a finished run
                warnings.warn(f"could not draw {self.out / 'curves.png'}: {exc}", stacklevel=2)
        return final

    def warn_if_not_learning(self) -> None:
        """A run whose training loss barely moved has not learned: say so, with what usually helps."""
        trend = loss_trend(self.out / "log.csv")
        if trend is not None and trend[1] > 0.98 * trend[0]:
            o = self.cfg.optim
            warnings.warn(f"the training loss barely moved ({trend[0]:.4g} -> {trend[1]:.4g} over {self.state.step} steps, "
                          f"learning rate {o.lr:g} decaying to {o.eta_min:g}): this run has not learned yet. Train longer "
                          "(--steps) or raise the learning rate (--lr)", stacklevel=3)


def _new_window() -> dict[str, float]:
    return {"loss": 0.0, "loss_f": 0.0, "loss_r": 0.0, "n": 0, "skipped": 0, "gnorm": 0.0, "t0": time.perf_counter()}
