"""`ptg distill`: train a small student to predict a cached prior, so inference needs no foundation model.

The priors store already holds the teacher's answer for every training image and view; the
student (see `ptg.ptgrm.students`) learns to regress it from the degraded image. Nothing here
imports open_clip, transformers or diffusers (tested in a process where those imports fail).

Data. Train rows of the manifest, each with every view the store holds (identity, and flips /
d4 / tiles when extracted with them): the view is made with the extractor's own `apply_view`,
exactly as the teacher saw it (``--views tiles:4`` gives 17 training pairs per image). Test rows (identity view) are the
validation set; the last step's weights are kept (no checkpoint is picked on test).

Preprocessing (pinned, recorded in ``student.json``): the teacher's own resize/crop policy from
the store's metadata (so the student sees the same pixels; restoration priors must not be
resampled), with the student architecture's mean/std; ``--size`` overrides the side. A store
whose policy is not a `Preprocess` falls back to short side 256 -> centre crop 224.

Loss. ``n(.)`` is the training normalisation (``--normalize``): ``standardize`` (per-dimension
mean/std of the train rows, saved), ``l2`` (unit vectors) or ``none``. The network predicts
``n(g)``, its head starting at the ridge read-out of its initial features (``head_init``); the loss is ``1 - cos(raw_pred, g) + MSE(pred, n(g))``. The cosine is taken in the
store's raw space because that is what PTG-RM sees after its own L2 normalisation.

What `ptg.ptgrm.artifacts.load_student(DIST)(x)` returns: vectors in the store's raw space, rounded to the store's
dtype, as `EncoderPriors` does. ``standardize`` and ``none`` invert exactly; ``l2`` loses the
length, so its outputs are unit directions times the mean train-row norm (right for runs trained
with ``priors.normalize=l2``; the metadata says ``space``).

Output folder (``fsio.claim_out_dir(DIST, "student")``): ``student.safetensors``,
``student.json`` (written last: its presence means a finished run), ``agreement.json`` and,
while running, ``state.pt`` (model, optimiser, sampler; loaded with ``weights_only=True``) so a
killed or interrupted run continues when the same command is run again.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ptg.pipeline.core import fsio
from ptg.pipeline.core.weights import read_weights
from ptg.pipeline.encoders.preprocess import Preprocess, apply_preprocess
from ptg.pipeline.core.errors import Interrupted, PtgError
from ptg.pipeline.core.imageio import read_image
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.pipeline.priors.normalize import DEFAULT_NORMALIZE, NORMALIZE
from ptg.pipeline.storage.store import open_priors, sample_keys
from ptg.pipeline.datasets.views import apply_view

from .artifacts.student import Normalizer, write_student
from .distill_agreement import agreement, probe_report
from .runtime import StopSignals, resolve_device
from .students import create_student, get_student_info, set_linear_head

KIND = "student"
HEAD_INIT = ("ridge", "random")
RIDGE_ROWS = 2048  # at most this many (image, view) rows feed the ridge head initialisation
DEFAULT_PP = Preprocess(size=224, resize="short_side_center_crop", resize_short=256, interpolation="bicubic")
CACHE_LIMIT = 2 << 30  # preprocessed training tensors are kept in RAM up to this many bytes


@dataclass
class DistillConfig:
    """Everything a distillation depends on (saved in ``student.json``; a resume must match it)."""

    priors: str  # the teacher's priors store
    manifest: str  # rows: train split to learn from, test split to validate on
    out: str  # the output folder DIST
    root: str | None = None  # folder the manifest's paths are relative to; None = its folder
    student: str = "cnn"  # registry name (see `list_students`)
    student_args: dict[str, Any] = field(default_factory=dict)  # factory options of the student
    steps: int = 1000  # optimiser steps
    batch_size: int = 16  # images per step
    lr: float = 1e-3  # AdamW learning rate, cosine-decayed to 0
    weight_decay: float = 1e-4  # AdamW weight decay
    normalize: str = DEFAULT_NORMALIZE  # training-target normalisation, one of NORMALIZE (ptg.pipeline.priors.normalize)
    head_init: str = "ridge"  # ridge: head starts at the ridge read-out of the initial features; random: as built
    size: int | None = None  # side of the student's input; None = the teacher's pinned size
    val_every: int = 100  # validate on the test split (and save state.pt) every K steps
    seed: int = 0  # model init and batch order
    device: str = "auto"  # auto | cpu | cuda[:i]
    threads: int | None = None  # torch CPU threads; None = torch's default
    allow_outside: bool = False  # manifest paths may lead outside the root (the user's --allow-outside)

    def identity(self) -> dict[str, Any]:
        """The fields a resumed or repeated run must share (device/threads do not change results' meaning)."""
        d = asdict(self)
        for k in ("device", "threads", "out", "allow_outside"):
            d.pop(k)
        return d


def _pinned_preprocess(store_meta: dict[str, Any], student: str, size: int | None) -> Preprocess:
    info = get_student_info(student)
    try:
        teacher = Preprocess(**(store_meta.get("encoder") or {}).get("preprocessing") or {})
    except (TypeError, PtgError):
        teacher = DEFAULT_PP
    pp = replace(teacher, mean=info.mean, std=info.std, dtype="float32")
    if size is not None:
        short = None if pp.resize_short is None else round(pp.resize_short * size / pp.size)  # same framing
        pp = replace(pp, size=size, resize_short=short)
    return pp


# ---------------------------------------------------------------------------------------------
# Training


class _Images:
    """Preprocessed student inputs of (sample, view) pairs, decoded once and cached while they fit."""

    def __init__(self, paths: Sequence[Path], pp: Preprocess, n_views: int = 1):
        self.paths, self.pp = list(paths), pp
        self.cache: dict[tuple[int, str], Tensor] = {}
        self.keep = len(self.paths) * n_views * 3 * pp.size * pp.size * 4 <= CACHE_LIMIT

    def batch(self, items: Sequence[tuple[int, str]]) -> Tensor:
        out = []
        for i, view in items:
            t = self.cache.get((i, view))
            if t is None:
                t = apply_preprocess(apply_view(read_image(self.paths[i]), view), self.pp)  # [3, S, S]
                if self.keep:
                    self.cache[(i, view)] = t
            out.append(t)
        return torch.stack(out)


def _predict(net, images: _Images, n: int, norm: Normalizer, device, batch: int) -> np.ndarray:
    """Raw-space predictions for rows 0..n-1 (identity view)."""
    net.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, n, batch):
            x = images.batch([(j, "identity") for j in range(i, min(n, i + batch))]).to(device)
            outs.append(norm.inverse(net(x).float()).cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, len(norm.mean)), np.float32)


