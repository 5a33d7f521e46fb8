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

What `load_student(DIST)(x)` returns: vectors in the store's raw space, rounded to the store's
dtype, as `EncoderPriors` does. ``standardize`` and ``none`` invert exactly; ``l2`` loses the
length, so its outputs are unit directions times the mean train-row norm (right for runs trained
with ``priors.l2_normalize=true``, the default; the metadata says ``space``).

Output folder (``fsio.claim_out_dir(DIST, "student")``): ``student.safetensors``,
``student.json`` (written last: its presence means a finished run), ``agreement.json`` and,
while running, ``state.pt`` (model, optimiser, sampler; loaded with ``weights_only=True``) so a
killed or interrupted run continues when the same command is run again.
"""
from __future__ import annotations

import json
import math
import signal
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ptg.pipeline import fsio
from ptg.pipeline.encoders.preprocess import Preprocess, apply_preprocess
from ptg.pipeline.errors import Interrupted, PtgError
from ptg.pipeline.imageio import read_image
from ptg.pipeline.manifest import load_manifest
from ptg.pipeline.store import open_priors, sample_keys
from ptg.pipeline.views import apply_view

from .distill_agreement import agreement, probe_report
from .students import create_student, get_student_info, set_linear_head

FORMAT = "ptg-student/1"
KIND = "student"
NORMALIZE = ("standardize", "l2", "none")
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
    normalize: str = "standardize"  # training-target normalisation, one of NORMALIZE
    head_init: str = "ridge"  # ridge: head starts at the ridge read-out of the initial features; random: as built
    size: int | None = None  # side of the student's input; None = the teacher's pinned size
    val_every: int = 100  # validate on the test split (and save state.pt) every K steps
    seed: int = 0  # model init and batch order
    device: str = "auto"  # auto | cpu | cuda[:i]
    threads: int | None = None  # torch CPU threads; None = torch's default

    def identity(self) -> dict[str, Any]:
        """The fields a resumed or repeated run must share (device/threads do not change results' meaning)."""
        d = asdict(self)
        for k in ("device", "threads", "out"):
            d.pop(k)
        return d


# ---------------------------------------------------------------------------------------------
# Normalisation of targets


@dataclass
class Normalizer:
    """Maps raw store vectors to the training space and back."""

    kind: str  # standardize | l2 | none
    mean: Tensor  # [D] train-row mean (zeros unless standardize)
    std: Tensor  # [D] train-row std, floored (ones unless standardize)
    norm: float  # mean L2 norm of the train rows (scales l2 outputs back)

    @classmethod
    def fit(cls, kind: str, rows: np.ndarray) -> "Normalizer":
        t = torch.from_numpy(rows.reshape(-1, rows.shape[-1])).double()
        mean, std = t.mean(0), t.std(0, unbiased=False)
        std = std.clamp_min(max(1e-6, 1e-3 * float(std.mean())))  # constant dims must not explode
        norm = float(t.norm(dim=1).mean())
        if kind != "standardize":
            mean, std = torch.zeros_like(mean), torch.ones_like(std)
        return cls(kind, mean.float(), std.float(), norm)

    def forward(self, g: Tensor) -> Tensor:
        if self.kind == "l2":
            return F.normalize(g, dim=-1)
        return (g - self.mean.to(g.device)) / self.std.to(g.device)

    def inverse(self, y: Tensor) -> Tensor:
        if self.kind == "l2":
            return F.normalize(y, dim=-1) * self.norm
        return y * self.std.to(y.device) + self.mean.to(y.device)

    def tensors(self) -> dict[str, Tensor]:
        return {"norm.mean": self.mean.contiguous(), "norm.std": self.std.contiguous()}


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
# The student at inference


class PriorStudent:
    """A distilled student: ``student(x)`` gives priors in the teacher store's space.

    Attributes:
        net: the student network (eval mode).
        metadata: ``student.json`` (teacher encoder, fingerprint, dim, preprocessing, ...).
        preprocess: the pinned transform applied to every image.
        dim: prior dimension D.
        fingerprint: the teacher's weights fingerprint the student imitates.
    """

    def __init__(self, net: torch.nn.Module, metadata: dict[str, Any], normalizer: Normalizer):
        self.net = net.eval()
        self.metadata = metadata
        self.normalizer = normalizer
        self.preprocess = Preprocess(**{**metadata["preprocessing"], "mean": tuple(metadata["preprocessing"]["mean"]),
                                        "std": tuple(metadata["preprocessing"]["std"])})
        self.dim = int(metadata["dim"])
        self.fingerprint = str(metadata["teacher"]["fingerprint"])
        self.dtype = getattr(torch, metadata["teacher"].get("dtype") or "float32")

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def prepare(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> the pinned student input ``[B, 3, S, S]`` (the extractor's code)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise PtgError(f"a student takes images [B, 3, H, W] in [0, 1], got {tuple(x.shape)}")
        imgs = x.detach().float().cpu().permute(0, 2, 3, 1).numpy()
        return torch.stack([apply_preprocess(im, self.preprocess) for im in imgs])

    @torch.inference_mode()
    def __call__(self, x: Tensor) -> Tensor:
        """Raw priors ``[B, D]`` (float32, rounded to the store's dtype) of images ``[B, 3, H, W]`` in [0, 1]."""
        y = self.net(self.prepare(x).to(self.device)).float()  # [B, D] in the training space
        return self.normalizer.inverse(y).to(self.dtype).float().cpu()

    def priors_for(self, path: Path | None, img: np.ndarray) -> list[Tensor]:
        """The prior-source signature of `ptg.ptgrm.infer` (``(path, H×W×3 image) -> [[1, D]]``)."""
        return [self(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None])]

    def check_matches(self, entry: dict[str, Any]) -> None:
        """Refuse to stand in for a store entry of a checkpoint (path, dim, metadata) of another teacher."""
        fp = (entry.get("metadata") or {}).get("fingerprint")
        if fp != self.fingerprint or int(entry.get("dim", -1)) != self.dim:
            raise PtgError(f"the student in {self.metadata.get('dir')} imitates {self.metadata['teacher']['encoder']} priors "
                           f"(weights {self.fingerprint[:16]}..., {self.dim}-d); the model was trained on priors of "
                           f"weights {str(fp)[:16]}... ({entry.get('dim')}-d, {entry.get('path')}). Distil a student "
                           "from that store with `ptg distill --priors STORE`")


def load_student(dist: str | Path, device: str | torch.device = "cpu") -> PriorStudent:
    """Load a finished `ptg distill` folder (safetensors + JSON only; nothing executes).

    Raises:
        PtgError: not a finished student folder, or files that do not match each other.
    """
    from safetensors.torch import load_file

    from ptg.pipeline.limits import check_param_count, check_preprocess_size, read_json

    dist = Path(dist)
    meta_path, weights = (fsio.no_symlink(dist / n, "the student file") for n in ("student.json", "student.safetensors"))
    if not meta_path.is_file() or not weights.is_file():
        raise PtgError(f"{dist} is not a finished `ptg distill` output (student.json and student.safetensors); "
                       "run `ptg distill --out` to make one (an interrupted run continues when run again)")
    meta = read_json(meta_path, "student metadata")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PtgError(f"{meta_path} is not a ptg student (format {FORMAT})")
    if fsio.file_sha256(weights) != meta.get("weights_sha256"):
        raise PtgError(f"{weights} does not match the digest in {meta_path}; the folder was modified, distil again")
    state = load_file(str(weights))
    normalizer = Normalizer(meta["normalize"], state.pop("norm.mean"), state.pop("norm.std"), float(meta["norm_scale"]))
    args = {**meta["student_args"], **({"pretrained": False} if meta["student"] == "efficientnet-lite0" else {})}
    check_preprocess_size(meta_path, meta.get("preprocessing"))  # every image is resized to it: bound it first
    check_param_count(lambda: create_student(meta["student"], int(meta["dim"]), **args), f"the student in {dist}")
    net = create_student(meta["student"], int(meta["dim"]), **args)
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()}, strict=True)
    meta["dir"] = str(dist)
    return PriorStudent(net.to(device), meta, normalizer)


