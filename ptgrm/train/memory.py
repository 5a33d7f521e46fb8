"""Training within the memory you have: micro-batches, activation checkpointing, the fp16 norm guard,
channels-last and torch.compile, applied to F and R from the training side (no model file changes).

Checkpointing works on a network's *blocks*: modules of a known block class (`BLOCK_CLASSES`: ptg's
and spandrel's repeated blocks, found by class name so spandrel-built networks are covered without
importing them), else the items of an ``nn.ModuleList`` that hold a convolution (UNet's scales).
A block keeps its state-dict keys: its class is swapped for a subclass of the same name whose
``forward`` runs the original under ``torch.utils.checkpoint`` (non-reentrant) while training with
gradients, so checkpoints, EMA copies (a deep copy keeps the class) and exports are unchanged.
"""
from __future__ import annotations

import functools
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import CHECKPOINTING  # noqa: F401 (the one list)

# Repeated blocks by class name. ptg: layers.RestormerBlock / ResBlock, nafnet.NAFBlock, snr._TokenLayer,
# ptgrm.ChannelSpatialAttention (R's largest activations: a k*k*c kernel per location). spandrel: Restormer
# and FFTformer TransformerBlock, NAFNet NAFBlock, KBNet KBBlock_s, SwinIR RSTB, ESRGAN RRDB, SCUNet
# ConvTransBlock, Uformer LeWinTransformerBlock, MPRNet CAB, RetinexFormer IGAB, SPAN SPAB, DRUNet ResBlock.
BLOCK_CLASSES = frozenset({
    "RestormerBlock", "ResBlock", "NAFBlock", "_TokenLayer", "ChannelSpatialAttention",
    "TransformerBlock", "KBBlock_s", "RSTB", "RRDB", "ConvTransBlock", "LeWinTransformerBlock", "CAB", "IGAB",
    "SPAB", "RCAB", "ResidualGroup",
})
# spandrel's LayerNorm2d (NAFNet, KBNet, ...) computes its variance in the input dtype: in float16 the square
# of activations above 256 overflows (chaiNNer-org/spandrel PR 332). Those norms run in float32 under fp16.
FP16_UNSAFE_NORMS = frozenset({"LayerNorm2d"})


def find_blocks(root: nn.Module) -> list[nn.Module]:
    """The outermost blocks of ``root`` (see the module docstring); nothing inside a block is returned."""
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if type(child).__name__ in BLOCK_CLASSES or _is_scale(child, module):
                found.append(child)
            else:
                visit(child)

    visit(root)
    return found


def _is_scale(child: nn.Module, parent: nn.Module) -> bool:
    """An item of a ModuleList that convolves and holds no named block (e.g. one UNet scale)."""
    if not isinstance(parent, nn.ModuleList) or not any(True for _ in child.children()):
        return False
    inner = list(child.modules())
    return (any(isinstance(m, nn.Conv2d) for m in inner)
            and not any(type(m).__name__ in BLOCK_CLASSES for m in inner[1:]))


@functools.cache
def _checkpointed_class(cls: type) -> type:
    """``cls`` with a forward that checkpoints itself when its instance's ``_ptg_checkpoint`` is on."""
    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        if self._ptg_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(functools.partial(cls.forward, self), *args, use_reentrant=False, **kwargs)
        return cls.forward(self, *args, **kwargs)

    return type(cls.__name__, (cls,), {"forward": forward, "_ptg_checkpoint": False, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__, "_ptg_base": cls})


def checkpoint_blocks(module: nn.Module | None, on: bool) -> int:
    """Turn checkpointing of ``module``'s blocks on or off; returns how many blocks it covers."""
    if module is None:
        return 0
    blocks = find_blocks(module)
    for b in blocks:
        if not hasattr(type(b), "_ptg_base"):
            b.__class__ = _checkpointed_class(type(b))
        b._ptg_checkpoint = on
    return len(blocks)


def set_checkpointing(f: nn.Module, r: nn.Module | None, mode: str) -> dict[str, int]:
    """``run.checkpointing``: none | f | r | both; returns the blocks checkpointed in F and R."""
    return {"f": checkpoint_blocks(f, mode in ("f", "both")), "r": checkpoint_blocks(r, mode in ("r", "both"))}


@functools.cache
def _float32_class(cls: type) -> type:
    def forward(self: nn.Module, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type):
            return cls.forward(self, x)
        with torch.autocast(x.device.type, enabled=False):
            return cls.forward(self, x.float()).to(x.dtype)

    return type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__, "_ptg_base": cls})


def guard_fp16(module: nn.Module | None) -> int:
    """Run ``module``'s float16-unsafe norms (`FP16_UNSAFE_NORMS`) in float32; returns how many.

    ptg's own LayerNorm2d already computes its statistics in float32; it is left alone.
    """
    n = 0
    for m in module.modules() if module is not None else ():
        cls = type(m)
        if cls.__name__ in FP16_UNSAFE_NORMS and not hasattr(cls, "_ptg_base") and not cls.__module__.startswith("ptg."):
            m.__class__ = _float32_class(cls)
            n += 1
    return n


def micro_slices(n: int, micro_batch: int) -> list[slice]:
    """``n`` samples in micro-batches of ``micro_batch`` (0: one), the last one ragged."""
    step = micro_batch if 0 < micro_batch < n else n
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def has_batch_norm(module: nn.Module | None) -> bool:
    """Batch statistics differ per micro-batch: such a network's accumulated gradient is not the full batch's."""
    return module is not None and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def speed_switches(modules: Iterator[nn.Module | None], channels_last: bool, compile_: bool) -> None:
    """``run.channels_last`` (NHWC weights) and ``run.compile`` (``Module.compile``: in place, so the
    state dict keeps its keys: no ``_orig_mod.`` prefix in checkpoints, EMA or exports)."""
    for m in modules:
        if m is None:
            continue
        if channels_last:
            m.to(memory_format=torch.channels_last)
        if compile_:
            _compile(m)


# Modules left eager under run.compile: inductor fails on the backward of PTG-RM's replicate-padded
# per-location kernels (torch 2.14: "expected ... stride" in replication_pad2d_backward's meta kernel).
COMPILE_EAGER = frozenset({"ChannelSpatialAttention"})


def _compile(module: nn.Module) -> None:
    """``module.compile()``, or, when it holds a `COMPILE_EAGER` part, its other children compiled one by one."""
    if not any(type(m).__name__ in COMPILE_EAGER for m in module.modules()):
        module.compile()
        return
    for child in module.children():
        if type(child).__name__ not in COMPILE_EAGER:
            _compile(child)
