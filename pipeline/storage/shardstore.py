"""The one storage engine under ptg's stores: whole shards, commit records, verified reads, one writer.

The priors store (`ptg.pipeline.storage.store`, Zarr shards) and the image store (`ptg.pipeline.storage.imagestore`,
raw memory-mappable shards) both sit on this module; neither has its own commit, lock, verify or
repair code. What a store format supplies is only how to find a shard's files and how to tell
whether a committed shard is intact (a ``problem(shard, record) -> str | None`` function).

Guarantees (the same for every store):

- A shard is written whole by the one writer that owns its id, made durable, and only then is its
  commit record ``commits/shard-NNNNNN.json`` written (temp file + fsync + atomic rename). Readers
  and resumed writers see only committed shards; an uncommitted id (a killed writer's) is reused.
- One writer per store holds ``writer.lock`` (an ``flock``, released by the kernel when its holder
  dies, however it dies). With the lock held, temporary files of dead writers are removed.
- A writer verifies the committed shards it reuses; a damaged one is quarantined (its record moved
  to ``commits/quarantine/``, kept for inspection) so its rows are written again.
- Nothing ptg did not write is deleted: the folder is claimed with a kind marker
  (`fsio.claim_out_dir`), and deletion goes through `remove_ours`, which refuses links.

Porting to object storage. Every filesystem operation of the engine goes through the small
functions in the first section (`write_file`, `read_text`, `list_files`, `file_size`, `rename`,
`remove_ours`); an object-store layer replaces those (plus the lock) and keeps the rest.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

from ..core.errors import PtgError
from ..core.fsio import atomic_write, claim_out_dir, exclusive_lock, remove_stale_tmp
from ..core.limits import read_json

COMMITS = "commits"
QUARANTINE = "quarantine"  # in COMMITS: records of damaged shards
LOCK = "writer.lock"


class DamagedShardWarning(UserWarning):
    """A writer found a damaged shard and will compute its rows again."""


# ---------------------------------------------------------------------------------------------
# Filesystem primitives: the only places the engine touches files (an object-store port replaces these)


def write_file(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a whole file atomically: temp file in the same folder, fsync, rename, fsync the folder."""
    return atomic_write(path, write)


