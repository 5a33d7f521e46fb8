"""`ptg train` checkpoint files as inference reads them: safe loading, the weight picker and the
registry-only network builder.

The schema itself has one definition: `ptg.ptgrm.train.state.TrainState.state_dict` (training
writes it; this module only reads). Every file is read with ``torch.load(weights_only=True)``:
a checkpoint holds only tensors and plain values (RNG states included), so loading one can never
run code. A hostile pickle is refused before anything in it is called. Model names in a file are
resolved only through the registry: a ``package.module:Class`` user network is imported only when
the user names it on the command line (``trusted`` below), never because a file says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, TypeVar

from torch import nn

from ptg.pipeline.core.errors import PtgError

from ..priors import PriorTransform
from .info import NetworkSpec, PriorStoreInfo, RunInfo

FORMAT = "ptg-train/2"
OLD_FORMATS = ("ptg-train/1",)  # read for inference when they load safely; never resumed

def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` through the one weights reader, with a clear PtgError.

    Raises:
        PtgError: missing file, a file over the weights bounds (zip bomb, too many tensors), or a
            file holding Python objects other than tensors and plain values (refused without
            running them: a shared file is never trusted with code).
    """
    from ptg.pipeline.core.weights import read_weights

    path = Path(path)
    if not path.is_file():
        raise PtgError(f"{what} not found: {path}")
    return read_weights(path, what, fix="use a checkpoint written by `ptg train`, an `ptg export` folder or a plain "
                        "state dict")


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
    _check_fields(ckpt, path)
    return ckpt


def _check_fields(ckpt: dict[str, Any], path: str | Path) -> None:
    """Types of every field the loaders read, checked first: a shared run's checkpoint is input, and
    a wrong type is one named error, not a KeyError or TypeError deep inside `read_checkpoint`."""
    from ptg.pipeline.core.limits import Optional_ as Opt
    from ptg.pipeline.core.limits import check_schema

    net = {"name": str, "args": dict, "state_dict": dict, "kind": Opt(str)}
    check_schema(ckpt, {
        "step": int, "mode": str, "baseline": net, "refiner": Opt(net), "ema": Opt({"baseline": Opt(dict), "refiner": Opt(dict)}),
        "priors": Opt([{"path": str, "dim": int, "views": Opt([str]), "metadata": Opt(dict)}]),
        "prior_transform": Opt({"dims": [int], "normalize": str, "control": str, "seed": int}),
        "config": Opt({"data": Opt({"manifest": Opt(str), "root": Opt(str)}), "priors": Opt(dict)}),
    }, f"checkpoint {path}")
    if ckpt["mode"] not in ("joint", "baseline", "refine"):
        raise PtgError(f"checkpoint {path}: 'mode' must be joint, baseline or refine, got {ckpt['mode']!r:.40}; "
                       "the file is damaged or was not written by ptg")


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
    from ptg.pipeline.core.limits import check_param_count
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


W = TypeVar("W")


def pick_weights(f_raw: W, r_raw: W | None, f_ema: W | None, r_ema: W | None, frozen_f: bool,
                 use_ema: bool = True) -> tuple[W, W | None, str]:
    """The one rule for which weights inference uses: EMA where kept, else the raw ones.

    Works on state dicts (files) and on modules (training's validation) alike. A frozen F
    (refine mode) never takes EMA weights: it did not train, so its average is itself.

    Returns:
        (F's weights, R's weights, "ema" if any EMA weights were taken else "raw").
    """
    f, r, which = f_raw, r_raw, "raw"
    if use_ema and f_ema is not None and not frozen_f:
        f, which = f_ema, "ema"
    if use_ema and r_ema is not None:
        r, which = r_ema, "ema"
    return f, r, which


def transform_of(ck: dict[str, Any]) -> PriorTransform:
    """The checkpoint's prior transform (older checkpoints: from their config's priors section)."""
    if ck.get("prior_transform"):
        return PriorTransform.from_state_dict(ck["prior_transform"])
    pcfg = (ck.get("config") or {}).get("priors") or {}
    dims = tuple(int(p["dim"]) for p in ck.get("priors") or [])
    normalize = pcfg.get("normalize") or ("l2" if pcfg.get("l2_normalize", True) else "none")
    control = pcfg.get("control", "real")
    if control in ("constant",) or normalize == "standardize":
        raise PtgError("this checkpoint records no prior statistics; it cannot be used with its control/normalisation")
    return PriorTransform(dims, normalize, control, int((ck.get("config") or {}).get("seed", 0)))


def read_checkpoint(source: str | Path, prefer: str = "best", trusted: Sequence[str] = (), use_ema: bool = True
                    ) -> tuple[nn.Module, nn.Module | None, RunInfo]:
    """F, R and their `RunInfo` from a `ptg train` checkpoint file or run folder (best.pt, else last.pt)."""
    path = resolve_checkpoint(source, prefer)
    ck = load_checkpoint(path)
    ema = ck.get("ema") or {}
    refiner = ck.get("refiner")
    f_sd, r_sd, weights = pick_weights(ck["baseline"]["state_dict"], (refiner or {}).get("state_dict"),
                                       ema.get("baseline"), ema.get("refiner"), ck["mode"] == "refine", use_ema)
    info = RunInfo(source=str(path), step=int(ck["step"]), mode=ck["mode"], weights=weights,
                   baseline=NetworkSpec.from_entry(ck["baseline"], True),
                   refiner=None if refiner is None else NetworkSpec.from_entry(refiner, False),
                   priors=tuple(PriorStoreInfo.from_entry(e) for e in ck.get("priors") or []),
                   transform=transform_of(ck), config=ck.get("config") or {})
    f = build_network(info.baseline.name, info.baseline.args, f_sd, trusted)
    r = None if info.refiner is None else build_network(info.refiner.name, info.refiner.args, r_sd, trusted)
    return f, r, info
