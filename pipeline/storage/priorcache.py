"""Priors from disk at memory speed: an uncompressed, memory-mapped training copy of a priors store.

Why. A Zarr store reads and decodes a whole inner chunk (32 rows, compressed) per requested row,
so a random batch of 64 priors from a store too big to load costs tens of milliseconds, and the
in-memory path costs every DataLoader worker a private float32 copy of every view. The row cache
is a plain ``.npy`` per view (rows of all committed shards, in commit order, store dtype) plus a
sorted key index: a batch is 64 row reads from the page cache (shared by every worker process),
issued together with ``madvise(WILLNEED)`` so that cold reads overlap on the disk.

Layout (one folder per store *state*)::

    $PTG_CACHE/rowcache/<store name>-<hash of its path>/<state>/
        keys.npy        S64 [n] sorted row keys
        rows.npy        int64 [n] the cache row of each sorted key
        view-<i>.npy    store dtype [n, dim], the i-th view of the store
        ready.json      written last: the state, views, dim, dtype, rows

``state`` = a digest of the store's commit records (shard, rows, data SHA-256) and of its
views/dim/dtype/fingerprint, so a store that gained (or re-wrote) shards gets a new copy and a
stale copy is never read. Every shard is checked against its commit digest as it is copied
(`store_integrity.verified_shard`): a deleted or damaged shard is the same named error as on the
in-memory path, never rows of zeros. Files are written with `ptg.pipeline.core.fsio.atomic_write`; ``ready.json``
last, so a half-built copy is never used (and is rebuilt under an flock).

Usage (the trainer's ``data.priors_in_memory = auto | true | false``)::

    vectors = prior_vectors(store_path, keys, views, setting="auto")   # view -> array-like [n, dim]
    vectors["identity"][17]           # float32 [dim]
    vectors["identity"][np.array(..)] # float32 [k, dim]
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.errors import PtgError
from ..core.fsio import atomic_write, atomic_write_json, exclusive_lock
from .store_integrity import verified_shard

CACHE_DIR = "rowcache"
READY = "ready.json"
FORMAT = 1  # bump when the layout changes: old copies are then ignored and rebuilt
_PAGE = mmap.PAGESIZE


def _store_state(store: Path) -> tuple[str, dict[str, Any], dict[int, dict[str, Any]]]:
    """(digest of the store's committed content, its metadata, its commit records)."""
    import zarr

    from .store import read_commits

    try:
        meta = dict(zarr.open_group(store, mode="r").attrs)
    except Exception as exc:
        raise PtgError(f"{store} is not a priors store ({exc}); pass the --out of `ptg extract-priors`") from exc
    if "views" not in meta or "dim" not in meta:
        raise PtgError(f"{store} is a Zarr store but not a ptg priors store (no views/dim metadata)")
    commits = read_commits(store)
    h = hashlib.sha256(json.dumps({"format": FORMAT, "views": list(meta["views"]), "dim": int(meta["dim"]),
                                   "dtype": meta.get("dtype"), "fingerprint": meta.get("fingerprint")},
                                  sort_keys=True).encode())
    for shard in sorted(commits):
        rec = commits[shard]
        h.update(f"{shard}:{rec['n']}:{rec['sha256']};".encode())
    return h.hexdigest(), meta, commits


def cache_dir_for(store: str | Path) -> Path:
    """The folder holding the row-cache copies of ``store`` (``$PTG_CACHE/rowcache/...``)."""
    from .store import cache_root

    store = Path(store).expanduser().resolve()
    tag = hashlib.sha256(str(store).encode()).hexdigest()[:12]
    return cache_root() / CACHE_DIR / f"{store.name}-{tag}"


@dataclass
class RowCache:
    """An opened row-cache copy of one store state (memory-mapped; cheap to open, fork-safe)."""

    folder: Path  # the state folder
    store: Path  # the store it copies
    views: tuple[str, ...]  # the store's views, in order
    dim: int  # prior length
    dtype: str  # stored dtype (float16 | float32)
    n: int  # rows

    def __post_init__(self) -> None:
        self._keys: np.ndarray | None = None
        self._rows: np.ndarray | None = None
        self._views: dict[int, np.memmap] = {}

    def __getstate__(self) -> dict[str, Any]:  # spawned DataLoader workers re-map the files
        return {k: v for k, v in self.__dict__.items() if k not in ("_keys", "_rows", "_views")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__post_init__()

    def close(self) -> None:
        """Unmap the files (they are mapped again on the next read)."""
        self._keys = self._rows = None
        self._views = {}

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """Cache rows of ``keys`` (int64), in their order.

        Raises:
            PtgError: a key the store does not hold.
        """
        if self._keys is None:
            self._keys = np.load(self.folder / "keys.npy", mmap_mode="r")
            self._rows = np.load(self.folder / "rows.npy", mmap_mode="r")
        want = np.asarray(list(keys), dtype="S64")
        pos = np.searchsorted(self._keys, want) if self.n else np.zeros(len(want), np.int64)
        ok = (pos < self.n) & (self._keys[np.minimum(pos, max(self.n - 1, 0))] == want) if self.n else np.zeros(len(want), bool)
        if not ok.all():
            miss = [k for k, good in zip(keys, ok) if not good]
            raise PtgError(f"{len(miss)} of {len(want)} keys are not in the priors store {self.store} "
                           f"(e.g. {', '.join(m[:16] for m in miss[:5])}...). Run `ptg extract-priors` on the manifest "
                           "holding those images with this store as --out.")
        return np.asarray(self._rows[pos], dtype=np.int64)

    def view(self, name: str) -> np.memmap:
        """The memory-mapped ``[n, dim]`` array of one view (store dtype)."""
        if name not in self.views:
            raise PtgError(f"view {name!r} is not in the priors store {self.store}; it holds "
                           f"{', '.join(self.views[:12])}. Re-extract with the --views you need.")
        i = self.views.index(name)
        if i not in self._views:
            mm = np.load(self.folder / f"view-{i}.npy", mmap_mode="r")
            if mm.size:  # random batches: no readahead of neighbours we will not use
                mm._mmap.madvise(mmap.MADV_RANDOM)
            self._views[i] = mm
        return self._views[i]

    def read(self, name: str, rows: np.ndarray) -> np.ndarray:
        """float32 ``[len(rows), dim]`` of cache ``rows`` of one view: sorted, coalesced, prefetched."""
        mm = self.view(name)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) == 0:
            return np.zeros((0, self.dim), np.float32)
        uniq, inv = np.unique(rows, return_inverse=True)  # sorted: the disk sees one forward sweep
        if len(uniq) > 1 and mm.size:
            _prefetch(mm, uniq)
        return np.asarray(mm[uniq], dtype=np.float32)[inv]


def _prefetch(mm: np.memmap, uniq: np.ndarray) -> None:
    """Ask the kernel for every page the rows touch at once (asynchronous readahead), so a cold
    batch costs about one disk round trip instead of one per row. Adjacent pages are coalesced."""
    row = mm.strides[0]
    base = mm.offset % mmap.ALLOCATIONGRANULARITY  # the .npy header: where row 0 sits in the mapping
    start = (base + uniq * row) // _PAGE
    end = (base + (uniq + 1) * row - 1) // _PAGE
    m = mm._mmap
    run_s, run_e = int(start[0]), int(end[0])
    for s, e in zip(start[1:].tolist(), end[1:].tolist()):
        if s <= run_e + 1:
            run_e = max(run_e, e)
            continue
        m.madvise(mmap.MADV_WILLNEED, run_s * _PAGE, (run_e - run_s + 1) * _PAGE)
        run_s, run_e = s, e
    m.madvise(mmap.MADV_WILLNEED, run_s * _PAGE, (run_e - run_s + 1) * _PAGE)


def _npy_header(f, shape: tuple[int, ...], dtype: np.dtype) -> None:
    np.lib.format.write_array_header_2_0(f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                                              "shape": shape})


