"""Bounds on what a shared file may make ptg allocate, checked before the allocation.

A file a teammate shares is input: its header can claim any size. Every decoder and loader asks
this module first, so a 17 KB PNG that declares 144 Mpx, a TIFF with 2000 pages or a JSON file
nested a million levels deep ends in one named error instead of gigabytes of memory.

Limits are read from the environment at call time, so every command honours them without a flag
of its own (raise one for a genuinely large file):

- ``PTG_MAX_PIXELS`` (default 64 Mpx, e.g. 8192×8192): pixels of one decoded image, all pages.
- ``PTG_MAX_JSON_BYTES`` (default 64 MiB) and ``PTG_MAX_JSON_DEPTH`` (default 64): a JSON or YAML
  document read from a shared file (store metadata, export configs, run configs).
- ``PTG_MAX_PARAMS`` (default 500 M): parameters of a network built from recorded arguments.
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


def check_torch_zip(path: str | Path, what: str = "checkpoint") -> None:
    """Refuse a torch zip file whose entries are compressed: ``torch.save`` stores them, so a
    deflated entry is crafted (a few KB that inflate to gigabytes inside ``torch.load``)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # torch's legacy format (or not a zip): torch.load's own checks apply
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise PtgError(f"{what} {path} is a damaged zip file ({exc}); use a file written by `ptg train` or torch.save") from None
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED or i.file_size != i.compress_size]
    if packed:
        raise PtgError(f"{what} {path} holds compressed entries ({packed[0]}, ...); torch.save never compresses, so the "
                       "file was crafted or re-packed: use the original file written by `ptg train` or torch.save")


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