def read_text(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8")


def list_files(folder: Path, pattern: str) -> list[Path]:
    """Plain files (not links) in `folder` matching a glob `pattern`; [] when the folder is absent."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(pattern) if p.is_file() and not p.is_symlink())


def file_size(path: Path) -> int:
    return os.stat(path, follow_symlinks=False).st_size


def rename(src: Path, dst: Path) -> None:
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


def remove_ours(path: Path) -> None:
    """Delete a file this engine wrote; never a link (a link's target is not ours) nor a folder."""
    path = Path(path)
    if path.is_symlink():
        raise PtgError(f"{path} is a symbolic link inside a ptg store; ptg never deletes through links. "
                       "Replace it with the file it points to, or move the store aside")
    path.unlink(missing_ok=True)


def cache_root() -> Path:
    """``$PTG_CACHE`` or ``~/.cache/ptg``: where default stores live, shared by all experiments."""
    return Path(os.environ.get("PTG_CACHE") or Path.home() / ".cache" / "ptg").expanduser()



# ---------------------------------------------------------------------------------------------
# Commit records


def commit_path(store: Path, shard: int) -> Path:
    return Path(store) / COMMITS / f"shard-{shard:06d}.json"


def read_commits(store: Path) -> dict[int, dict[str, Any]]:
    """Committed shards of a store: shard id -> record (keys, n, sha256, bytes, ...)."""
    out: dict[int, dict[str, Any]] = {}
    for p in list_files(Path(store) / COMMITS, "shard-*.json"):
        rec = read_json(p, "commit record")  # written atomically: always whole; bounded (a shared store is input)
        shard = rec.get("shard") if isinstance(rec, dict) else None
        if not isinstance(shard, int) or isinstance(shard, bool) or p.name != f"shard-{shard:06d}.json":
            raise PtgError(f"the commit record {p} says shard {shard!r:.40}, but its file name says otherwise; the "
                           "store is damaged or crafted: move the record aside and run the writer again to repair")
        out[shard] = rec
    return out


def write_commit(store: Path, shard: int, rec: dict[str, Any]) -> None:
    """Commit a shard whose data is already durable (what readers see from now on)."""
    data = json.dumps(rec).encode("utf-8")
    write_file(commit_path(store, shard), lambda f: f.write(data))


def free_ids(committed: Iterable[int], n: int) -> list[int]:
    """The `n` lowest shard ids without a commit (a killed writer's ids come back here)."""
    taken, ids, i = set(committed), [], 0
    while len(ids) < n:
        if i not in taken:
            ids.append(i)
        i += 1
    return ids


def quarantine(store: Path, shard: int) -> Path:
    """Move a damaged shard's commit record aside (kept for inspection); its id becomes free."""
    dst = Path(store) / COMMITS / QUARANTINE / f"shard-{shard:06d}.json.{time.strftime('%Y%m%dT%H%M%S')}"
    rename(commit_path(store, shard), dst)
    return dst


def reuse_verified(store: Path, problem: Callable[[int, dict[str, Any]], str | None],
                   error: Callable[[int, dict[str, Any], str], PtgError],
                   keys: Sequence[str] | None = None) -> dict[int, dict[str, Any]]:
    """Committed shards a writer may reuse (lock held).

    Those holding any of `keys` (all when None) are verified with `problem`; a damaged one is
    quarantined with a `DamagedShardWarning` carrying `error`'s text, so its keys count as missing
    and are written again.
    """
    commits = read_commits(store)
    wanted = None if keys is None else set(keys)
    for shard, rec in sorted(commits.items()):
        if wanted is not None and wanted.isdisjoint(rec["keys"]):
            continue
        why = problem(shard, rec)
        if why is not None:
            quarantine(store, shard)
            warnings.warn(f"{error(shard, rec, why)} It will be computed again.", DamagedShardWarning, stacklevel=3)
            del commits[shard]
    return commits


def size_problems(store: Path, commits: dict[int, dict[str, Any]], files_of: Callable[[int], list[Path]]) -> list[str]:
    """Shards whose files' total size differs from the size their commit recorded (no data read)."""
    problems = []
    for shard, rec in sorted(commits.items()):
        if "bytes" not in rec:
            continue  # written before sizes were recorded: only a full verify can tell
        size = sum(file_size(f) for f in files_of(shard))
        if size != rec["bytes"]:
            problems.append(f"shard {shard}: {size} bytes on disk, {rec['bytes']} committed")
    return problems


# ---------------------------------------------------------------------------------------------
# The one writer


def remove_leftovers(store: Path, folders: Sequence[Path] = (), partial_globs: Sequence[tuple[Path, str]] = ()) -> list[Path]:
    """Temporary files of dead writers (lock held): ours (``.x.tmp-PID``) in the store, its commit
    folder and `folders`, and files matching `partial_globs` (folder, glob; e.g. zarr's ``**/*.partial``)."""
    store = Path(store)
    removed: list[Path] = []
    for folder in (store, store / COMMITS, *folders):
        removed += remove_stale_tmp(folder)
    for folder, pattern in partial_globs:
        if Path(folder).is_dir():
            for p in Path(folder).glob(pattern):
                if p.is_file() and not p.is_symlink():  # a link is not ours: left in place
                    remove_ours(p)
                    removed.append(p)
    return removed


@contextmanager
def writer_lock(store: Path, kind: str, what: str, force: bool = False, legacy: Callable[[Path], bool] | None = None,
                cleanup: Callable[[Path], Any] | None = None) -> Iterator[None]:
    """Claim `store` as a ptg `kind` folder and hold its writer lock for the block.

    Args:
        store: the store folder (created if absent).
        kind: the `fsio.claim_out_dir` kind (e.g. "priors-store", "image-store").
        what: how messages name the store, e.g. "the image store S".
        force: write into an existing folder of another kind (nothing in it is deleted).
        legacy: recognises a store of this kind made before folder markers existed.
        cleanup: removes dead writers' temporary files (called with the lock held).

    Raises:
        PtgError: the folder holds something else (without ``force``), or another live writer holds the lock.
    """
    store = Path(store)
    claim_out_dir(store, kind, force=force, legacy=legacy)
    with exclusive_lock(store / LOCK, what):
        (cleanup or remove_leftovers)(store)
        yield
