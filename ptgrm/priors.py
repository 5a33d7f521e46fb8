"""The one prior transform: raw store vectors -> what F/R receive, in training, validation,
`ptg eval` and `ptg restore` alike.

Two settings (``priors.normalize``, ``priors.control``) and statistics fitted once on the training
rows (identity view) travel with the run (checkpoint, export), so inference applies exactly what
training applied:

- normalize (`ptg.pipeline.priors.normalize`, shared with `ptg distill` and `ptg priors probe`):
  ``standardize`` (the default): per-dimension ``(g - mean) / std`` over the training rows;
  ``l2``: each vector divided by its L2 norm (the authors L2-normalise CLIP); ``none``.
- control ``real``: the image's own prior; ``shuffle``: the prior of another image of the same
  set, by a fixed seeded derangement (`derangement`); ``constant``: one training image's normalised
  prior, drawn with the run's seed, for every image (same R, same constants, no per-image
  information); ``zero``: zeros (note: also removes the constants a non-zero prior feeds into R).

Why the constant is a real training prior and not their mean: standardised priors average to
exactly zero, so "the mean" would be the zero control again, and a zero g leaves R's prior paths
(T has no bias) nothing to learn constants from (what that cost in the study: docs/RESULTS.md,
"Numbers behind defaults in the code"). A real prior has the others' scale (the one nearest the mean would be the shortest under standardize), and
drawing it with the seed puts the choice of image into the seed spread.

Prior dropout and noise are training-only regularisers and live in the training dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.priors.normalize import DEFAULT_NORMALIZE, NORMALIZE, check_normalize, floor_std, row_norms  # noqa: F401 (NORMALIZE re-exported)

CONTROLS = ("real", "shuffle", "constant", "zero")


def derangement(n: int, seed: int) -> np.ndarray:
    """A fixed seeded permutation without fixed points (identity for n < 2): image i gets image
    ``d[i]``'s prior under ``priors.control=shuffle``."""
    if n < 2:
        return np.arange(n)
    p = np.random.default_rng([seed, 0x5EED]).permutation(n)
    d = np.empty(n, dtype=np.int64)
    d[p] = np.roll(p, -1)  # one cycle through a random order: nobody maps to itself
    return d


def _l2(g: Tensor) -> Tensor:
    """Each row divided by its L2 norm (`ptg.pipeline.priors.normalize.row_norms`, float32)."""
    return g / torch.from_numpy(row_norms(g.detach().to("cpu", torch.float32).numpy())).to(g.device)


