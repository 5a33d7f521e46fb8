"""Bounds on what a shared file may make ptg allocate, checked before the allocation.

A file a teammate shares is input: its header can claim any size. Every decoder and loader asks
this module first, so a 17 KB PNG that declares 144 Mpx, a TIFF with 2000 pages or a JSON file
nested a million levels deep ends in one named error instead of gigabytes of memory.

Limits are read from the environment at call time, so every command honours them without a flag
of its own (raise one for a genuinely large file):

- ``PTG_MAX_PIXELS`` (default 64 Mpx, e.g. 8192×8192): pixels of one decoded image, all pages.
- ``PTG_MAX_JSON_BYTES`` (default 64 MiB) and ``PTG_MAX_JSON_DEPTH`` (default 64): a JSON or YAML
  document read from a shared file (store metadata, export configs, run configs).
- ``PTG_MAX_PARAMS`` (default 500 M): parameters of a network built from recorded arguments, or
  detected by a third-party builder (spandrel) in a weights file.
- ``PTG_MAX_MODULES`` (default 100 000): submodules and tensors a third-party builder may
  register (each costs Python memory even on the meta device).
- ``PTG_MAX_WEIGHTS_KEYS`` (default 100 000) and ``PTG_MAX_WEIGHTS_BYTES`` (default 8 GiB): tensors
  in one weights file and the bytes they declare (`ptg.pipeline.core.weights`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import PtgError

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
DEFAULT_MAX_JSON_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 64
DEFAULT_MAX_NODES = 1_000_000  # a YAML alias bomb shares nodes: walking it would visit 10^9 of them
DEFAULT_MAX_PARAMS = 500_000_000
DEFAULT_MAX_MODULES = 100_000  # submodules + tensors: real networks have at most ~10^4 (SwinIR-L, HAT-L)
DEFAULT_MAX_WEIGHTS_KEYS = 100_000  # a training checkpoint of a large F (raw, EMA, two Adam moments) holds ~10^4
DEFAULT_MAX_WEIGHTS_BYTES = 8 << 30  # the tensors of one weights file (a 500 M-parameter F's checkpoint, roughly)
PICKLE_BYTES_PER_KEY = 256  # a tensor's record in a torch pickle: key, rebuild call, shape, stride (~60-150 bytes)
PICKLE_BYTES_SLACK = 1 << 20  # plus the plain values a checkpoint records (config, history)
MAX_ID_BYTES = 200  # a file system takes 255-byte names; ids get suffixes such as ".png" or ".tmp-<pid>"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise PtgError(f"{name}={raw!r} is not a number; set it to a positive integer such as {default}") from None
    if value <= 0:
        raise PtgError(f"{name}={raw!r} must be positive; set it to a positive integer such as {default}")
    return value


def max_pixels() -> int:
    """The pixel limit of one decoded image (``PTG_MAX_PIXELS``)."""
    return _env_int("PTG_MAX_PIXELS", DEFAULT_MAX_PIXELS)


def check_pixels(path: str | Path, height: int, width: int, pages: int = 1) -> None:
    """Refuse an image whose header declares more pixels than the limit, before it is decoded.

    Raises:
        PtgError: names the file, its declared size and the variable that raises the limit.
    """
    limit = max_pixels()
    dims = (height, width, pages)
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in dims):
        raise PtgError(f"image {path} declares an invalid size {width}x{height}x{pages}; is the file corrupt?")
    total = height * width * pages
    if total > limit:
        shown = f"{width}x{height}" + (f" x {pages} pages" if pages != 1 else "")
        raise PtgError(f"image {path} declares {shown} = {total:,} pixels, over the limit of {limit:,}; "
                       f"if the file is genuine, raise it with PTG_MAX_PIXELS={total}")


def check_preprocess_size(where: str | Path, pp: Any) -> None:
    """A recorded preprocessing (student, encoder) must resize to a side within the pixel limit.

    Raises:
        PtgError: not a mapping, a non-integer side, or a side whose square exceeds the limit.
    """
    if not isinstance(pp, dict):
        raise PtgError(f"{where}: the recorded preprocessing must be an object, got {type(pp).__name__}; the file is damaged")
    for key in ("size", "resize_short"):
        side = pp.get(key)
        if side is None and key == "resize_short":
            continue
        if not isinstance(side, int) or isinstance(side, bool) or side <= 0:
            raise PtgError(f"{where}: preprocessing {key!r} = {side!r:.40} is not a positive integer; the file is damaged")
        check_pixels(f"{where} (preprocessing {key})", side, side)


def max_params() -> int:
    """The parameter limit of a network built from recorded arguments (``PTG_MAX_PARAMS``)."""
    return _env_int("PTG_MAX_PARAMS", DEFAULT_MAX_PARAMS)


def max_modules() -> int:
    """The limit on submodules and tensors a third-party builder registers (``PTG_MAX_MODULES``)."""
    return _env_int("PTG_MAX_MODULES", DEFAULT_MAX_MODULES)


def max_weights_keys() -> int:
    """The tensor-count limit of one weights file (``PTG_MAX_WEIGHTS_KEYS``)."""
    return _env_int("PTG_MAX_WEIGHTS_KEYS", DEFAULT_MAX_WEIGHTS_KEYS)


def max_weights_bytes() -> int:
    """The declared-tensor-bytes limit of one weights file (``PTG_MAX_WEIGHTS_BYTES``)."""
    return _env_int("PTG_MAX_WEIGHTS_BYTES", DEFAULT_MAX_WEIGHTS_BYTES)


def max_pickle_bytes(max_keys: int) -> int:
    """The largest torch pickle (``data.pkl``) that can hold ``max_keys`` tensors: loading costs
    ~1-2 KB of memory per tensor record, so the pickle's size bounds memory before it is read."""
    return max_keys * PICKLE_BYTES_PER_KEY + PICKLE_BYTES_SLACK


