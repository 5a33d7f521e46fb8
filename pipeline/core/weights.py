"""The one reader of weights files: every checkpoint, state dict and package weights file ptg opens.

A weights file is input (a teammate's F checkpoint, the authors' release, a run folder shared by
someone else), so it is read the same way everywhere:

- ``.safetensors``: the header is read and checked first (size, JSON, every tensor's dtype, shape
  and offsets inside the file), then the tensors; nothing in the file can run code.
- anything else: ``torch.load(weights_only=True)`` (a pickle asking for any object other than
  tensors and plain containers is refused before it is called), after the zip checks of
  `limits.check_torch_zip` (compressed or overlapping entries, more entries or a larger pickle than
  the tensor-count bound allows) so ``torch.load`` itself cannot be made to allocate gigabytes.
- both: at most ``PTG_MAX_WEIGHTS_KEYS`` tensors declaring at most ``PTG_MAX_WEIGHTS_BYTES``
  (parameters override both, for tests and callers with a narrower file).

`state_dict_of` unwraps the usual containers (``params_ema``, ``params``, ``state_dict``, ``model``,
a single wrapper key; ``module.`` / ``netG.`` prefixes) through spandrel's ``canonicalize_state_dict``
when spandrel is loaded (the spandrel F path loads it before reading), so ptg and spandrel agree on
what a file holds, and through the same rules, in the same order, written here otherwise: importing
spandrel costs seconds (all its architectures), too much for reading a package's FFDNet weights.
Every failure is one `PtgError` line naming the file and the fix.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import limits
from .errors import PtgError

# Containers the real state dict is found in, in spandrel's order (BasicSR's EMA weights before its raw ones),
# plus GAN trainers' "generator"
WRAPPERS = ("model_state_dict", "state_dict", "params_ema", "params-ema", "params", "model", "net", "generator")
PREFIXES = ("module.", "netG.")  # DataParallel / GAN-trainer prefixes, stripped when every key has one
SAFETENSORS_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2,
                           "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8, "C64": 8}
DEFAULT_FIX = "use the network's own weights file (.safetensors, or a state dict saved with torch.save)"


def read_weights(path: str | Path, what: str = "weights file", fix: str = DEFAULT_FIX,
                 max_keys: int | None = None, max_bytes: int | None = None) -> Any:
    """What a weights file holds (tensors and plain values), read safely and within bounds.

    Args:
        path: a ``.safetensors`` file, or anything ``torch.load(weights_only=True)`` reads.
        what: how errors name the file, e.g. "--baseline-weights".
        fix: what the user can do, ending an error about the file's content.
        max_keys: tensors the file may hold (default ``PTG_MAX_WEIGHTS_KEYS``).
        max_bytes: bytes its tensors may declare (default ``PTG_MAX_WEIGHTS_BYTES``).

    Returns:
        A dict of tensors (safetensors) or the unpickled object (tensors in plain containers).

    Raises:
        PtgError: missing, over a bound, unsafe, damaged.
    """
    p = Path(path)
    if not p.is_file():
        if p.exists():  # a FIFO or a device would block or never end; a folder is not a weights file
            raise PtgError(f"{what} {p} is not a regular file (a folder, FIFO or device); {fix}")
        raise PtgError(f"{what} {p}: no such file; {fix}")
    keys = max_keys or limits.max_weights_keys()
    nbytes = max_bytes or limits.max_weights_bytes()
    size = p.stat().st_size
    if size > nbytes + limits.max_pickle_bytes(keys):  # tensors plus the largest pickle the bounds allow
        raise PtgError(f"{what} {p} is {size:,} bytes, over the {nbytes:,} bytes of tensors a weights file may hold; "
                       f"if it is genuine, raise the limit with PTG_MAX_WEIGHTS_BYTES={size}")
    if p.suffix.lower() == ".safetensors":
        return _read_safetensors(p, what, fix, keys, nbytes)
    return _read_torch(p, what, fix, keys, nbytes)


def read_state_dict(path: str | Path, what: str = "weights file", fix: str = DEFAULT_FIX,
                    max_keys: int | None = None, max_bytes: int | None = None) -> dict[str, Any]:
    """The state dict of tensors in a weights file: `read_weights`, then `state_dict_of`."""
    return state_dict_of(read_weights(path, what, fix, max_keys, max_bytes), f"{what} {path}", fix)


def state_dict_of(obj: Any, where: str, fix: str = DEFAULT_FIX) -> dict[str, Any]:
    """The flat ``{name: tensor}`` inside a loaded file: wrappers unwrapped, common prefixes stripped.

    Entries that are not tensors (an epoch number beside the weights) are left out.

    Raises:
        PtgError: no dict of tensors under any of the usual wrappers.
    """
    import torch

    canonicalize = _canonicalizer()
    for _ in range(4):  # e.g. {"state_dict": {"model": {...}}}
        if not isinstance(obj, dict) or not obj:
            break
        inner = _unwrap_once(canonicalize(obj))
        if inner is obj:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise PtgError(f"{where} holds no state dict (found {type(obj).__name__}); {fix}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise PtgError(f"{where} holds no tensors under any of the keys {', '.join(WRAPPERS)}; {fix}")
    return tensors


def _unwrap_once(obj: dict[str, Any]) -> dict[str, Any]:
    """One level of the unwrapping spandrel does, plus ``generator``: what is used without spandrel."""
    inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
    if inner is None and len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
        inner = next(iter(obj.values()))
    if inner is not None:
        return inner
    for prefix in PREFIXES:
        if all(isinstance(k, str) and k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def _canonicalizer() -> Any:
    """spandrel's ``canonicalize_state_dict`` where spandrel is loaded (ptg then reads files exactly as
    spandrel does); else the identity, `_unwrap_once` applying the same rules."""
    import sys

    if "spandrel" not in sys.modules:
        return lambda obj: obj
    from spandrel import canonicalize_state_dict

    def canonicalize(obj: dict[Any, Any]) -> dict[Any, Any]:
        if not all(isinstance(k, str) for k in obj):  # e.g. an optimizer's {0: ...}: nothing to unwrap
            return obj
        return canonicalize_state_dict(obj)

    return canonicalize


def _read_torch(p: Path, what: str, fix: str, keys: int, nbytes: int) -> Any:
    import torch

    limits.check_torch_zip(p, what, max_keys=keys, max_bytes=nbytes)  # before torch.load can inflate anything
    _check_legacy_pickle(p, what, keys)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for code, RuntimeError/EOFError for damage, MemoryError
        first = _torch_reason(exc)
        raise PtgError(f"refused to load {what} {p}: it is not a file of tensors and plain values that can be read "
                       f"safely (torch.load weights_only=True: {first:.200}). Nothing in it was run; {fix}") from None
    limits.check_tree(obj, f"{what} {p}")  # a self-referencing entry (the unpickler's memo allows one) would hang later
    _check_loaded(obj, p, what, keys, nbytes)
    return obj


def _check_legacy_pickle(p: Path, what: str, keys: int) -> None:
    """torch's legacy (pre-zip) format is four pickles, then the storages' bytes: walk the pickles'
    opcodes (nothing is built) and refuse them when larger than ``keys`` tensors need, as the zip
    check does for ``data.pkl`` (2 M tensor records would cost gigabytes inside torch.load)."""
    import pickletools
    import zipfile

    if zipfile.is_zipfile(p):
        return
    bound = limits.max_pickle_bytes(keys)
    with open(p, "rb") as fh:
        try:
            for _ in range(4):  # magic number, protocol, system info, the state itself
                for op, _arg, pos in pickletools.genops(fh):
                    if pos is not None and pos > bound:
                        raise PtgError(f"{what} {p} has a pickle of more than {bound:,} bytes, more than {keys:,} "
                                       "tensors need; if it is genuine, raise PTG_MAX_WEIGHTS_KEYS")
                    if op.name == "STOP":
                        break
        except (ValueError, EOFError, UnicodeDecodeError):
            return  # not a pickle stream (a tar of the oldest format, or damage): torch.load names it


def _torch_reason(exc: Exception) -> str:
    """The line of a torch.load error that says why (torch's first line is advice, with ANSI codes)."""
    import re

    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln] or [type(exc).__name__]
    why = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0])
    return why.split(". Please use")[0]  # torch's advice to allowlist the global is not ours to give


