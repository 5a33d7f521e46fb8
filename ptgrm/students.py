"""Student networks for `ptg distill`: small image -> prior regressors that stand in for a teacher G.

An explicit registry (as `ptg.ptgrm.models.registry`, timm's): `register_student` fills a dict
and refuses a second registration of a name; `create_student(name, out_dim, **kw)` builds one and
never guesses another name; `list_students()` lists them. Every student maps a preprocessed batch
``[B, 3, S, S]`` to ``[B, out_dim]`` and stays within 5M parameters and 1 GMAC at 224² for any
prior dimension up to 2,048 (tested).

- ``cnn``: a compact residual CNN written here (torch only), pooled channel mean ⊕ std. The std
  pooling is there because degradation priors (e.g. FFDNet's feature std) measure spread, not level.
- ``efficientnet-lite0``: timm's ``tf_efficientnet_lite0`` initialised from the real ImageNet
  weights that ship offline (found and mapped by `ptg.pipeline.encoders.imagenet`), with a
  linear head factorised through rank 256, so a 1,280- or 1,804-d prior still fits in 5M parameters.
  timm is imported inside the factory only.

Every student exposes ``features(x)`` (the pooled vector its head reads) and ``head``, so
`ptg distill` can start the head at the ridge read-out of the features (`set_linear_head`).
Each entry records the input normalisation the architecture expects (mean, std), which
`ptg distill` pins into the student's metadata.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class StudentInfo:
    """A registry entry."""

    name: str  # registry name
    factory: Callable[..., nn.Module]  # factory(out_dim, **kw) -> module [B,3,S,S] -> [B,out_dim]
    summary: str  # one line for listings and errors
    mean: tuple[float, float, float]  # per-channel mean the architecture expects its [0,1] input minus
    std: tuple[float, float, float]  # per-channel divisor after the mean


STUDENTS: dict[str, StudentInfo] = {}


def register_student(name: str, *, summary: str, mean: tuple[float, float, float], std: tuple[float, float, float]):
    """Decorator adding a student factory; a second registration of a name is a bug."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in STUDENTS:
            raise ValueError(f"student {name!r} is already registered")
        STUDENTS[name] = StudentInfo(name, fn, summary, tuple(mean), tuple(std))
        return fn

    return deco


def list_students() -> list[StudentInfo]:
    """Registered students, sorted by name."""
    return [STUDENTS[k] for k in sorted(STUDENTS)]


def get_student_info(name: str) -> StudentInfo:
    """The entry of ``name``; a PtgError listing the choices if unknown."""
    info = STUDENTS.get(name)
    if info is None:
        choices = ", ".join(f"{s.name} ({s.summary})" for s in list_students())
        raise PtgError(f"unknown student {name!r}; choose one of: {choices}")
    return info


def create_student(name: str, out_dim: int, **kw: Any) -> nn.Module:
    """Build a registered student.

    Args:
        name: registry name (see `list_students`).
        out_dim: length of the prior it predicts.
        **kw: the factory's options (e.g. ``pretrained=False`` to skip loading ImageNet weights
            when the weights come from a distilled checkpoint anyway).

    Raises:
        PtgError: unknown name, a bad dimension or an unknown option.
    """
    info = get_student_info(name)
    if not isinstance(out_dim, int) or out_dim < 1:
        raise PtgError(f"a student's output dimension must be a positive integer, got {out_dim!r}")
    try:
        return info.factory(out_dim, **kw)
    except TypeError as exc:
        raise PtgError(f"cannot build student {name!r} with options {kw}: {exc}") from exc