def _build(store: Path, folder: Path, state: str, meta: dict[str, Any], commits: dict[int, dict[str, Any]]) -> None:
    """Copy every committed row of ``store`` into ``folder`` (one pass over the store's shards)."""
    import zarr

    from .store import ARRAY

    views, dim, dtype = tuple(meta["views"]), int(meta["dim"]), np.dtype(meta.get("dtype", "float32"))
    per = int(meta["rows_per_shard"])
    order = sorted(commits)
    n = sum(int(commits[s]["n"]) for s in order)
    arr = zarr.open_array(store / ARRAY, mode="r")

    def stream(handles: list) -> None:
        for f in handles:
            _npy_header(f, (n, dim), dtype)
        for s in order:  # a whole shard per read: the store's cheapest access pattern
            k = int(commits[s]["n"])
            block = np.ascontiguousarray(verified_shard(store, arr, s, commits[s], per), dtype=dtype)  # [k, V, D]
            for vi, f in enumerate(handles):
                f.write(np.ascontiguousarray(block[:, vi]).tobytes())

    def write_views(i: int, handles: list) -> None:
        # nested atomic writes: one pass over the store fills every view file, each renamed whole
        if i == len(views):
            stream(handles)
            return
        atomic_write(folder / f"view-{i}.npy", lambda f: write_views(i + 1, handles + [f]))

    folder.mkdir(parents=True, exist_ok=True)
    write_views(0, [])
    keys = np.array([k for s in order for k in commits[s]["keys"]], dtype="S64")
    srt = np.argsort(keys, kind="stable")
    atomic_write(folder / "keys.npy", lambda f: np.save(f, keys[srt]))
    atomic_write(folder / "rows.npy", lambda f: np.save(f, srt.astype(np.int64)))
    atomic_write_json(folder / READY, {"format": FORMAT, "state": state, "store": str(store), "views": list(views),
                                       "dim": dim, "dtype": dtype.name, "rows": n})


