"""The priors store: a content-addressed, crash-safe Zarr v3 cache of prior vectors.

Layout of a store directory::

    STORE/zarr.json            group; its attributes are the metadata (encoder, fingerprint, ...)
    STORE/priors/              float16|float32 array [rows, views, dim], sharded along rows
    STORE/commits/shard-000012.json   the keys of shard 12, written after its data (see below)
    STORE/settings.json        a copy of the creation metadata (rebuilds a lost zarr.json)
    STORE/commits/quarantine/         commit records of shards found damaged (kept for inspection)
    STORE/writer.lock          flock'd by the one writer (holds its pid, host, start time)
    STORE/.ptg-artifact.json   marks the folder as a ptg priors store (`fsio.claim_out_dir`)

Rows are addressed by key = SHA-256 of the degraded image file's bytes, so two manifests sharing
images share rows and a changed image never meets a stale prior. Row ``shard * rows_per_shard + i``
holds the i-th key of that shard's commit record.

Crash safety. zarr-python does not make concurrent writes to one shard safe and writes a shard's
index last, so: rows are allocated in whole shards; one writer owns a shard; a shard's data is
written in one call and fsync'd, and only then is its commit record written (temp file + fsync +
atomic rename). Readers and resumed runs see only committed shards, so a shard written halfway by a
killed process is invisible and its id is reused. Committed shards are never rewritten.
One coordinator per store holds `writer.lock` (an ``flock``: the kernel releases it when its holder
dies, so two writers can never both hold it); it allocates shards and hands disjoint ones to its
workers, which write without the lock. Temporary files of dead writers are removed on the next run.

Verified reads. Each commit record holds the SHA-256 of its rows and the shard file's size. A
reader checks a shard's digest the first time it touches it (once per shard per reader); a damaged,
truncated or missing shard, or an unreadable shard index, is a `PtgError` naming the store, the
shard and its rows, never a wrong value. A writer verifies the shards it reuses and quarantines
damaged ones, whose rows are then computed again. SHA-256 (already in every commit record) rather
than a per-chunk crc32c codec: it needs no format change, covers missing and zero-filled shards
(a checksum codec does not: zarr serves a missing shard as fill values), and costs one hash
pass per shard, once per reader (17 ms per 4 MiB shard measured on this shared, loaded CPU).

Nothing ptg did not make is deleted: an existing folder is used only if it is a priors store (or
``force``), a store is never re-created over committed rows, and a store whose ``zarr.json`` is lost
is rebuilt from ``settings.json``.

The commit records, writer lock, quarantine and leftover removal are the storage engine's
(`ptg.pipeline.storage.shardstore`), shared with the image store (`ptg.pipeline.storage.imagestore`); this module
adds the Zarr array, its metadata and the prior-vector reader.

HDF5 (``.h5``) is an export format: ``keys`` (S64), ``priors`` [N, views, dim] and a ``metadata``
JSON attribute. `open_priors` reads both.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import shardstore
from ..core.errors import PtgError
from ..core.fsio import atomic_write_json, file_sha256
from .store_checks import check_hdf5_priors, check_store_metadata, check_zarr_commits, refuse_links
from .store_integrity import (  # noqa: F401  (re-exported: the store's public API)
    ARRAY, COMMITS, KIND, QUARANTINE, SAVED_META, DamagedShardWarning, _commit_path, _compat, _digest, _is_legacy_store,
    _remove_leftovers, _shard_files, _shown_diff, priors_lock, quick_health, read_commits, shard_error, shard_problem,
    shard_rows, usable_commits)
from .shardstore import cache_root  # noqa: F401  (re-exported)

SCHEMA_VERSION = 1
LOCK = shardstore.LOCK
DTYPES = ("float16", "float32")
RAM_LIMIT = 2 << 30  # stores up to 2 GiB are loaded into memory on first read (fast random batches)


def sample_keys(samples: Sequence[Any]) -> list[str]:
    """Row keys of manifest samples: the SHA-256 of each degraded file's bytes, in order."""
    # hashlib releases the GIL on large buffers: threads keep several disks/cores busy
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(lambda s: file_sha256(s.input), samples))


class RandomInitWarning(UserWarning):
    """A store was made with a randomly initialised encoder: its priors carry no knowledge."""