def _ridge_head(net, images: _Images, items: list, y: Tensor, device, batch: int) -> None:
    """Set the head to the ridge regression of the (normalised) targets on the initial features.

    A random head on a pre-trained trunk wastes the first steps undoing noise (and, through the
    gradients, the trunk); starting from the best linear read-out is linear probing, then fine-tuning.
    The ridge strength is the mean eigenvalue of the centred feature Gram matrix: strong, since rows are few.
    """
    net.eval()
    with torch.no_grad():
        feats = torch.cat([net.features(images.batch(items[i : i + batch]).to(device)).double().cpu()
                           for i in range(0, len(items), batch)])  # [N, F]
    fm, ym = feats.mean(0), y.double().mean(0)
    fc, yc = feats - fm, y.double() - ym
    gram = fc @ fc.T  # [N, N]: the dual form stays small for any feature width
    alpha = float(gram.trace()) / len(fc) + 1e-8
    w = fc.T @ torch.linalg.solve(gram + alpha * torch.eye(len(fc), dtype=gram.dtype), yc)  # [F, D]
    set_linear_head(net.head, w.float(), (ym - fm @ w).float())


def _load_rows(cfg: DistillConfig):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = open_priors(cfg.priors)
    manifest = load_manifest(cfg.manifest, cfg.root, outside="allow" if cfg.allow_outside else "refuse")
    train_s, test_s = manifest.split("train"), manifest.split("test")
    if not train_s or not test_s:
        raise PtgError(f"manifest {cfg.manifest} has {len(train_s)} train and {len(test_s)} test rows; `ptg distill` "
                       "learns from the train split and validates on the test split, so it needs both")
    k_tr, k_te = sample_keys(train_s), sample_keys(test_s)
    miss = [s for s, k in zip(train_s + test_s, k_tr + k_te) if reader.missing([k])]
    if miss:
        raise PtgError(f"{len(miss)} of {len(train_s) + len(test_s)} manifest rows have no prior in {cfg.priors} "
                       f"(e.g. {', '.join(s.id for s in miss[:5])}): the store was made from another manifest or its images "
                       f"changed. Run `ptg extract-priors --manifest {cfg.manifest} --out {cfg.priors}` first")
    views = list(reader.views)  # identity, flips / d4, tiles: `apply_view` makes each as the extractor did
    return reader, [str(w.message) for w in caught], train_s, test_s, k_tr, k_te, views