def open_row_cache(store: str | Path, build: bool = True) -> RowCache:
    """The row-cache copy of ``store``'s current committed state, built first if needed.

    Args:
        store: a Zarr priors store directory.
        build: build a missing or stale copy (False: raise instead).

    Raises:
        PtgError: not a priors store, or no up-to-date copy and ``build`` is False.
    """
    store = Path(store).expanduser().resolve()
    if not (store / "zarr.json").is_file():
        raise PtgError(f"{store} is not a Zarr priors store; the row cache copies `ptg extract-priors` stores only")
    state, meta, commits = _store_state(store)
    root = cache_dir_for(store)
    folder = root / state[:20]

    def ready() -> dict[str, Any] | None:
        try:
            info = json.loads((folder / READY).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return info if info.get("state") == state and info.get("format") == FORMAT else None

    info = ready()
    if info is None:
        if not build:
            raise PtgError(f"no up-to-date row cache of {store} under {root}; open it with build=True")
        with exclusive_lock(root / "build.lock", f"the row cache of {store}"):
            info = ready()  # another process may have built it while we waited
            if info is None:
                _build(store, folder, state, meta, commits)
                info = ready()
                assert info is not None
            for old in root.iterdir():  # older states: never read again (open maps survive unlink)
                if old.is_dir() and old != folder:
                    shutil.rmtree(old, ignore_errors=True)
    return RowCache(folder, store, tuple(info["views"]), int(info["dim"]), str(info["dtype"]), int(info["rows"]))


class LazyPriorRows:
    """The priors of ``keys`` for one view, read from the row cache on demand.

    A drop-in for the in-memory float32 ``[len(keys), dim]`` array the trainer holds: indexing
    follows numpy (an int gives ``[dim]``, an int array or slice ``[k, dim]``), values are float32
    and bit-identical to ``PriorsReader.get(keys, view)``.
    """

    def __init__(self, store: str | Path, keys: Sequence[str], view: str = "identity", cache: RowCache | None = None):
        self.cache = cache if cache is not None else open_row_cache(store)
        self.cache.view(view)  # raises for a view the store does not hold
        self.view = view
        self.rows = self.cache.rows(keys)  # [len(keys)] cache rows; raises for missing keys
        self.shape = (len(self.rows), self.cache.dim)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.cache.read(self.view, self.rows[[index]])[0]
        return self.cache.read(self.view, self.rows[index])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.cache.read(self.view, self.rows)
        return out if dtype is None else out.astype(dtype)


def in_memory_bytes(n_keys: int, n_views: int, dim: int) -> int:
    """RAM the in-memory path needs per process: float32 ``[n_keys, dim]`` per view."""
    return int(n_keys) * int(n_views) * int(dim) * 4


def default_budget() -> int:
    """2 GiB, or an eighth of the memory available now if that is less (every DataLoader worker
    holds its own copy of in-memory priors)."""
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        avail = 16 << 30
    return int(min(2 << 30, avail // 8))


def decide_in_memory(setting: str | bool, nbytes: int, budget: int | None = None) -> bool:
    """``data.priors_in_memory``: True/"true" = load into RAM, False/"false" = lazy row cache,
    "auto" = in RAM when ``nbytes`` fits ``budget`` (default `default_budget`).

    Raises:
        PtgError: a setting other than auto | true | false.
    """
    if isinstance(setting, bool):
        return setting
    s = str(setting).strip().lower()
    if s in ("true", "yes", "1"):
        return True
    if s in ("false", "no", "0"):
        return False
    if s == "auto":
        return nbytes <= (default_budget() if budget is None else budget)
    raise PtgError(f"data.priors_in_memory={setting!r} is not valid; use auto, true or false")


def prior_vectors(store: Any, keys: Sequence[str], views: Sequence[str], setting: str | bool = "auto",
                  budget: int | None = None) -> dict[str, Any]:
    """The priors of ``keys`` for each of ``views``: view -> float32 array-like ``[len(keys), dim]``.

    Args:
        store: an open `PriorsReader` (zarr or HDF5) or a store path.
        keys: row keys in dataset order.
        views: views to provide.
        setting: ``data.priors_in_memory`` (auto | true | false).
        budget: bytes the in-memory path may use under ``auto``.

    Returns:
        In RAM: numpy arrays (``PriorsReader.get``). Lazy: `LazyPriorRows` over the row cache.
        HDF5 exports are always in RAM (they are read whole).
    """
    from .store import PriorsReader, open_priors

    reader = store if isinstance(store, PriorsReader) else open_priors(store, in_memory=False)
    views = list(dict.fromkeys(views))
    lazy_ok = reader.format == "zarr"
    if not lazy_ok or decide_in_memory(setting, in_memory_bytes(len(keys), len(views), reader.dim), budget):
        return {v: reader.get(list(keys), view=v) for v in views}
    cache = open_row_cache(reader.path)
    return {v: LazyPriorRows(reader.path, keys, v, cache=cache) for v in views}