def default_rows_per_shard(n_views: int, dim: int, dtype: str) -> int:
    """A power of two giving shards of about 4 MiB (16..4096 rows)."""
    row = n_views * dim * np.dtype(dtype).itemsize
    rows = 1 << max(0, int(np.floor(np.log2(max(1, (4 << 20) // row)))))
    return int(min(4096, max(16, rows)))


def _is_hdf5(path: Path) -> bool:
    if path.is_file():
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    return False


# ---------------------------------------------------------------------------------------------
# Locking


@contextmanager
def writer_lock(store: Path, force: bool = False) -> Iterator[None]:
    """Claim `store` as a priors store and hold its writer lock for the block.

    Args:
        store: the store folder (created if absent).
        force: write into an existing folder that is not a priors store (nothing in it is deleted).

    Raises:
        PtgError: the folder holds something else (without ``force``), or another live writer holds the lock.
    """
    from .location import local_only

    store = local_only(store, "--out", " (this writer)", "write a local store, then publish it with "
                       "`ptg priors copy LOCAL.zarr URL`")
    with priors_lock(store, force):
        yield


# ---------------------------------------------------------------------------------------------
# Writing


def _only_zarr_files(folder: Path) -> bool:
    """Whether an array folder holds nothing but zarr's own files (so re-creating it deletes only ours)."""
    return not folder.exists() or {p.name for p in folder.iterdir()} <= {"zarr.json", "c"}


def _create_array(path: Path, metadata: dict[str, Any], rows: int, overwrite: bool) -> None:
    import zarr

    views, dim = len(metadata["views"]), int(metadata["dim"])
    inner = min(rows, 32)  # small inner chunks keep a non-RAM random read cheap
    zarr.create_array(store=path / ARRAY, shape=(0, views, dim), dtype=metadata["dtype"], chunks=(inner, views, dim),
                      shards=(rows, views, dim), fill_value=0, overwrite=overwrite)


def _repair_command(path: Path) -> str:
    return (f"move it aside and extract again: `mv {path} {path}.damaged && ptg extract-priors --manifest M "
            f"--out {path} ...` (the old folder keeps its files for inspection)")


def _rebuild_group(path: Path, metadata: dict[str, Any], commits: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """A store whose group zarr.json is lost but whose commits survive: rebuild it from settings.json."""
    import zarr

    saved_path = path / SAVED_META
    if not saved_path.is_file():
        raise PtgError(f"the priors store {path} has {len(commits)} committed shard(s) but its zarr.json is lost and it "
                       f"predates {SAVED_META}, so its settings cannot be rebuilt safely; {_repair_command(path)}")
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    if _compat(saved) != _compat(metadata):
        raise PtgError(f"the priors store {path} lost its zarr.json, and its saved settings differ from this run's "
                       f"({_shown_diff(_compat(saved), _compat(metadata))}); run again with the store's settings "
                       "to rebuild it, or use another --out")
    rows = int(saved["rows_per_shard"])
    if not (path / ARRAY / "zarr.json").is_file():
        if not _only_zarr_files(path / ARRAY):
            raise PtgError(f"{path / ARRAY} holds files ptg did not write; {_repair_command(path)}")
        _create_array(path, saved, rows, overwrite=False)  # metadata only: shard files are kept
        n = (max(commits) + 1) * rows
        zarr.open_array(path / ARRAY, mode="r+").resize((n, len(saved["views"]), int(saved["dim"])))
    meta = {**saved, "repaired": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    zarr.create_group(store=path, attributes=meta, overwrite=False)
    return meta


def create_or_open_store(path: Path, metadata: dict[str, Any], rows_per_shard: int | None = None) -> dict[str, Any]:
    """Create a store with `metadata` or check that an existing one is compatible; return its metadata.

    Call with the writer lock held. `metadata` must hold encoder, fingerprint, dim, views, dtype.
    An existing store is never re-created over committed rows: a store with none (e.g. left by a
    run stopped by a bad input) takes the new settings; one whose zarr.json is lost is rebuilt.
    """
    import zarr

    commits = read_commits(path)
    if (path / "zarr.json").is_file():
        group = zarr.open_group(path, mode="r+")
        have = dict(group.attrs)
        if have.get("schema_version") != SCHEMA_VERSION:
            raise PtgError(f"{path} is a priors store of schema {have.get('schema_version')!r}, this ptg writes {SCHEMA_VERSION}; use a new --out")
        diff = _shown_diff(_compat(have), _compat(metadata))
        if diff and commits:
            raise PtgError(f"the priors store {path} was made with other settings ({diff}). Use another --out, or the store's own settings.")
        if not diff:
            true_rows = zarr.open_array(path / ARRAY, mode="r").shards[0]
            if have.get("rows_per_shard") != true_rows:  # zarr.json edited: the array's sharding is the truth
                group.attrs.update({"rows_per_shard": true_rows})
                have["rows_per_shard"] = true_rows
            return have
        if not _only_zarr_files(path / ARRAY):
            raise PtgError(f"{path / ARRAY} holds files ptg did not write; {_repair_command(path)}")
        # no committed row: nothing to lose, the empty skeleton takes this run's settings
    elif commits:
        return _rebuild_group(path, metadata, commits)
    elif not _only_zarr_files(path / ARRAY):
        raise PtgError(f"{path / ARRAY} holds files ptg did not write; choose another --out")
    if metadata["dtype"] not in DTYPES:
        raise PtgError(f"--dtype {metadata['dtype']!r} is not supported; use float16 or float32")
    rows = rows_per_shard or default_rows_per_shard(len(metadata["views"]), int(metadata["dim"]), metadata["dtype"])
    if rows % min(rows, 32):
        raise PtgError(f"--rows-per-shard {rows} must be a multiple of 32")
    # The array and the saved settings first, the group's zarr.json (all metadata, written atomically)
    # last: a run killed in between leaves no group and no commit, and the next run creates the store again.
    (path / COMMITS).mkdir(parents=True, exist_ok=True)
    _create_array(path, metadata, rows, overwrite=True)  # holds no committed row (checked above)
    meta = {**metadata, "schema_version": SCHEMA_VERSION, "rows_per_shard": rows, "layout": "priors[row, view, dim]",
            "skipped": [], "runs": []}
    atomic_write_json(path / SAVED_META, meta)
    if (path / "zarr.json").is_file():
        zarr.open_group(path, mode="r+").attrs.put(meta)  # replace the skeleton's attributes, delete nothing
    else:
        zarr.create_group(store=path, attributes=meta, overwrite=False)
    return meta


def allocate_shards(path: Path, n_shards: int) -> list[int]:
    """Ids of `n_shards` uncommitted shards (lowest first) and grow the array to hold them.

    Call with the writer lock held. Half-written shards of killed runs are uncommitted, so their
    ids come back here and are overwritten whole.
    """
    import zarr

    ids = shardstore.free_ids(read_commits(path), n_shards)
    arr = zarr.open_array(path / ARRAY, mode="r+")
    rows = arr.shards[0]
    need = (max(ids) + 1) * rows if ids else 0
    if need > arr.shape[0]:
        arr.resize((need,) + arr.shape[1:])
    return ids


def write_shard(path: Path, shard: int, keys: Sequence[str], values: np.ndarray, arr: Any = None) -> None:
    """Write one shard's rows, make them durable, then commit them (the commit is what readers see).

    Args:
        path: the store.
        shard: a shard id this writer owns (from `allocate_shards`).
        keys: row keys, at most rows_per_shard.
        values: [len(keys), views, dim] in any float dtype; cast to the store's dtype.
        arr: an open zarr array of the store, to skip reopening it.
    """
    import zarr

    arr = arr if arr is not None else zarr.open_array(path / ARRAY, mode="r+")
    rows = arr.shards[0]
    if len(keys) > rows or len(keys) != len(values):
        raise ValueError(f"shard {shard}: {len(keys)} keys, {len(values)} rows, capacity {rows}")
    data = np.asarray(values).astype(arr.dtype)
    full = np.zeros((rows,) + arr.shape[1:], dtype=arr.dtype)  # the whole shard in one write: no read-modify-write
    full[: len(keys)] = data
    # zarr reads an existing shard file before rewriting it; the file of an uncommitted id is left
    # by a killed or quarantined write and may be garbage: remove it (this writer owns the id)
    for f in _shard_files(path, shard):
        f.unlink()
    arr[shard * rows : (shard + 1) * rows] = full
    size = 0
    for f in _shard_files(path, shard):
        with open(f, "rb+") as fh:
            os.fsync(fh.fileno())
        size += f.stat().st_size
    rec = {"shard": shard, "n": len(keys), "keys": list(keys), "sha256": _digest(data), "bytes": size}
    shardstore.write_commit(path, shard, rec)


def update_metadata(path: Path, **fields: Any) -> None:
    """Merge fields into the store's metadata (lock held)."""
    import zarr

    group = zarr.open_group(path, mode="r+")
    group.attrs.update(fields)


def store_nbytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Reading


class PriorsReader:
    """Read-only access to a priors store (Zarr v3 directory or HDF5 export).

    Keeps a key -> row index in memory; `get` reads rows with one vectorised call. Stores up to
    `RAM_LIMIT` are loaded whole into memory on the first `get`.
    """

    def __init__(self, path: Path, metadata: dict[str, Any], keys: list[str], rows: np.ndarray,
                 loader: Any, in_memory: bool, fmt: str, commits: dict[int, dict[str, Any]] | None = None):
        self.path = path
        self.shown: str | Path = path  # how messages name the store (a bucket URL for its mirror)
        self._commits = commits or {}  # zarr: shard -> commit record, checked on first touch
        self._checked: set[int] = set()
        self._unreadable: dict[int, str] = {}  # shards that failed to load into memory
        self.metadata = metadata
        self.format = fmt
        self._index = {k: int(r) for k, r in zip(keys, rows)}
        self._loader = loader  # zarr array or h5 dataset or ndarray
        self._data: np.ndarray | None = loader if isinstance(loader, np.ndarray) else None
        self._in_memory = in_memory
        self.views: tuple[str, ...] = tuple(metadata["views"])
        self._view_index = {v: i for i, v in enumerate(self.views)}
        self.dim: int = int(metadata["dim"])

    @property
    def random_init(self) -> bool:
        return bool(self.metadata.get("random_init"))

    @property
    def fingerprint(self) -> str:
        return str(self.metadata.get("fingerprint"))

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> set[str]:
        return set(self._index)

    def missing(self, keys: Sequence[str]) -> list[str]:
        return [k for k in keys if k not in self._index]

    def _rows(self, keys: Sequence[str]) -> np.ndarray:
        idx = self._index
        try:
            return np.fromiter((idx[k] for k in keys), dtype=np.int64, count=len(keys))
        except KeyError:
            miss = self.missing(keys)
            shown = ", ".join(m[:16] for m in miss[:5])
            raise PtgError(
                f"{len(miss)} of {len(keys)} keys are not in the priors store {self.shown} (e.g. {shown}...). "
                "Run `ptg extract-priors` on the manifest holding those images with this store as --out."
            ) from None

    def _ensure_loaded(self) -> None:
        if self._data is None and self._in_memory:
            n = (max(self._index.values()) + 1) if self._index else 0
            if self.format != "zarr":
                self._data = np.asarray(self._loader[:n])
                return
            # shard by shard, so one unreadable shard fails only the reads that touch it
            data = np.zeros((n,) + tuple(self._loader.shape[1:]), self._loader.dtype)
            rps = int(self.metadata["rows_per_shard"])
            for shard, rec in self._commits.items():
                lo = shard * rps
                try:
                    data[lo : lo + rec["n"]] = self._loader[lo : lo + rec["n"]]
                except Exception as exc:  # zarr's checksum/decoder errors for a damaged shard
                    self._unreadable[shard] = f"cannot be read ({type(exc).__name__}: {exc})"
            self._data = data

    def _check(self, rows: np.ndarray) -> None:
        """Verify each shard holding `rows` against its commit digest, the first time it is touched."""
        if self.format != "zarr" or len(rows) == 0:
            return
        rps = int(self.metadata["rows_per_shard"])
        for shard in np.unique(rows // rps).tolist():
            if shard in self._checked:
                continue
            rec = self._commits[shard]
            problem = self._unreadable.get(shard)
            if problem is None:
                data = self._data[shard * rps : shard * rps + rec["n"]] if self._data is not None else None
                problem = shard_problem(self.path, shard, rec, rps, data=data, arr=self._loader)
            if problem is not None:
                raise shard_error(self.shown, shard, rec, rps, problem)  # type: ignore[arg-type]
            self._checked.add(shard)

    def get(self, keys: Sequence[str], view: str = "identity") -> np.ndarray:
        """Priors of `keys` for one view, float32 [len(keys), dim].

        Raises:
            PtgError: a key not in the store, or a view the store does not hold.
        """
        vi = self._view_index.get(view)
        if vi is None:
            raise PtgError(f"view {view!r} is not in the priors store {self.shown}; it holds {', '.join(self.views[:12])}"
                           f"{'...' if len(self.views) > 12 else ''}. Re-extract with the --views you need.")
        rows = self._rows(keys)
        self._ensure_loaded()
        self._check(rows)
        if self._data is not None:
            return self._data[rows, vi].astype(np.float32)
        if len(rows) == 0:
            return np.zeros((0, self.dim), np.float32)
        uniq, inv = np.unique(rows, return_inverse=True)  # orthogonal reads want sorted unique rows
        if self.format == "zarr":
            block = self._loader.oindex[uniq, vi]
        else:
            block = self._loader[uniq, vi]
        return np.asarray(block, dtype=np.float32)[inv]

    def get_all_views(self, keys: Sequence[str]) -> np.ndarray:
        """Priors of `keys` for every view, float32 [len(keys), views, dim]."""
        rows = self._rows(keys)
        self._ensure_loaded()
        self._check(rows)
        if self._data is not None:
            return self._data[rows].astype(np.float32)
        uniq, inv = np.unique(rows, return_inverse=True)
        block = self._loader.oindex[uniq] if self.format == "zarr" else self._loader[uniq]
        return np.asarray(block, dtype=np.float32)[inv]

    def verify(self) -> list[int]:
        """Shard ids whose stored bytes no longer match their commit digest (zarr stores)."""
        if self.format != "zarr":
            return []
        rows = int(self.metadata["rows_per_shard"])
        return sorted(s for s, rec in self._commits.items() if shard_problem(self.path, s, rec, rows, arr=self._loader))


def open_priors(path: str | Path, expect_fingerprint: str | None = None, in_memory: bool | None = None) -> PriorsReader:
    """Open a priors store (Zarr v3 directory) or an HDF5 export for reading.

    Args:
        path: the store directory, the ``.h5`` file, or a bucket URL (``s3://bucket/prefix``: mirrored first).
        expect_fingerprint: refuse a store whose encoder weights fingerprint differs.
        in_memory: load all rows into RAM on first read; None = when the store is under 2 GiB.

    Raises:
        PtgError: not a priors store, or a fingerprint other than the one expected.
    """
    from .location import parse_location

    loc = parse_location(path, "the priors store")
    if not loc.remote:
        return _open_local(Path(loc.path), Path(loc.path), expect_fingerprint, in_memory)  # type: ignore[arg-type]
    from .storecopy import mirror

    folder = mirror(loc)  # a bucket store is read through its verified local mirror ($PTG_CACHE/remote/...)
    try:
        reader = _open_local(folder, loc.url, expect_fingerprint, in_memory)
    except PtgError as exc:  # messages name the store the user named, not the mirror folder
        raise PtgError(str(exc).replace(str(folder), loc.url)) from exc
    return reader


def _open_local(path: Path, shown: str | Path, expect_fingerprint: str | None, in_memory: bool | None) -> PriorsReader:
    """`open_priors` of a local store or export; ``shown`` names it in messages (a bucket URL for a mirror)."""
    if _is_hdf5(path):
        reader = _open_hdf5(path)
    elif (path / "zarr.json").is_file():
        reader = _open_zarr(path, in_memory)
    elif any((path / COMMITS).glob("shard-*.json")):
        raise PtgError(f"the priors store {path} has lost its zarr.json (its commit records are intact); rebuild it by "
                       f"running `ptg extract-priors` again with --out {path} and the store's settings")
    else:
        raise PtgError(f"{path} is not a priors store (no zarr.json) nor an HDF5 export; pass the --out of `ptg extract-priors`")
    if expect_fingerprint is not None and reader.fingerprint != expect_fingerprint:
        raise PtgError(f"the priors store {shown} was made with encoder weights {reader.fingerprint}, not the expected "
                       f"{expect_fingerprint}; re-extract with the expected weights or drop the fingerprint check.")
    if reader.random_init:
        warnings.warn(f"the priors store {shown} was made with a RANDOMLY INITIALISED encoder "
                      f"({reader.metadata.get('encoder', {}).get('name')}): its priors carry no pre-trained knowledge. "
                      "Use it for tests only.", RandomInitWarning, stacklevel=3)
    reader.shown = shown
    return reader


def _open_zarr(path: Path, in_memory: bool | None) -> PriorsReader:
    import zarr

    refuse_links(path)  # a symlinked shard or commits/ would serve another file's bytes
    try:
        group = zarr.open_group(path, mode="r")
        meta = dict(group.attrs)
        arr = zarr.open_array(path / ARRAY, mode="r")
    except Exception as exc:
        raise PtgError(f"cannot open the priors store {path}: {exc}") from exc
    if "fingerprint" not in meta or "views" not in meta:
        raise PtgError(f"{path} is a Zarr store but not a ptg priors store (no fingerprint/views metadata)")
    rows = int(check_store_metadata(path, meta)["rows_per_shard"])
    if rows != arr.shards[0]:  # zarr.json edited: rows would be looked up in the wrong places
        raise PtgError(f"the priors store {path}: zarr.json says rows_per_shard {rows} but its array is sharded by "
                       f"{arr.shards[0]} rows, so every row address would be wrong. Repair: set \"rows_per_shard\": "
                       f"{arr.shards[0]} in {path / 'zarr.json'}, or run `ptg extract-priors` again with --out {path}.")
    commits = read_commits(path)
    check_zarr_commits(path, arr, commits, rows)  # row counts and declared sizes, before any read
    keys: list[str] = []
    row_ids: list[np.ndarray] = []
    first: dict[str, int] = {}  # key -> the shard that committed it
    for shard, rec in sorted(commits.items()):
        for k in rec["keys"]:
            if k in first:  # the writer commits a key once: which row is right cannot be told from the store
                raise PtgError(f"the priors store {path}: key {k[:16]}... is committed in shard {first[k]} and again "
                               f"in shard {shard} (or twice in one); the store is damaged or crafted and neither row "
                               f"is served. Move one of their records in {path / 'commits'} aside and run `ptg "
                               f"extract-priors` again on the store")
            first[k] = shard
            keys.append(k)
        row_ids.append(shard * rows + np.arange(rec["n"]))
    all_rows = np.concatenate(row_ids) if row_ids else np.zeros(0, np.int64)
    n = (int(all_rows.max()) + 1) if len(all_rows) else 0
    nbytes = n * int(np.prod(arr.shape[1:])) * arr.dtype.itemsize
    load = in_memory if in_memory is not None else nbytes <= RAM_LIMIT
    return PriorsReader(path, meta, keys, all_rows, arr, load, "zarr", commits)


def _open_hdf5(path: Path) -> PriorsReader:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            meta = check_store_metadata(path, json.loads(f.attrs["metadata"]), zarr_store=False)
            check_hdf5_priors(f, path)  # own bytes only, sizes bounded, one key per row
            keys = [k.decode() for k in f["keys"][...]]
            data = f["priors"][...]  # exports are read whole: they are made for tools, not for 100 GB
    except (OSError, KeyError, ValueError) as exc:
        raise PtgError(f"{path} is not a ptg priors HDF5 export ({exc}); make one with `ptg priors export`") from exc
    return PriorsReader(path, meta, keys, np.arange(len(keys)), data, True, "hdf5")


def export_hdf5(src: str | Path, out: str | Path) -> Path:
    """Write every committed row of a store to an HDF5 file (atomically: temp file + rename).

    Datasets: ``keys`` (S64, sorted), ``priors`` [N, views, dim] in the store's dtype; attribute
    ``metadata`` = the store's metadata as JSON (plus ``exported_from``).
    """
    import h5py

    from .location import local_only

    out = local_only(out, "--out", " (an HDF5 export)", "export locally, then upload the file with your bucket's tool")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)  # the metadata carries random_init along
        reader = open_priors(src, in_memory=False)
    keys = sorted(reader.keys())
    data = reader.get_all_views(keys).astype(reader.metadata.get("dtype", "float32"))
    meta = {**reader.metadata, "exported_from": str(src) if "://" in str(src) else str(Path(src).resolve())}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("keys", data=np.array([k.encode() for k in keys], dtype="S64"))
        f.create_dataset("priors", data=data, chunks=True if len(keys) else None)
        f.attrs["metadata"] = json.dumps(meta)
    os.replace(tmp, out)
    return out