@dataclass
class PriorTransform:
    """Raw prior vectors (one ``[B, D_i]`` per store) -> the model's input vectors.

    Attributes:
        dims: prior dimension of each store.
        normalize: one of `ptg.pipeline.priors.normalize.NORMALIZE` (default standardize).
        control: real | shuffle | constant | zero.
        seed: the run's seed; training shuffles with `derangement(n, seed)`, validation, eval and
            restore with `derangement(n, seed + 1)` over the set they score.
        mean, std: per store ``[D]`` training statistics (standardize only).
        constant: per store ``[D]`` normalised prior of one training image drawn with ``seed``
            (control constant only).
    """

    dims: tuple[int, ...]
    normalize: str = DEFAULT_NORMALIZE
    control: str = "real"
    seed: int = 0
    mean: list[Tensor] = field(default_factory=list)
    std: list[Tensor] = field(default_factory=list)
    constant: list[Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_normalize(self.normalize)
        if self.control not in CONTROLS:
            raise PtgError(f"priors.control={self.control!r} is not one of {', '.join(CONTROLS)}")
        self.dims = tuple(int(d) for d in self.dims)

    @classmethod
    def fit(cls, dims: Sequence[int], normalize: str, control: str, seed: int,
            train_rows: Sequence[np.ndarray | Tensor]) -> "PriorTransform":
        """Fit the statistics on the training rows (one ``[N, D_i]`` array per store)."""
        t = cls(tuple(dims), normalize, control, seed)
        if normalize != "standardize" and control != "constant":
            return t  # stateless: the (possibly lazy, disk-backed) rows need not be read
        rows = [torch.as_tensor(np.asarray(r[:]), dtype=torch.float32) for r in train_rows]
        if normalize == "standardize":
            # float32 torch reductions, as every trained run so far (numpy's sum in another order,
            # which would change their weights); the floor is the shared one
            t.mean = [r.mean(0) for r in rows]
            t.std = [torch.from_numpy(floor_std(r.std(0, unbiased=False).numpy())) for r in rows]
        if control == "constant":
            pick = int(np.random.default_rng([seed, 0xC0257]).integers(len(rows[0])))
            t.constant = [n[pick] for n in t._normalized(rows)]
        return t

    @property
    def needs_input(self) -> bool:
        """Whether the raw priors of the images are read at all (not for zero/constant)."""
        return bool(self.dims) and self.control in ("real", "shuffle")

    def order(self, n: int, training: bool = False) -> np.ndarray:
        """Which image's prior each of ``n`` images gets: identity, or the shuffle derangement."""
        if self.control != "shuffle":
            return np.arange(n)
        return derangement(n, self.seed if training else self.seed + 1)

    def _normalized(self, raw: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for i, g in enumerate(raw):
            g = g.to(torch.float32)
            if self.normalize == "l2":
                g = _l2(g)
            elif self.normalize == "standardize":
                g = (g - self.mean[i].to(g.device)) / self.std[i].to(g.device)
            out.append(g)
        return out

    def __call__(self, raw: Sequence[Tensor] | None, batch: int = 1, device: torch.device | str = "cpu") -> list[Tensor]:
        """Transformed priors, one ``[B, D_i]`` per store.

        Args:
            raw: raw store vectors (one ``[B, D_i]`` per store), already reordered by `order`
                under shuffle; ignored (may be None) for the zero and constant controls.
            batch: B when ``raw`` is None.
            device: where zero/constant priors are made.

        Raises:
            PtgError: wrong number or shape of priors.
        """
        if self.control == "zero":
            return [torch.zeros(batch, d, device=device) for d in self.dims]
        if self.control == "constant":
            return [c.to(device)[None].expand(batch, -1).clone() for c in self.constant]
        if raw is None:
            raise PtgError(f"this model was trained with priors of dims {list(self.dims)}; pass them")
        if len(raw) != len(self.dims):
            raise PtgError(f"this model takes {len(self.dims)} prior(s) (dims {list(self.dims)}), got {len(raw)}")
        for g, d in zip(raw, self.dims):
            if g.dim() != 2 or g.shape[1] != d:
                raise PtgError(f"a prior of shape {tuple(g.shape)} does not match the model's prior dim {d}; "
                               "use priors from the same encoder")
        return self._normalized([g.to(device) for g in raw])

    # -- persistence: plain values and tensors only (checkpoints load with weights_only=True)

    def state_dict(self) -> dict[str, Any]:
        return {"dims": list(self.dims), "normalize": self.normalize, "control": self.control, "seed": int(self.seed),
                "mean": list(self.mean), "std": list(self.std), "constant": list(self.constant)}

    @classmethod
    def from_state_dict(cls, s: dict[str, Any]) -> "PriorTransform":
        return cls(tuple(s["dims"]), s["normalize"], s["control"], int(s["seed"]),
                   [torch.as_tensor(t) for t in s.get("mean") or []], [torch.as_tensor(t) for t in s.get("std") or []],
                   [torch.as_tensor(t) for t in s.get("constant") or []])

    def tensors(self) -> dict[str, Tensor]:
        """The statistics as a flat name -> tensor map (the export's prior_stats.safetensors)."""
        out = {}
        for name in ("mean", "std", "constant"):
            for i, t in enumerate(getattr(self, name)):
                out[f"{name}.{i}"] = t.contiguous()
        return out

    def settings(self) -> dict[str, Any]:
        """The plain settings (the export's config.json), without the statistics."""
        return {"dims": list(self.dims), "normalize": self.normalize, "control": self.control, "seed": int(self.seed)}

    @classmethod
    def from_settings(cls, settings: dict[str, Any], tensors: dict[str, Tensor]) -> "PriorTransform":
        n = len(settings["dims"])
        pick = lambda name: [tensors[f"{name}.{i}"] for i in range(n) if f"{name}.{i}" in tensors]  # noqa: E731
        return cls(tuple(settings["dims"]), settings["normalize"], settings["control"], int(settings["seed"]),
                   pick("mean"), pick("std"), pick("constant"))

    def describe(self) -> str:
        return f"normalize={self.normalize}, control={self.control}"
