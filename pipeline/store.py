"""The priors store: a content-addressed, crash-safe Zarr v3 cache of prior vectors.

Layout of a store directory::

    STORE/zarr.json            group; its attributes are the metadata (encoder, fingerprint, ...)
    STORE/priors/              float16|float32 array [rows, views, dim], sharded along rows
    STORE/commits/shard-000012.json   the keys of shard 12, written after its data (see below)
    STORE/writer.lock          present while a writer runs (pid, host, start time)

Rows are addressed by key = SHA-256 of the degraded image file's bytes, so two manifests sharing
images share rows and a changed image never meets a stale prior. Row ``shard * rows_per_shard + i``
holds the i-th key of that shard's commit record.

Crash safety. zarr-python does not make concurrent writes to one shard safe and writes a shard's
index last, so: rows are allocated in whole shards; one writer owns a shard; a shard's data is
written in one call and fsync'd, and only then is its commit record written (temp file + fsync +
atomic rename). Readers and resumed runs see only committed shards, so a shard written halfway by a
killed process is invisible and its id is reused. Committed shards are never rewritten.
One coordinator per store holds `writer.lock` (stale locks of dead local processes are taken
over); it allocates shards and hands disjoint ones to its workers, which write without the lock.

HDF5 (``.h5``) is an export format: ``keys`` (S64), ``priors`` [N, views, dim] and a ``metadata``
JSON attribute. `open_priors` reads both.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import PtgError
from .imageio import file_sha256

SCHEMA_VERSION = 1
ARRAY = "priors"
COMMITS = "commits"
LOCK = "writer.lock"
DTYPES = ("float16", "float32")
RAM_LIMIT = 2 << 30  # stores up to 2 GiB are loaded into memory on first read (fast random batches)


def sample_keys(samples: Sequence[Any]) -> list[str]:
    """Row keys of manifest samples: the SHA-256 of each degraded file's bytes, in order."""
    # hashlib releases the GIL on large buffers: threads keep several disks/cores busy
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(lambda s: file_sha256(s.input), samples))


class RandomInitWarning(UserWarning):
    """A store was made with a randomly initialised encoder: its priors carry no knowledge."""