def student_priors(dists: Sequence[str | Path], entries: Sequence[dict[str, Any]], device: str | torch.device = "cpu"):
    """A prior source for a trained run from students, one per priors store the run was trained on.

    Args:
        dists: `ptg distill` folders, in the order of the run's stores (``--prior-from``, repeatable).
        entries: the checkpoint's ``priors`` list (path, dim, metadata with the fingerprint).

    Returns:
        ``priors_for(path, img) -> [[1, D_i], ...]``, the signature of `ptg.ptgrm.infer`'s
        `StorePriors` / `EncoderPriors`: raw store-space vectors, for the run's own prior handling.

    Raises:
        PtgError: a count that differs from the run's stores, or a student of another teacher.
    """
    if len(dists) != len(entries):
        raise PtgError(f"the model takes {len(entries)} prior(s) (stores {', '.join(str(e.get('path')) for e in entries)}); "
                       f"--prior-from gave {len(dists)} student folder(s). Give one per store, in the same order")
    students = [load_student(d, device) for d in dists]
    for st, e in zip(students, entries):
        st.check_matches(e)

    def priors_for(path: Path | None, img: np.ndarray) -> list[Tensor]:
        return [st.priors_for(path, img)[0] for st in students]

    return priors_for


# ---------------------------------------------------------------------------------------------
# Training


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PtgError(f"--device {name}: no CUDA device is visible here; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise PtgError(f"--device {name!r} is not a torch device; use auto, cpu or cuda[:i]") from exc


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


@contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """Turn SIGINT/SIGTERM into a flag the loop checks, so state is saved before stopping."""
    got: list[int] = []
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):  # noqa: ARG001
        got.append(signum)

    try:
        for s in old:
            signal.signal(s, handler)
    except ValueError:  # not the main thread: no handlers, a kill simply leaves state.pt behind
        old = {}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


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
    manifest = load_manifest(cfg.manifest, cfg.root)
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
    device = _device(cfg.device)
    reader, warns, train_s, test_s, k_tr, k_te, views = _load_rows(cfg)
    teacher_tr = reader.get_all_views(k_tr)[:, [reader.views.index(v) for v in views]]  # [N, V, D]
    teacher_te = reader.get(k_te, "identity")  # [M, D]
    norm = Normalizer.fit(cfg.normalize, teacher_tr)
    pp = _pinned_preprocess(reader.metadata, cfg.student, cfg.size)
    tr_images, te_images = _Images([s.input for s in train_s], pp, len(views)), _Images([s.input for s in test_s], pp)
    items = [(i, v) for i in range(len(train_s)) for v in views]
    targets = {(i, v): torch.from_numpy(teacher_tr[i, j]) for i in range(len(train_s)) for j, v in enumerate(views)}

    torch.manual_seed(cfg.seed)
    net = create_student(cfg.student, reader.dim, **cfg.student_args).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    gen = torch.Generator().manual_seed(cfg.seed)
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
    with _stop_signals() as stop:
        while step < cfg.steps:
            if stop:
                save_state()
                raise Interrupted(f"`ptg distill` stopped at step {step} of {cfg.steps}; state saved in {state_path}. "
                                  "Run the same command again to continue.", stop[0])
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
    meta = _write_student(out, cfg, net, norm, reader, pp, views, step, history, agree, probe, warns,
                          len(train_s), len(test_s), time.time() - started, device)
    state_path.unlink(missing_ok=True)
    return meta


