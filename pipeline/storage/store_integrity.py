"""Integrity of a priors store: its layout, per-shard verification and health.

The lower layer of `ptg.pipeline.storage.store` (which re-exports everything here). Commit records, the
writer lock, quarantine and leftover removal are the shared storage engine's
(`ptg.pipeline.storage.shardstore`, also under the image store); this module says only where a priors
shard's files are and how to verify its rows. A commit record
(``commits/shard-NNNNNN.json``) holds a shard's keys, the SHA-256 of its rows in the store's dtype
and, since verified reads, the size of the shard's file: `quick_health` compares sizes without
reading data, `shard_problem` re-hashes the rows.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import shardstore
from ..core.errors import PtgError
from ..core.fsio import no_symlink
from .shardstore import COMMITS, QUARANTINE, DamagedShardWarning  # noqa: F401  (re-exported)
from .shardstore import commit_path as _commit_path  # noqa: F401  (re-exported)
from .store_checks import check_commit_record

ARRAY = "priors"
KIND = "priors-store"  # the `fsio.claim_out_dir` kind
SAVED_META = "settings.json"  # the creation metadata, to rebuild a lost zarr.json


def _digest(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def read_commits(store: Path) -> dict[int, dict[str, Any]]:
    """Committed shards of a priors store: shard id -> record (keys, n, sha256), each checked (a shared
    store's records are input)."""
    return {shard: check_commit_record(shardstore.commit_path(store, shard), rec)
            for shard, rec in shardstore.read_commits(store).items()}


def _is_legacy_store(folder: Path) -> bool:
    """A store made before folder markers existed: ptg metadata in zarr.json, or commit records."""
    try:
        if json.loads((folder / "zarr.json").read_text(encoding="utf-8")).get("attributes", {}).get("kind") == "ptg-priors":
            return True
    except (OSError, ValueError, AttributeError):
        pass
    return (folder / SAVED_META).is_file() or any((folder / COMMITS).glob("shard-*.json"))


def _remove_leftovers(store: Path) -> list[Path]:
    """Temporary files of dead writers: ours (``.x.tmp-PID``) and zarr's (``*.partial``). Lock held."""
    # zarr's own temp files (``zarr.<uuid>.partial`` next to the file it replaces): with the lock held, all are dead
    arr_dir = no_symlink(store / ARRAY, "the store's array folder")  # never delete through a link
    return shardstore.remove_leftovers(store, partial_globs=[(store, "*.partial"), (arr_dir, "**/*.partial")])


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


def _shown_diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    # every differing field whole: a message cut mid-field hides the very value that differs
    return "; ".join(f"{k}: store has {json.dumps(a[k])}, this run {json.dumps(b[k])}" for k in a if a[k] != b[k])


def priors_lock(store: Path, force: bool = False) -> Any:
    """The engine's writer lock on a local priors store folder (`ptg.pipeline.storage.store.writer_lock` also
    refuses a bucket URL by name first)."""
    return shardstore.writer_lock(store, KIND, f"the priors store {store}", force, _is_legacy_store, _remove_leftovers)


def _shard_files(path: Path, shard: int) -> list[Path]:
    """The files holding one shard (zarr's sharding codec: one file per shard, ``c/<shard>/0/0``)."""
    d = no_symlink(path / ARRAY / "c" / str(shard), "a shard folder")  # write_shard deletes what this lists
    return sorted(f for f in d.rglob("*") if f.is_file() and not f.name.endswith(".partial")) if d.is_dir() else []


def shard_rows(shard: int, rec: dict[str, Any], rows_per_shard: int) -> str:
    return f"rows {shard * rows_per_shard}..{shard * rows_per_shard + rec['n'] - 1}"


def shard_problem(path: Path, shard: int, rec: dict[str, Any], rows_per_shard: int, data: np.ndarray | None = None,
                  arr: Any = None) -> str | None:
    """Why a committed shard cannot be trusted, or None when its rows match their commit digest.

    Args:
        data: the shard's rows already in memory; None = read them from `arr` (or open the array).
    """
    if data is None:
        if "bytes" in rec and not _shard_files(path, shard) and rec["bytes"]:
            return "is missing its file"
        try:
            import zarr

            arr = arr if arr is not None else zarr.open_array(path / ARRAY, mode="r")
            data = np.asarray(arr[shard * rows_per_shard : shard * rows_per_shard + rec["n"]])
        except Exception as exc:  # a damaged shard index or a truncated file: zarr's own error types
            return f"cannot be read ({type(exc).__name__}: {exc})"
    if _digest(data) != rec["sha256"]:
        return "does not match its commit digest (damaged, truncated or missing data)"
    return None


def shard_error(path: Path, shard: int, rec: dict[str, Any], rows_per_shard: int, problem: str) -> PtgError:
    return PtgError(f"the priors store {path}: shard {shard} ({shard_rows(shard, rec, rows_per_shard)}) {problem}. "
                    f"Its values are not served. Repair: run `ptg extract-priors` again with --out {path} "
                    f"(it re-computes damaged shards); `ptg priors info {path} --verify` lists them all.")


def quick_health(path: Path) -> dict[str, Any]:
    """A fast check without reading data: every commit record has its shard file with the recorded size.

    Returns:
        ``{"shards": n, "problems": [text, ...]}``; an empty list means healthy as far as sizes tell.
    """
    problems = []
    commits = read_commits(path)
    try:
        meta = json.loads((path / "zarr.json").read_text(encoding="utf-8")).get("attributes", {})
        arr_meta = json.loads((path / ARRAY / "zarr.json").read_text(encoding="utf-8"))
        true_rows = arr_meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        if meta.get("rows_per_shard") != true_rows:
            problems.append(f"zarr.json says rows_per_shard {meta.get('rows_per_shard')} but the array is sharded by {true_rows} rows")
    except (OSError, ValueError, KeyError, IndexError) as exc:
        problems.append(f"metadata unreadable ({type(exc).__name__}: {exc})")
    problems += shardstore.size_problems(path, commits, lambda shard: _shard_files(path, shard))
    leftovers = [p for p in path.rglob("*") if p.name.endswith(".partial") or ".tmp-" in p.name]
    if leftovers:
        problems.append(f"{len(leftovers)} temporary file(s) of an interrupted writer (removed by the next extraction)")
    return {"shards": len(commits), "problems": problems}


def usable_commits(path: Path, keys: Sequence[str] | None = None) -> dict[int, dict[str, Any]]:
    """Committed shards a writer may reuse: those holding any of `keys` (all when None) are verified,
    and a damaged one is quarantined (its record moved to ``commits/quarantine/``), so its keys count
    as missing and are computed again. Call with the writer lock held."""
    import zarr

    if not read_commits(path):
        return {}
    arr = zarr.open_array(path / ARRAY, mode="r")
    rows = arr.shards[0]
    return shardstore.reuse_verified(path, lambda shard, rec: shard_problem(path, shard, rec, rows, arr=arr),
                                     lambda shard, rec, why: shard_error(path, shard, rec, rows, why), keys)


def verified_shard(store: Path, arr: Any, shard: int, rec: dict[str, Any], rows_per_shard: int) -> Any:
    """The committed rows of one shard, read from ``arr`` and checked against the commit digest.

    Raises:
        PtgError: the same `shard_error` as the in-memory reader (unreadable, or digest mismatch:
            a deleted shard file reads as zeros, which never match).
    """
    start = shard * rows_per_shard
    try:
        data = np.asarray(arr[start : start + rec["n"]])
    except Exception as exc:  # a damaged shard index or a truncated file: zarr's own error types
        raise shard_error(store, shard, rec, rows_per_shard, f"cannot be read ({type(exc).__name__}: {exc})") from exc
    problem = shard_problem(store, shard, rec, rows_per_shard, data=data)
    if problem is not None:
        raise shard_error(store, shard, rec, rows_per_shard, problem)
    return data