def cache_root() -> Path:
    """``$PTG_CACHE`` or ``~/.cache/ptg``: where default stores live, shared by all experiments."""
    return Path(os.environ.get("PTG_CACHE") or Path.home() / ".cache" / "ptg").expanduser()


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


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _digest(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def _commit_path(store: Path, shard: int) -> Path:
    return store / COMMITS / f"shard-{shard:06d}.json"


def read_commits(store: Path) -> dict[int, dict[str, Any]]:
    """Committed shards of a store: shard id -> record (keys, n, sha256)."""
    out: dict[int, dict[str, Any]] = {}
    d = store / COMMITS
    if not d.is_dir():
        return out
    for p in d.glob("shard-*.json"):
        rec = json.loads(p.read_text(encoding="utf-8"))  # written atomically: always whole
        out[int(rec["shard"])] = rec
    return out


# ---------------------------------------------------------------------------------------------
# Locking


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: it holds nothing
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@contextmanager
def writer_lock(store: Path) -> Iterator[None]:
    """Hold the store's writer lock; refuse clearly if another live writer holds it."""
    store.mkdir(parents=True, exist_ok=True)
    lock = store / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                other = json.loads(lock.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                other = {}
            if other.get("host") == me["host"] and isinstance(other.get("pid"), int) and not _pid_alive(other["pid"]):
                lock.unlink(missing_ok=True)  # stale: its process is gone (e.g. killed); take over
                continue
            raise PtgError(
                f"the priors store {store} is being written by pid {other.get('pid', '?')} on host "
                f"{other.get('host', '?')} since {other.get('started', '?')}. Wait for it to finish, or, if that "
                f"process is gone, delete {lock} and run again."
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Writing


def _compat(meta: dict[str, Any]) -> dict[str, Any]:
    enc = meta.get("encoder", {})
    return {
        "encoder": enc.get("name"),
        "fingerprint": meta.get("fingerprint"),
        "preprocessing": enc.get("preprocessing"),
        "pooling": enc.get("pooling"),
        "details": enc.get("details"),
        "dim": meta.get("dim"),
        "views": list(meta.get("views", [])),
        "dtype": meta.get("dtype"),
    }


def create_or_open_store(path: Path, metadata: dict[str, Any], rows_per_shard: int | None = None) -> dict[str, Any]:
    """Create a store with `metadata` or check that an existing one is compatible; return its metadata.

    Call with the writer lock held. `metadata` must hold encoder, fingerprint, dim, views, dtype.
    """
    import zarr

    if (path / "zarr.json").is_file():
        group = zarr.open_group(path, mode="r+")
        have = dict(group.attrs)
        if have.get("schema_version") != SCHEMA_VERSION:
            raise PtgError(f"{path} is a priors store of schema {have.get('schema_version')!r}, this ptg writes {SCHEMA_VERSION}; use a new --out")
        a, b = _compat(have), _compat(metadata)
        diff = [k for k in a if a[k] != b[k]]
        if diff:
            shown = "; ".join(f"{k}: store has {a[k]!r}, this run {b[k]!r}" for k in diff)
            raise PtgError(f"the priors store {path} was made with other settings ({shown[:600]}). Use another --out, or the store's own settings.")
        return have
    if metadata["dtype"] not in DTYPES:
        raise PtgError(f"--dtype {metadata['dtype']!r} is not supported; use float16 or float32")
    views, dim = len(metadata["views"]), int(metadata["dim"])
    rows = rows_per_shard or default_rows_per_shard(views, dim, metadata["dtype"])
    inner = min(rows, 32)  # small inner chunks keep a non-RAM random read cheap
    if rows % inner:
        raise PtgError(f"--rows-per-shard {rows} must be a multiple of {inner}")
    # The array first, the group's zarr.json (with all metadata, written atomically) last: a run
    # killed in between leaves no group, and the next run simply creates the store again.
    (path / COMMITS).mkdir(parents=True, exist_ok=True)
    zarr.create_array(store=path / ARRAY, shape=(0, views, dim), dtype=metadata["dtype"], chunks=(inner, views, dim),
                      shards=(rows, views, dim), fill_value=0, overwrite=True)
    meta = {**metadata, "schema_version": SCHEMA_VERSION, "rows_per_shard": rows, "layout": "priors[row, view, dim]",
            "skipped": [], "runs": []}
    zarr.create_group(store=path, attributes=meta, overwrite=False)
    return meta


def allocate_shards(path: Path, n_shards: int) -> list[int]:
    """Ids of `n_shards` uncommitted shards (lowest first) and grow the array to hold them.

    Call with the writer lock held. Half-written shards of killed runs are uncommitted, so their
    ids come back here and are overwritten whole.
    """
    import zarr

    committed = set(read_commits(path))
    ids, i = [], 0
    while len(ids) < n_shards:
        if i not in committed:
            ids.append(i)
        i += 1
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
    arr[shard * rows : (shard + 1) * rows] = full
    shard_dir = path / ARRAY / "c" / str(shard)
    for f in shard_dir.rglob("*") if shard_dir.exists() else ():
        if f.is_file():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
    rec = {"shard": shard, "n": len(keys), "keys": list(keys), "sha256": _digest(data)}
    _atomic_write_text(_commit_path(path, shard), json.dumps(rec))


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
                 loader: Any, in_memory: bool, fmt: str):
        self.path = path
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
                f"{len(miss)} of {len(keys)} keys are not in the priors store {self.path} (e.g. {shown}...). "
                "Run `ptg extract-priors` on the manifest holding those images with this store as --out."
            ) from None

    def _ensure_loaded(self) -> None:
        if self._data is None and self._in_memory:
            n = (max(self._index.values()) + 1) if self._index else 0
            self._data = np.asarray(self._loader[:n])

    def get(self, keys: Sequence[str], view: str = "identity") -> np.ndarray:
        """Priors of `keys` for one view, float32 [len(keys), dim].

        Raises:
            PtgError: a key not in the store, or a view the store does not hold.
        """
        vi = self._view_index.get(view)
        if vi is None:
            raise PtgError(f"view {view!r} is not in the priors store {self.path}; it holds {', '.join(self.views[:12])}"
                           f"{'...' if len(self.views) > 12 else ''}. Re-extract with the --views you need.")
        rows = self._rows(keys)
        self._ensure_loaded()
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
        if self._data is not None:
            return self._data[rows].astype(np.float32)
        uniq, inv = np.unique(rows, return_inverse=True)
        block = self._loader.oindex[uniq] if self.format == "zarr" else self._loader[uniq]
        return np.asarray(block, dtype=np.float32)[inv]

    def verify(self) -> list[int]:
        """Shard ids whose stored bytes no longer match their commit digest (zarr stores)."""
        if self.format != "zarr":
            return []
        bad = []
        rows = int(self.metadata["rows_per_shard"])
        for shard, rec in read_commits(self.path).items():
            data = np.asarray(self._loader[shard * rows : shard * rows + rec["n"]])
            if _digest(data) != rec["sha256"]:
                bad.append(shard)
        return sorted(bad)


def open_priors(path: str | Path, expect_fingerprint: str | None = None, in_memory: bool | None = None) -> PriorsReader:
    """Open a priors store (Zarr v3 directory) or an HDF5 export for reading.

    Args:
        path: the store directory or the ``.h5`` file.
        expect_fingerprint: refuse a store whose encoder weights fingerprint differs.
        in_memory: load all rows into RAM on first read; None = when the store is under 2 GiB.

    Raises:
        PtgError: not a priors store, or a fingerprint other than the one expected.
    """
    path = Path(path).expanduser()
    if _is_hdf5(path):
        reader = _open_hdf5(path)
    elif (path / "zarr.json").is_file():
        reader = _open_zarr(path, in_memory)
    else:
        raise PtgError(f"{path} is not a priors store (no zarr.json) nor an HDF5 export; pass the --out of `ptg extract-priors`")
    if expect_fingerprint is not None and reader.fingerprint != expect_fingerprint:
        raise PtgError(f"the priors store {path} was made with encoder weights {reader.fingerprint}, not the expected "
                       f"{expect_fingerprint}; re-extract with the expected weights or drop the fingerprint check.")
    if reader.random_init:
        warnings.warn(f"the priors store {path} was made with a RANDOMLY INITIALISED encoder "
                      f"({reader.metadata.get('encoder', {}).get('name')}): its priors carry no pre-trained knowledge. "
                      "Use it for tests only.", RandomInitWarning, stacklevel=2)
    return reader


def _open_zarr(path: Path, in_memory: bool | None) -> PriorsReader:
    import zarr

    try:
        group = zarr.open_group(path, mode="r")
        meta = dict(group.attrs)
        arr = zarr.open_array(path / ARRAY, mode="r")
    except Exception as exc:
        raise PtgError(f"cannot open the priors store {path}: {exc}") from exc
    if "fingerprint" not in meta or "views" not in meta:
        raise PtgError(f"{path} is a Zarr store but not a ptg priors store (no fingerprint/views metadata)")
    rows = int(meta["rows_per_shard"])
    keys: list[str] = []
    row_ids: list[np.ndarray] = []
    for shard, rec in sorted(read_commits(path).items()):
        keys.extend(rec["keys"])
        row_ids.append(shard * rows + np.arange(rec["n"]))
    all_rows = np.concatenate(row_ids) if row_ids else np.zeros(0, np.int64)
    n = (int(all_rows.max()) + 1) if len(all_rows) else 0
    nbytes = n * int(np.prod(arr.shape[1:])) * arr.dtype.itemsize
    load = in_memory if in_memory is not None else nbytes <= RAM_LIMIT
    return PriorsReader(path, meta, keys, all_rows, arr, load, "zarr")


def _open_hdf5(path: Path) -> PriorsReader:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            meta = json.loads(f.attrs["metadata"])
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

    out = Path(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)  # the metadata carries random_init along
        reader = open_priors(src, in_memory=False)
    keys = sorted(reader.keys())
    data = reader.get_all_views(keys).astype(reader.metadata.get("dtype", "float32"))
    meta = {**reader.metadata, "exported_from": str(Path(src).resolve())}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("keys", data=np.array([k.encode() for k in keys], dtype="S64"))
        f.create_dataset("priors", data=data, chunks=True if len(keys) else None)
        f.attrs["metadata"] = json.dumps(meta)
    os.replace(tmp, out)
    return out