def distill(cfg: DistillConfig, on_progress: Callable[..., None] | None = None, force: bool = False) -> dict[str, Any]:
    """Train a student on a priors store and write DIST (see the module docstring).

    Args:
        cfg: the settings.
        on_progress: called as ``on_progress(1, loss=...)`` after every step.
        force: start again over a finished or interrupted run with other settings.

    Returns:
        The contents of ``student.json`` (with ``agreement`` and ``probe``).

    Raises:
        PtgError: bad settings or inputs; `Interrupted` after SIGINT/SIGTERM (state saved).
    """
    if cfg.normalize not in NORMALIZE:
        raise PtgError(f"--normalize {cfg.normalize!r} is not supported; use one of {', '.join(NORMALIZE)}")
    for name, v, lo in (("--steps", cfg.steps, 1), ("--batch-size", cfg.batch_size, 1), ("--val-every", cfg.val_every, 1)):
        if v < lo:
            raise PtgError(f"{name} must be at least {lo}, got {v}")
    if cfg.head_init not in HEAD_INIT:
        raise PtgError(f"--head-init {cfg.head_init!r} is not supported; use one of {', '.join(HEAD_INIT)}")
    if not cfg.lr > 0:
        raise PtgError(f"--lr must be positive, got {cfg.lr}")
    get_student_info(cfg.student)  # unknown names fail before any work
    out = fsio.claim_out_dir(cfg.out, KIND, force=force)
    fsio.remove_stale_tmp(out)
    with fsio.exclusive_lock(out / "distill.lock", f"the student folder {out}"):
        done = out / "student.json"
        if done.is_file():
            prev = json.loads(done.read_text(encoding="utf-8"))
            if prev.get("config") == cfg.identity():
                return prev  # finished with these settings: nothing to do
            if not force:
                raise PtgError(f"{out} holds a finished student made with other settings; use another --out or --force")
            done.unlink()
        return _train(cfg, out, on_progress, force)


