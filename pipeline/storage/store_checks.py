"""Checks on a priors store or HDF5 export that a teammate shared, made before anything is read.

A store is a folder of files anyone may edit: its commit records are JSON, its array metadata
declares shapes, an HDF5 export may hold links to other files. The store's reader calls these
checks first, so a crafted store ends in one named error:

- `check_commit_record`: every field of a commit record has the type and range a writer gives it
  (``"n": 1e9`` or a string digest would otherwise drive a billion-row allocation or a traceback).
- `refuse_links`: no symlink anywhere inside a zarr store (a symlinked shard file or ``commits/``
  would serve another file's bytes, or let a writer write through it).
- `check_declared_bytes`: the bytes the array metadata declares for the committed rows are
  plausible for the bytes on disk (a declared dim of 2^27 in a 32 KB store is refused unread).
- `check_hdf5_dataset`: an HDF5 dataset is an ordinary dataset of that file: no external
  storage, external or soft link, or virtual dataset, and its declared size is plausible too.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..core.errors import PtgError
from ..core.fsio import find_symlink

MAX_KEY_CHARS = 128  # row keys are SHA-256 hex digests (64) or short ids
MAX_RATIO = 1000  # declared bytes per stored byte: even one-hot degradation priors stay far below
SLACK = 64 << 20  # bytes allowed on top of the ratio (small or constant stores compress without bound)
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _bad(path: Path, what: str) -> PtgError:
    return PtgError(f"the commit record {path} {what}; the store is damaged or crafted. Repair: run "
                    "`ptg extract-priors` again with --out on the store (it re-computes damaged shards)")


def check_commit_record(path: Path, rec: Any, rows_per_shard: int | None = None) -> dict[str, Any]:
    """``rec`` if it is a well-formed commit record of the shard its file name says, else a named error."""
    if not isinstance(rec, dict):
        raise _bad(path, f"is a JSON {type(rec).__name__}, not an object")
    shard, n, keys = rec.get("shard"), rec.get("n"), rec.get("keys")
    for key, value in (("shard", shard), ("n", n)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _bad(path, f"has {key!r} = {value!r:.40}, not a non-negative integer")
    if path.name != f"shard-{shard:06d}.json":
        raise _bad(path, f"says shard {shard}, but its file name says otherwise")
    if rows_per_shard is not None and n > rows_per_shard:
        raise _bad(path, f"declares {n} rows in a shard of {rows_per_shard}")
    if not isinstance(keys, list) or len(keys) != n:
        raise _bad(path, f"has {len(keys) if isinstance(keys, list) else type(keys).__name__} keys for 'n' = {n}")
    if not all(isinstance(k, str) and 0 < len(k) <= MAX_KEY_CHARS for k in keys):
        raise _bad(path, f"has a key that is not a string of 1..{MAX_KEY_CHARS} characters")
    if not isinstance(rec.get("sha256"), str) or not _HEX64.fullmatch(rec["sha256"]):
        raise _bad(path, "has no valid 'sha256' digest")
    if "bytes" in rec and (not isinstance(rec["bytes"], int) or isinstance(rec["bytes"], bool) or rec["bytes"] < 0):
        raise _bad(path, f"has 'bytes' = {rec['bytes']!r:.40}, not a non-negative integer")
    return rec


def check_store_metadata(where: Path, meta: Any, zarr_store: bool = True) -> dict[str, Any]:
    """``meta`` if its fields have the types a writer gives them (before any is used), else a named error."""
    def bad(key: str) -> PtgError:
        shown = repr(meta.get(key)) if isinstance(meta, dict) else type(meta).__name__
        return PtgError(f"the priors store {where}: metadata {key!r} = {shown:.60} has the wrong type or range; the "
                        "store is damaged or crafted. Repair: run `ptg extract-priors` again, or `ptg priors export` again")

    if not isinstance(meta, dict):
        raise bad("(metadata)")
    views = meta.get("views")
    if not isinstance(views, list) or not views or len(views) > 64 or not all(isinstance(v, str) and v for v in views):
        raise bad("views")
    if not isinstance(meta.get("dim"), int) or isinstance(meta.get("dim"), bool) or not 0 < meta["dim"] <= 1 << 20:
        raise bad("dim")
    if meta.get("dtype", "float32") not in ("float16", "float32"):
        raise bad("dtype")
    rows = meta.get("rows_per_shard")
    if zarr_store and (not isinstance(rows, int) or isinstance(rows, bool) or rows <= 0):
        raise bad("rows_per_shard")
    return meta


def refuse_links(store: Path) -> None:
    """Refuse a zarr store holding a symlink anywhere (shard files, ``commits/``, ``priors/``)."""
    link = find_symlink(store)
    if link is not None:
        raise PtgError(f"the priors store {store} holds a symbolic link, {link}; ptg reads a store only from its own "
                       "files: copy the real files in (or re-extract) instead of linking them")


def check_declared_bytes(where: Path, declared: int, on_disk: int, fix: str) -> None:
    """Refuse metadata declaring far more bytes than the files hold (before they are read whole)."""
    if declared > MAX_RATIO * on_disk + SLACK:
        raise PtgError(f"{where} declares {declared:,} bytes of priors but its files hold {on_disk:,}; the shape in its "
                       f"metadata is damaged or crafted. {fix}")


def check_zarr_commits(store: Path, arr: Any, commits: dict[int, dict[str, Any]], rows_per_shard: int) -> None:
    """Commit records fit the array (row counts, shard ids) and its declared row size fits the files."""
    for shard, rec in commits.items():
        where = store / "commits" / f"shard-{shard:06d}.json"
        if rec["n"] > rows_per_shard:
            raise _bad(where, f"declares {rec['n']} rows in a shard of {rows_per_shard}")
        if shard * rows_per_shard + rec["n"] > arr.shape[0]:
            raise _bad(where, f"names rows past the end of the array ({arr.shape[0]} rows)")
    n_rows = sum(rec["n"] for rec in commits.values())
    row_bytes = 1
    for d in arr.shape[1:]:
        row_bytes *= int(d)
    on_disk = sum(p.stat().st_size for p in (store / "priors").rglob("*") if p.is_file())
    check_declared_bytes(store, n_rows * row_bytes * arr.dtype.itemsize, on_disk,
                         f"Repair: run `ptg extract-priors` again with --out {store}.")


def check_hdf5_dataset(f: Any, name: str, path: Path) -> Any:
    """The dataset ``name`` of the open h5py file ``f``, if it is stored in this file only.

    Raises:
        PtgError: missing, a link (external, soft) instead of a dataset, a virtual dataset, a
            dataset with external raw storage, or a size the file cannot hold.
    """
    import h5py

    fix = "make the export again with `ptg priors export` (a ptg export holds plain datasets only)"
    link = f.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        kind = type(link).__name__ if link is not None else "nothing"
        raise PtgError(f"{path}: {name!r} is {kind}, not a dataset stored in the file; ptg never follows HDF5 links "
                       f"to other files. {fix}")
    ds = f[name]
    if not isinstance(ds, h5py.Dataset):
        raise PtgError(f"{path}: {name!r} is not a dataset. {fix}")
    if ds.is_virtual or ds.external:
        how = "a virtual dataset" if ds.is_virtual else f"stored in external file(s) {ds.external}"
        raise PtgError(f"{path}: {name!r} is {how}; ptg reads an export only from its own bytes. {fix}")
    check_declared_bytes(path, int(ds.size) * ds.dtype.itemsize, path.stat().st_size, fix.capitalize() + ".")
    return ds


def check_hdf5_priors(f: Any, path: Path) -> None:
    """Both datasets of a priors export plain (`check_hdf5_dataset`), one ``keys`` row per ``priors`` row."""
    keys, priors = check_hdf5_dataset(f, "keys", path), check_hdf5_dataset(f, "priors", path)
    if keys.ndim != 1 or priors.ndim != 3 or keys.shape[0] != priors.shape[0]:
        raise PtgError(f"{path}: 'keys' {keys.shape} and 'priors' {priors.shape} do not match (one key per [views, dim] "
                       "row expected); make the export again with `ptg priors export`")
