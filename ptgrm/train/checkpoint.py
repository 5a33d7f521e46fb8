"""Checkpoint files of `ptg train`: safe loading, RNG states as plain values, rebuilding networks.

The schema itself has one definition: `ptg.ptgrm.train.state.TrainState.state_dict`. Every file
is written with `ptg.pipeline.fsio.atomic_save` and read with ``torch.load(weights_only=True)``:
a checkpoint holds only tensors and plain values (RNG states included), so loading one can never
run code. A hostile pickle is refused before anything in it is called. Model names in a file are
resolved only through the registry: a ``package.module:Class`` user network is imported only when
the user names it on the command line (``trusted`` below), never because a file says so.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ptg.pipeline.errors import PtgError

FORMAT = "ptg-train/2"
OLD_FORMATS = ("ptg-train/1",)  # read for inference when they load safely; never resumed


def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with a clear PtgError for anything else.

    Raises:
        PtgError: missing file, or a file holding Python objects other than tensors and plain
            values (refused without running them: a shared file is never trusted with code).
    """
    from ptg.pipeline.limits import check_torch_zip, check_tree

    path = Path(path)
    if not path.is_file():
        raise PtgError(f"{what} not found: {path}")
    check_torch_zip(path, what)  # a deflated entry would inflate inside torch.load, before any check of ours
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code, RuntimeError/EOFError for damage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PtgError(f"refused to load {what} {path}: it is not a file of tensors and plain values that can be read "
                       f"safely (torch.load weights_only=True: {first}). Nothing in it was run; use a checkpoint "
                       "written by `ptg train`, an `ptg export` folder or a plain state dict") from None
    check_tree(obj, f"{what} {path}")  # a self-referencing entry (the unpickler's memo allows one) would hang later
    return obj


def is_checkpoint(obj: Any) -> bool:
    """Whether a safely loaded object is a `ptg train` checkpoint (else e.g. a plain state dict)."""
    return isinstance(obj, dict) and isinstance(obj.get("format"), str) and obj["format"].startswith("ptg-train/")


def load_checkpoint(path: str | Path, for_resume: bool = False) -> dict[str, Any]:
    """Read a `ptg train` checkpoint safely.

    Args:
        path: the ``.pt`` file.
        for_resume: require the current `FORMAT` (older files hold what resume cannot restore).

    Raises:
        PtgError: missing, unsafe, or not a ptg checkpoint (of a usable format).
    """
    ckpt = safe_load(path)
    if not is_checkpoint(ckpt):
        raise PtgError(f"{path} is not a `ptg train` checkpoint (format {FORMAT})")
    fmt = ckpt["format"]
    if fmt != FORMAT and (for_resume or fmt not in OLD_FORMATS):
        raise PtgError(f"{path} has checkpoint format {fmt!r}; this ptg reads {FORMAT}"
                       + (" for --resume: start a new run" if for_resume else ""))
    return ckpt


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


def resolve_checkpoint(path_or_run_dir: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file: the path itself, or ``RUN/checkpoints/{best,last}.pt`` of a run folder."""
    p = Path(path_or_run_dir)
    if p.is_file():
        return p
    if p.is_dir():
        order = ("best.pt", "last.pt") if prefer == "best" else ("last.pt", "best.pt")
        for name in order:
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise PtgError(f"{p} is not a finished `ptg train` run folder (no checkpoints/best.pt or last.pt)")
    raise PtgError(f"no checkpoint or run folder at {p}")


def build_network(name: str, args: dict[str, Any], state_dict: dict[str, Any] | None = None,
                  trusted: Sequence[str] = ()) -> nn.Module:
    """Rebuild F or R from a recorded name and config overrides, and load its weights.

    Args:
        name: a registry name; a ``package.module:Class`` name only if listed in ``trusted``
            (names the user gave on the command line).
        args: config overrides; a pretrained flag is dropped (the weights come from the file).
        state_dict: the weights, loaded strictly.
        trusted: user-network names the user passed on the command line.

    Raises:
        PtgError: an untrusted user-network name, an unknown name, weights that do not fit.
    """
    from ptg.pipeline.limits import check_param_count
    from ptg.ptgrm.models import create_model

    if ":" in name and name not in trusted:
        raise PtgError(f"the file names the user network {name!r}; ptg never imports code because a file names it. "
                       "Only registered models load from checkpoints and exports (see `ptg models`); for your own "
                       f"network, name it on the command line: `ptg eval/restore --trust-network {name}` "
                       f"(`ptg train --baseline {name}` to resume training)")
    args = dict(args)
    if args.get("pretrained"):
        args["pretrained"] = False
    if args.get("weights"):
        args["weights"] = None  # never read another file named in a checkpoint
    check_param_count(lambda: create_model(name, **args), f"the network {name!r} recorded with args {args}")  # before allocating
    net = create_model(name, **args)
    if state_dict is not None:
        try:
            net.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise PtgError(f"the recorded weights do not fit {name!r} with args {args}: {str(exc).splitlines()[0]}") from exc
    return net