def _resume(state_path: Path, cfg: DistillConfig, force: bool, net, opt, sched, gen) -> tuple[int, list]:
    """(step, history) of an interrupted run of the same settings, its state loaded; (0, []) otherwise."""
    if not state_path.is_file():
        return 0, []
    state = torch.load(state_path, map_location="cpu", weights_only=True)
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


def _write_student(out: Path, cfg: DistillConfig, net, norm: Normalizer, reader, pp: Preprocess, views, step: int,
                   history: list, agree: dict, probe: dict, warns: list, n_train: int, n_test: int, seconds: float,
                   device) -> dict[str, Any]:
    """student.safetensors, agreement.json and student.json (last: its presence marks a finished run)."""
    from safetensors.torch import save as safetensors_bytes

    state = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    state.update(norm.tensors())
    fsio.atomic_write(out / "student.safetensors", lambda f: f.write(safetensors_bytes(state)))
    enc = reader.metadata.get("encoder") or {}
    meta = {
        "format": FORMAT, "student": cfg.student, "student_args": cfg.student_args,
        "params": sum(p.numel() for p in net.parameters()), "dim": reader.dim,
        "teacher": {"encoder": enc.get("name"), "fingerprint": reader.fingerprint, "dtype": reader.metadata.get("dtype"),
                    "random_init": reader.random_init, "views": list(views), "store": str(Path(cfg.priors).resolve()),
                    "metadata": {k: enc.get(k) for k in ("name", "source", "pooling", "preprocessing", "details", "spec")}},
        "preprocessing": pp.to_dict(), "normalize": cfg.normalize, "norm_scale": norm.norm,
        "space": "raw store space" if cfg.normalize != "l2" else "unit direction x mean train norm (length not learnt)",
        "steps": step, "seed": cfg.seed, "train_rows": n_train, "test_rows": n_test,
        "agreement": agree, "probe": probe, "history": history, "warnings": warns,
        "selection": "last step (nothing selected on the test split)", "seconds": round(seconds, 1),
        "device": str(device), "config": cfg.identity(),
        "weights_sha256": fsio.file_sha256(out / "student.safetensors"),
    }
    fsio.atomic_write_json(out / "agreement.json", {"agreement": agree, "probe": probe, "history": history})
    fsio.atomic_write_json(out / "student.json", meta)  # last: its presence marks a finished run
    return meta

