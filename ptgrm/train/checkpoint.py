"""Checkpoint files of `ptg train`: RNG states as plain values, the parameter digest (reading is in `ptg.ptgrm.artifacts`).

The schema itself has one definition: `ptg.ptgrm.train.state.TrainState.state_dict`. Every file
is written with `ptg.pipeline.core.fsio.atomic_save`; RNG states are stored as tensors and plain values
so that ``torch.load(weights_only=True)`` reads them back.
"""
from __future__ import annotations

import hashlib
import random
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

# Reading checkpoints (safe loading, the network builder) is inference's too, so it lives in the
# artifacts home; training imports it from there (inference never imports train/).
from ..artifacts.checkpoint import (FORMAT, OLD_FORMATS, build_network, is_checkpoint,  # noqa: F401 (re-exported)
                                    load_checkpoint, resolve_checkpoint, safe_load)


def rng_state() -> dict[str, Any]:
    """torch, numpy and python RNG states as tensors and plain values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "python": [int(version), list(internal), gauss_next],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def parameter_digest(modules: Sequence[nn.Module | None]) -> str:
    """SHA-256 over the trainable parameters of ``modules``, in order, by sorted name.

    Each parameter contributes its name, dtype, shape and raw bytes (as float32 on the CPU), so a
    digest equality means bit-identical weights.
    """
    h = hashlib.sha256()
    for i, m in enumerate(modules):
        if m is None:
            continue
        for name, p in sorted(m.named_parameters(), key=lambda kv: kv[0]):
            if not p.requires_grad:
                continue
            t = p.detach().to("cpu", torch.float32).contiguous()
            h.update(f"{i}:{name}:{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()