def check_param_count(build: Any, what: str) -> int:
    """Build ``build()`` on torch's meta device (no memory) and refuse it over ``PTG_MAX_PARAMS``.

    Args:
        build: a zero-argument callable returning an ``nn.Module``.
        what: how the error names the network, e.g. "the baseline 'unet' of export E".

    Returns:
        The parameter count.
    """
    import torch

    try:
        with torch.device("meta"):
            n = sum(p.numel() for p in build().parameters())
    except (RuntimeError, OverflowError, MemoryError) as exc:  # e.g. a width whose weight size overflows int64
        if isinstance(exc, RuntimeError) and "overflow" not in str(exc).lower():
            raise
        raise PtgError(f"{what} cannot even be sized ({str(exc).splitlines()[0]:.120}); its recorded arguments are "
                       "damaged or crafted") from None
    limit = max_params()
    if n > limit:
        raise PtgError(f"{what} has {n:,} parameters, over the limit of {limit:,}; if its recorded arguments are "
                       f"genuine, raise the limit with PTG_MAX_PARAMS={n}")
    return n


class _OverBound(Exception):
    """Raised from inside a builder by `build_on_meta`'s hooks, so the build stops at the bound."""


def build_on_meta(build: Any, what: str, fix: str) -> Any:
    """Run a third-party builder (spandrel's) without allocating what it builds, bounded as it goes.

    Tensor factories without a device make meta tensors, except small ones while a 64 MiB budget
    lasts (architectures call e.g. ``torch.linspace(0, rate, depth)[i].item()`` while building);
    global registration hooks count parameters and buffers against ``PTG_MAX_PARAMS`` and
    submodules against ``PTG_MAX_MODULES`` and stop the builder the moment either is passed, so a
    file asking for 10^30 blocks costs a bounded loop, not memory. The CPU generator is restored
    (the meta build must not shift a run's later random initialisation).

    Args:
        build: a zero-argument callable (it builds and returns a module or a descriptor of one).
        what: how the error names the network, e.g. "--baseline-weights F.pth (NAFNet)".
        fix: what the user can do, ending the error line.

    Returns:
        What ``build`` returned, built on meta (its tensors hold no data).

    Raises:
        PtgError: over a bound, or any exception of the builder, in one line.
    """
    import warnings

    import torch
    from torch.nn.modules import module as nn_module

    params, modules = max_params(), max_modules()
    seen: dict[int, Any] = {}  # id -> tensor (kept alive, so an id is never reused) for tied weights
    counts: dict[str, Any] = {"elements": 0, "modules": 0, "over": None}

    def over(why: str) -> None:
        counts["over"] = why  # kept: a builder that swallows the exception is still refused below
        raise _OverBound(why)

    def on_tensor(_m: Any, _name: str, t: Any) -> None:
        on_module(_m, _name, t)  # a tensor registered costs Python memory too (convs kept in a list, unregistered)
        if t is not None and id(t) not in seen:
            seen[id(t)] = t
            counts["elements"] += t.numel()
            if counts["elements"] > params:
                over(f"more than {params:,} parameters and buffers (PTG_MAX_PARAMS)")

    def on_module(_m: Any, _name: str, _sub: Any) -> None:
        counts["modules"] += 1
        if counts["modules"] > modules:
            over(f"more than {modules:,} submodules and tensors (PTG_MAX_MODULES)")

    hooks = [nn_module.register_module_parameter_registration_hook(on_tensor),
             nn_module.register_module_buffer_registration_hook(on_tensor),
             nn_module.register_module_module_registration_hook(on_module)]
    try:
        with torch.random.fork_rng(devices=[]), _MostlyMeta(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")  # the meta load: a no-op by design
            built = build()
        if counts["over"]:
            raise _OverBound(counts["over"])
        return built
    except _OverBound as exc:
        raise PtgError(f"{what} would build a network of {exc}; refused before allocating it. {fix}") from None
    except Exception as exc:  # MemoryError, OverflowError, ValueError, KeyError, ...: the file's numbers
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PtgError(f"{what} cannot be built ({type(exc).__name__}: {first:.160}); {fix}") from None
    finally:
        for h in hooks:
            h.remove()


def _mostly_meta_mode() -> Any:
    from torch.overrides import TorchFunctionMode
    from torch.utils._device import _device_constructors

    class MostlyMeta(TorchFunctionMode):
        """Device-less tensor factories make meta tensors, except small ones while a budget lasts."""

        small, budget = 64 << 10, 64 << 20  # bytes: one helper tensor; all of them together
        from_data = {"tensor", "as_tensor", "asarray", "scalar_tensor"}  # the data is already in memory

        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = dict(kwargs or {})
            if func not in _device_constructors() or kwargs.get("device") is not None \
                    or getattr(func, "__name__", "") in self.from_data:
                return func(*args, **kwargs)
            out = func(*args, **{**kwargs, "device": "meta"})
            nbytes = out.numel() * out.element_size()
            if nbytes <= self.small and nbytes <= self.budget:
                self.budget -= nbytes
                return func(*args, **kwargs)
            return out

    return MostlyMeta()


class _MostlyMeta:
    """Context manager: `_mostly_meta_mode` (made on entry: torch is imported lazily here)."""

    def __enter__(self) -> Any:
        self._mode = _mostly_meta_mode()
        return self._mode.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._mode.__exit__(*exc)


def check_tree(obj: Any, where: str, max_depth: int | None = None, max_nodes: int = DEFAULT_MAX_NODES) -> None:
    """Refuse a parsed JSON/YAML value nested deeper than the limit or holding too many nodes."""
    max_depth = max_depth or _env_int("PTG_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH)
    stack: list[tuple[Any, int]] = [(obj, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if depth > max_depth:
            raise PtgError(f"{where} is nested deeper than {max_depth} levels; a ptg file never is (is it crafted? "
                           "raise PTG_MAX_JSON_DEPTH if it is genuine)")
        if seen > max_nodes:
            raise PtgError(f"{where} holds more than {max_nodes:,} values (or YAML aliases that expand to them); "
                           "a ptg file never does: is it crafted?")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def check_file_size(path: str | Path, what: str, limit: int | None = None) -> int:
    """Refuse a text file (JSON, YAML) larger than ``PTG_MAX_JSON_BYTES`` before reading it."""
    limit = limit or _env_int("PTG_MAX_JSON_BYTES", DEFAULT_MAX_JSON_BYTES)
    size = Path(path).stat().st_size
    if size > limit:
        raise PtgError(f"{what} {path} is {size:,} bytes, over the limit of {limit:,} for a metadata file; "
                       f"raise PTG_MAX_JSON_BYTES if it is genuine")
    return size


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Parse a JSON file a teammate may have shared: size and depth bounded, errors named.

    Raises:
        PtgError: the file is missing, too large, not JSON, or nested too deep.
    """
    path = Path(path)
    try:
        check_file_size(path, what)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PtgError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PtgError(f"cannot read {what} {path}: {exc}") from exc
    try:
        obj = json.loads(text)
    except RecursionError:
        raise PtgError(f"{what} {path} is nested too deeply to parse; is it crafted?") from None
    except ValueError as exc:
        raise PtgError(f"{what} {path} is not valid JSON: {exc}") from exc
    check_tree(obj, f"{what} {path}")
    return obj


def check_torch_zip(path: str | Path, what: str = "checkpoint", max_keys: int | None = None,
                    max_bytes: int | None = None) -> None:
    """Refuse a torch zip file that would make ``torch.load`` allocate more than it holds.

    ``torch.save`` stores its entries, so a deflated entry is crafted (a few KB that inflate to
    gigabytes inside ``torch.load``); entries declaring more bytes together than the file holds
    overlap (one stored block read once per entry); more entries than ``max_keys`` tensors could
    use, or a pickle larger than they could need, costs memory per record before any check of ours.
    The entry count is read from the zip's end record first: parsing 2 M directory entries would
    itself cost a gigabyte.
    """
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # torch's legacy format (or not a zip): torch.load's own checks apply
    keys = max_keys or max_weights_keys()
    size = Path(path).stat().st_size
    entries = _zip_entry_count(path)
    if entries is not None and entries > keys + 16:  # a tensor needs at most one storage entry; ~5 others
        raise PtgError(f"{what} {path} holds {entries:,} zip entries, more than the {keys:,} tensors a weights file may "
                       f"hold; if it is genuine, raise the limit with PTG_MAX_WEIGHTS_KEYS={entries}")
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PtgError(f"{what} {path} is a damaged zip file ({exc}); use a file written by `ptg train` or torch.save") from None
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED or i.file_size != i.compress_size]
    if packed:
        raise PtgError(f"{what} {path} holds compressed entries ({packed[0]}, ...); torch.save never compresses, so the "
                       "file was crafted or re-packed: use the original file written by `ptg train` or torch.save")
    declared = sum(i.file_size for i in infos)
    if declared > size:
        raise PtgError(f"{what} {path} has entries declaring {declared:,} bytes in a file of {size:,} (they overlap: the "
                       "file was crafted); use the original file written by `ptg train` or torch.save")
    if declared > (max_bytes or max_weights_bytes()):
        raise PtgError(f"{what} {path} holds {declared:,} bytes of tensors, over the limit of {max_bytes or max_weights_bytes():,}; "
                       f"if it is genuine, raise the limit with PTG_MAX_WEIGHTS_BYTES={declared}")
    pickles = [i.file_size for i in infos if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
    if pickles and max(pickles) > max_pickle_bytes(keys):
        raise PtgError(f"{what} {path} has a pickle of {max(pickles):,} bytes, more than {keys:,} tensors need (about "
                       f"{max(pickles) // PICKLE_BYTES_PER_KEY:,} records); if it is genuine, raise PTG_MAX_WEIGHTS_KEYS")


def _zip_entry_count(path: str | Path) -> int | None:
    """Entries a zip's end-of-central-directory record declares (zip64 included), without reading
    the directory; None where Python's reader of that record is unavailable."""
    import zipfile

    end_rec = getattr(zipfile, "_EndRecData", None)  # private, but unchanged since Python 2.6
    if end_rec is None:
        return None
    with open(path, "rb") as fh:
        rec = end_rec(fh)
    return None if not rec else int(rec[zipfile._ECD_ENTRIES_TOTAL])


def expect_type(value: Any, types: type | tuple[type, ...], key: str, where: str) -> Any:
    """``value`` if it is of ``types`` (bool is not a number), else a named error."""
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)))
    if not ok:
        names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise PtgError(f"{where}: {key!r} must be {names}, got {type(value).__name__} {value!r:.60}; "
                       "the file is damaged or was not written by ptg")
    return value


class Optional_:
    """A schema entry that may be absent or null (`check_schema`)."""

    def __init__(self, spec: Any):
        self.spec = spec


def check_schema(obj: Any, schema: Any, where: str, key: str = "") -> None:
    """Check a value parsed from a shared file against a small schema, before any field is used.

    A schema is a type or tuple of types (`expect_type`), a dict of key -> schema (the keys
    required unless wrapped in `Optional_`; other keys are allowed, for newer files), or a
    one-element list ``[schema]`` for a list of such values. Every mismatch is one named error
    instead of a KeyError or TypeError deep inside a loader.

    Args:
        obj: the parsed value.
        schema: what it must look like.
        where: the file, for the message.
        key: the dotted path of ``obj`` inside the file (for the message).

    Raises:
        PtgError: naming the dotted key, what it must be and what it is.
    """
    if isinstance(schema, Optional_):
        if obj is not None:
            check_schema(obj, schema.spec, where, key)
        return
    if isinstance(schema, dict):
        expect_type(obj, dict, key or "(top level)", where)
        for k, spec in schema.items():
            name = f"{key}.{k}" if key else k
            if k not in obj and not isinstance(spec, Optional_):
                raise PtgError(f"{where}: the key {name!r} is missing; the file is damaged or was not written by ptg")
            check_schema(obj.get(k), spec, where, name)
    elif isinstance(schema, list):
        expect_type(obj, list, key, where)
        for i, item in enumerate(obj):
            check_schema(item, schema[0], where, f"{key}[{i}]")
    else:
        expect_type(obj, schema, key, where)
