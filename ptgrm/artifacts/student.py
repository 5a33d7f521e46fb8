"""`ptg distill` students on disk: the folder a distillation writes, and `PriorStudent`, which
turns images into priors in the teacher store's space.

Layout of a student folder DIST::

    student.safetensors   the network's weights (``net.*``) and the normaliser (``norm.mean``, ``norm.std``)
    student.json          format "ptg-student/1"; student name and args, the teacher (encoder, weights
                          fingerprint, dtype, views, store), dim, pinned preprocessing, normalisation,
                          steps, seed, agreement; written last (its presence marks a finished run)
    agreement.json        agreement and probe results, the validation history

Nothing in the folder can run code: safetensors holds tensors only and student.json is data; the
weights' SHA-256 recorded in student.json is checked on load.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ptg.pipeline.core import fsio
from ptg.pipeline.encoders.preprocess import Preprocess, apply_preprocess
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.priors.normalize import row_norms, standardize_stats

from ..students import create_student
from .info import PriorStoreInfo

if TYPE_CHECKING:  # the trainer's config, only to type `write_student`
    from ..distill import DistillConfig

FORMAT = "ptg-student/1"


@dataclass
class Normalizer:
    """Maps raw store vectors to the training space and back."""

    kind: str  # standardize | l2 | none
    mean: Tensor  # [D] train-row mean (zeros unless standardize)
    std: Tensor  # [D] train-row std, floored as the trainer's (ones unless standardize)
    norm: float  # mean L2 norm of the train rows (scales l2 outputs back)

    @classmethod
    def fit(cls, kind: str, rows: np.ndarray) -> "Normalizer":
        """Statistics of the training rows ``[N, (V,) D]`` (`ptg.pipeline.priors.normalize`: the trainer's floor)."""
        flat = np.asarray(rows, dtype=np.float64).reshape(-1, rows.shape[-1])
        mean, std = standardize_stats(flat)
        norm = float(row_norms(flat).mean())
        if kind != "standardize":
            mean, std = np.zeros_like(mean), np.ones_like(std)
        return cls(kind, torch.from_numpy(mean).float(), torch.from_numpy(std).float(), norm)

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

    def check_matches(self, store: PriorStoreInfo) -> None:
        """Refuse to stand in for a prior store a model was trained on of another teacher."""
        if store.fingerprint != self.fingerprint or store.dim != self.dim:
            raise PtgError(f"the student in {self.metadata.get('dir')} imitates {self.metadata['teacher']['encoder']} priors "
                           f"(weights {self.fingerprint[:16]}..., {self.dim}-d); the model was trained on priors of "
                           f"weights {str(store.fingerprint)[:16]}... ({store.dim}-d, {store.path}). Distil a student "
                           "from that store with `ptg distill --priors STORE`")


def load_student(dist: str | Path, device: str | torch.device = "cpu") -> PriorStudent:
    """Load a finished `ptg distill` folder (safetensors + JSON only; nothing executes).

    Raises:
        PtgError: not a finished student folder, or files that do not match each other.
    """
    from ptg.pipeline.core.limits import check_param_count, check_preprocess_size, read_json
    from ptg.pipeline.core.weights import read_weights

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
    state = read_weights(weights, "the student weights", "distil the student again")  # header checked, bounded
    normalizer = Normalizer(meta["normalize"], state.pop("norm.mean"), state.pop("norm.std"), float(meta["norm_scale"]))
    args = {**meta["student_args"], **({"pretrained": False} if meta["student"] == "efficientnet-lite0" else {})}
    check_preprocess_size(meta_path, meta.get("preprocessing"))  # every image is resized to it: bound it first
    check_param_count(lambda: create_student(meta["student"], int(meta["dim"]), **args), f"the student in {dist}")
    net = create_student(meta["student"], int(meta["dim"]), **args)
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()}, strict=True)
    meta["dir"] = str(dist)
    return PriorStudent(net.to(device), meta, normalizer)


def student_priors(dists: Sequence[str | Path], entries: Sequence[PriorStoreInfo], device: str | torch.device = "cpu"):
    """A prior source for a trained run from students, one per priors store the run was trained on.

    Args:
        dists: `ptg distill` folders, in the order of the run's stores (``--prior-from``, repeatable).
        entries: the stores the model was trained on (`RunInfo.priors`).

    Returns:
        ``priors_for(path, img) -> [[1, D_i], ...]``, the signature of `ptg.ptgrm.infer`'s
        `StorePriors` / `EncoderPriors`: raw store-space vectors, for the run's own prior handling.

    Raises:
        PtgError: a count that differs from the run's stores, or a student of another teacher.
    """
    if len(dists) != len(entries):
        raise PtgError(f"the model takes {len(entries)} prior(s) (stores {', '.join(e.path for e in entries)}); "
                       f"--prior-from gave {len(dists)} student folder(s). Give one per store, in the same order")
    students = [load_student(d, device) for d in dists]
    for st, e in zip(students, entries):
        st.check_matches(e)

    def priors_for(path: Path | None, img: np.ndarray) -> list[Tensor]:
        return [st.priors_for(path, img)[0] for st in students]

    return priors_for


def write_student(out: Path, cfg: "DistillConfig", net, norm: Normalizer, reader, pp: Preprocess, views, step: int,
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