def _train(cfg: DistillConfig, out: Path, on_progress, force: bool) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    reader, warns, train_s, test_s, k_tr, k_te, views = _load_rows(cfg)
    teacher_tr = reader.get_all_views(k_tr)[:, [reader.views.index(v) for v in views]]  # [N, V, D]
    teacher_te = reader.get(k_te, "identity")  # [M, D]
    norm = Normalizer.fit(cfg.normalize, teacher_tr)
    pp = _pinned_preprocess(reader.metadata, cfg.student, cfg.size)
    tr_images, te_images = _Images([s.input for s in train_s], pp, len(views)), _Images([s.input for s in test_s], pp)
    items = [(i, v) for i in range(len(train_s)) for v in views]
    targets = {(i, v): torch.from_numpy(teacher_tr[i, j]) for i in range(len(train_s)) for j, v in enumerate(views)}

    net, opt, sched, gen = _build(cfg, reader.dim, device)
    state_path = out / "state.pt"
    step, history = _resume(state_path, cfg, force, net, opt, sched, gen)
    if step == 0 and cfg.head_init == "ridge":
        pick = torch.randperm(len(items), generator=torch.Generator().manual_seed(cfg.seed))[:RIDGE_ROWS].tolist()
        _ridge_head(net, tr_images, [items[i] for i in pick], torch.stack([norm.forward(targets[items[i]]) for i in pick]),
                    device, cfg.batch_size)
    train_mean = teacher_tr[:, 0].mean(0)

    def save_state() -> None:
        fsio.atomic_save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                          "gen": gen.get_state(), "step": step, "config": json.dumps(cfg.identity()),
                          "history": json.dumps(history)}, state_path)

    def validate() -> dict[str, float]:
        pred = _predict(net, te_images, len(test_s), norm, device, cfg.batch_size)
        return agreement(pred, teacher_te, norm, train_mean)

    started = time.time()
    with StopSignals() as stop:  # the trainer's: the first signal stops after this step, a second at once
        while step < cfg.steps:
            if stop.signum:
                save_state()
                raise Interrupted(f"`ptg distill` stopped at step {step} of {cfg.steps}; state saved in {state_path}. "
                                  "Run the same command again to continue.", stop.signum)
            batch = [items[i] for i in torch.randint(len(items), (cfg.batch_size,), generator=gen).tolist()]
            g = torch.stack([targets[b] for b in batch]).to(device)  # [B, D] raw teacher priors
            loss_value = _train_step(net, opt, norm, tr_images.batch(batch).to(device), g, step, cfg.lr)
            sched.step()
            step += 1
            if step % cfg.val_every == 0 or step == cfg.steps:
                history.append({"step": step, "loss": loss_value, **validate()})
                save_state()
            if on_progress is not None:
                on_progress(1, loss=loss_value)

    # Final report on the last weights (the test split chose nothing).
    pred_te = _predict(net, te_images, len(test_s), norm, device, cfg.batch_size)
    pred_tr = _predict(net, tr_images, len(train_s), norm, device, cfg.batch_size)
    agree = agreement(pred_te, teacher_te, norm, train_mean)
    probe = probe_report(train_s, test_s, teacher_tr[:, 0], teacher_te, pred_tr, pred_te)
    meta = write_student(out, cfg, net, norm, reader, pp, views, step, history, agree, probe, warns,
                          len(train_s), len(test_s), time.time() - started, device)
    state_path.unlink(missing_ok=True)
    return meta


def _build(cfg: DistillConfig, dim: int, device: torch.device):
    """The student (seeded), AdamW with a cosine schedule to 0, and the batch sampler's generator."""
    torch.manual_seed(cfg.seed)
    net = create_student(cfg.student, dim, **cfg.student_args).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    return net, opt, sched, torch.Generator().manual_seed(cfg.seed)


def _resume(state_path: Path, cfg: DistillConfig, force: bool, net, opt, sched, gen) -> tuple[int, list]:
    """(step, history) of an interrupted run of the same settings, its state loaded; (0, []) otherwise."""
    if not state_path.is_file():
        return 0, []
    state = read_weights(state_path, "the interrupted distillation's state", "delete it, or pass --force to start again")
    if json.loads(state["config"]) != cfg.identity():
        if not force:
            raise PtgError(f"{state_path.parent} holds an interrupted distillation with other settings; run the same "
                           "command to continue it, use another --out, or pass --force to start again")
        return 0, []
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    gen.set_state(state["gen"])
    return int(state["step"]), json.loads(state["history"])


def _train_step(net, opt, norm: Normalizer, x: Tensor, g: Tensor, step: int, lr: float) -> float:
    """One optimiser step on images ``x`` and their raw teacher priors ``g``; returns the loss."""
    net.train()
    for m in net.modules():  # pretrained BatchNorm keeps its ImageNet statistics at small batches
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    y = net(x).float()  # [B, D] in the training space
    loss: Tensor = (1 - F.cosine_similarity(norm.inverse(y), g, dim=1)).mean() + F.mse_loss(y, norm.forward(g))
    if not torch.isfinite(loss):
        raise PtgError(f"the distillation loss became {loss.item()} at step {step}; lower --lr (now {lr})")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