def _check_loaded(obj: Any, p: Path, what: str, keys: int, nbytes: int) -> None:
    """Count the tensors a torch file held and the bytes they declare (legacy files too)."""
    import torch

    n, total, stack = 0, 0, [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, torch.Tensor):
            n += 1
            total += node.numel() * node.element_size()
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    _check_counts(n, total, p, what, keys, nbytes)


def _check_counts(n: int, total: int, p: Path, what: str, keys: int, nbytes: int) -> None:
    if n > keys:
        raise PtgError(f"{what} {p} holds {n:,} tensors, over the limit of {keys:,} for one weights file; if it is "
                       f"genuine, raise the limit with PTG_MAX_WEIGHTS_KEYS={n}")
    if total > nbytes:
        raise PtgError(f"{what} {p} declares {total:,} bytes of tensors, over the limit of {nbytes:,}; if it is "
                       f"genuine, raise the limit with PTG_MAX_WEIGHTS_BYTES={total}")


def _read_safetensors(p: Path, what: str, fix: str, keys: int, nbytes: int) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _check_safetensors_header(p, what, keys, nbytes)
    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError) as exc:
        raise PtgError(f"cannot read {what} {p} as safetensors ({str(exc)[:200]}); {fix}") from None


def _check_safetensors_header(p: Path, what: str, keys: int, nbytes: int) -> None:
    """Every tensor the header declares lies inside the file and the bounds, before anything is read."""
    size = p.stat().st_size
    bad = f"cannot read {what} {p} as safetensors"
    with open(p, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or n > size - 8:
            raise PtgError(f"{bad}: its header length {n:,} does not fit the file's {size:,} bytes; is it damaged?")
        if n > limits.max_pickle_bytes(keys):
            raise PtgError(f"{what} {p} has a header of {n:,} bytes, more than {keys:,} tensors need; if it is "
                           "genuine, raise PTG_MAX_WEIGHTS_KEYS")
        try:
            header = json.loads(fh.read(n))
        except (ValueError, RecursionError) as exc:
            raise PtgError(f"{bad}: its header is not JSON ({str(exc)[:80]}); is it damaged?") from None
    if not isinstance(header, dict):
        raise PtgError(f"{bad}: its header is a {type(header).__name__}, not an object; is it damaged?")
    header.pop("__metadata__", None)
    data = size - 8 - n
    total = sum(_entry_bytes(name, e, data, bad) for name, e in header.items())
    _check_counts(len(header), total, p, what, keys, nbytes)


def _entry_bytes(name: str, e: Any, data: int, bad: str) -> int:
    dtype = e.get("dtype") if isinstance(e, dict) else None
    shape = e.get("shape") if isinstance(e, dict) else None
    offsets = e.get("data_offsets") if isinstance(e, dict) else None
    ints = lambda v, k: isinstance(v, list) and (k is None or len(v) == k) and all(  # noqa: E731
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)
    if dtype not in SAFETENSORS_DTYPE_BYTES or not ints(shape, None) or not ints(offsets, 2):
        raise PtgError(f"{bad}: tensor {name!r:.80} has dtype {dtype!r:.20}, shape {shape!r:.60}, offsets {offsets!r:.60}")
    begin, end = offsets
    if not begin <= end <= data or math.prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype] != end - begin:
        raise PtgError(f"{bad}: tensor {name!r:.80} of shape {shape!r:.60} ({dtype}) does not match its bytes "
                       f"{begin:,}..{end:,} of {data:,}; is it damaged or crafted?")
    return end - begin