@torch.no_grad()
def set_linear_head(head: nn.Module, weight: Tensor, bias: Tensor) -> None:
    """Make ``head`` compute ``feats @ weight + bias`` (``weight`` [F, D]), as well as its rank allows.

    A plain `nn.Linear` takes it exactly; a factorised head (Linear F->r without bias, Linear r->D)
    takes the best rank-r approximation (truncated SVD, split evenly between the two layers).
    """
    if isinstance(head, nn.Linear):
        head.weight.copy_(weight.T)
        head.bias.copy_(bias)
        return
    first, second = head[0], head[1]
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    r = first.out_features
    root = s[:r].sqrt()
    first.weight.copy_((u[:, :r] * root).T.float())  # [r, F]
    second.weight.copy_((vh[:r].T * root).float())  # [D, r]
    second.bias.copy_(bias)


# ---------------------------------------------------------------------------------------------
# cnn


class _Stage(nn.Module):
    """Stride-2 conv, then a residual 3×3 conv; GroupNorm so small batches train as large ones."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.GroupNorm(8, cout), nn.SiLU())
        self.res = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(8, cout), nn.SiLU())

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(x)
        return x + self.res(x)


class CompactCNN(nn.Module):
    """Five stride-2 stages (1/32 resolution), pooled channel mean ⊕ std, one linear layer."""

    def __init__(self, out_dim: int, widths: tuple[int, ...] = (16, 32, 64, 128, 160)):
        super().__init__()
        chans = (3,) + tuple(widths)
        self.stages = nn.Sequential(*[_Stage(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.head = nn.Linear(2 * widths[-1], out_dim)

    def features(self, x: Tensor) -> Tensor:
        """Pooled features ``[B, 2C]`` the head reads."""
        f = self.stages(x)  # [B, C, S/32, S/32]
        return torch.cat([f.mean(dim=(2, 3)), f.std(dim=(2, 3), unbiased=False)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # [B, out_dim]


@register_student("cnn", summary="compact residual CNN (about 0.7M parameters + head, 0.2 GMAC at 224²), torch only",
                  mean=IMAGENET_MEAN, std=IMAGENET_STD)
def build_cnn(out_dim: int, widths: tuple[int, ...] | list[int] = (16, 32, 64, 128, 160)) -> nn.Module:
    widths = tuple(int(w) for w in widths)
    if not widths or any(w < 8 or w % 8 for w in widths):
        raise PtgError(f"cnn widths must be multiples of 8 (GroupNorm with 8 groups), got {widths}")
    return CompactCNN(out_dim, widths)


# ---------------------------------------------------------------------------------------------
# efficientnet-lite0


class Lite0Student(nn.Module):
    """EfficientNet-Lite0 trunk (pooled 1,280 features) and a rank-limited linear head."""

    def __init__(self, trunk: nn.Module, out_dim: int, head_rank: int):
        super().__init__()
        self.trunk = trunk  # timm model with num_classes=0: forward -> [B, 1280]
        feat = int(trunk.num_features)
        if head_rank >= min(feat, out_dim):  # a factorisation that saves nothing: plain linear layer
            self.head = nn.Linear(feat, out_dim)
        else:
            self.head = nn.Sequential(nn.Linear(feat, head_rank, bias=False), nn.Linear(head_rank, out_dim))

    def features(self, x: Tensor) -> Tensor:
        """Pooled trunk features ``[B, 1280]`` the head reads."""
        return self.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # [B, out_dim]


@register_student("efficientnet-lite0",
                  summary="EfficientNet-Lite0 from the real ImageNet weights + linear head (rank 256), needs timm",
                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
def build_lite0(out_dim: int, pretrained: bool = True, head_rank: int = 256) -> nn.Module:
    try:
        import timm
    except ImportError as exc:
        raise PtgError("the efficientnet-lite0 student needs timm: pip install timm (or use --student cnn)") from exc
    from ptg.pipeline.encoders.imagenet import load_lite0_state, packaged_weights

    trunk = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    if pretrained:
        load_lite0_state(trunk, packaged_weights())  # the mapping of the `imagenet` encoder, strict
    trunk.reset_classifier(0)  # the 1000-way ImageNet classifier is not part of the student
    return Lite0Student(trunk, out_dim, int(head_rank))
