"""Verified copies between stores anywhere (local folder, bucket), mirrors, and staged bucket writers.

Every store kind on the one storage engine (`ptg.pipeline.storage.shardstore`) is served: the priors store
(`PRIORS`) and the image store (its `Layout` comes from `ptg.pipeline.storage.imagestore`). A `Layout` says
what differs between kinds: the metadata objects, the objects of one shard, how a shard is
verified and named when damaged, and the engine's writer lock of that kind.

One transfer serves three uses:

- `copy_store` (``ptg priors copy SRC DST``): local <-> bucket, bucket <-> bucket, local <-> local.
  Only the shards DST lacks are sent; a copy cut at any moment resumes on the next run.
- `mirror` (readers of ``s3://...``): the remote store pulled into ``$PTG_CACHE/remote/...``,
  verified against its commits and reused until they change; every reader (``open_priors``, the
  row cache, the trainer) then reads a local folder at local speed.
- `staged_writer` (``ptg extract-priors --out s3://...``): hold the bucket's lease, pull its
  committed state into ``$PTG_CACHE/stage/...``, let the one store engine write whole shards
  there, then push them.
- `ptg.pipeline.storage.bucketwriter` (``ptg extract-priors --out s3://... --workers N``) builds on the
  same sides with no stage: the coordinator holds the lease and commits, the workers upload.

Order of a transfer, per shard: the shard object, then (after the lease check on a bucket) its
commit record, created only if absent. A reader of DST therefore never sees a commit record whose
shard object is not stored whole. Shards are verified where they are local (SRC before sending, DST
after arriving) against the SHA-256 in their commit record; a damaged shard is a named error and
is never committed at DST. Objects are copied byte for byte: a copy round trip is bit-identical.

Untrusted input: keys come from ptg's own layout or are checked (`remote.check_key`); commit
records are validated before use; a shard object must have the size its commit records; no local
read or write follows a symlink.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from . import shardstore
from ..core.errors import PtgError
from ..core.fsio import ARTIFACT_FILE, atomic_write_bytes, atomic_write_json
from .lease import Lease
from .location import Location, parse_location
from .remote import MAX_META_BYTES, RemoteStore, check_key
from .shardstore import COMMITS, QUARANTINE, cache_root
from .store_integrity import _compat, _shown_diff, priors_lock

GROUP, ARRAY_META, SETTINGS = "zarr.json", "priors/zarr.json", "settings.json"
_COMMIT = re.compile(rf"^{COMMITS}/shard-(\d{{6,}})\.json$")  # the engine's commit records, as object keys
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
PARALLEL = 8  # shards in flight when one side is a bucket
MAX_SHARD_BYTES = 4 << 30  # a shard object larger than this is not one ptg wrote (default shards are ~4 MiB)


def _commit_key(shard: int) -> str:
    """The object key of a shard's commit record: the engine's `shardstore.commit_path`, relative to the store."""
    return shardstore.commit_path(Path(), shard).as_posix()


@dataclass(frozen=True)
class Layout:
    """What a transfer knows of one kind of store; commits/ and the lease are the engine's, common to all.

    Everything else a store holds is found and checked here: its metadata objects, the objects of one
    shard, how a local shard is verified and what its damage is called.
    """

    what: str  # how messages name the kind: "priors store", "image store"
    marker: str  # the metadata object that makes a folder/prefix a store of this kind (sent last)
    metadata: tuple[str, ...]  # metadata objects sent before the shards, in this order, the marker last
    shard_keys: Callable[[Any, int], list[str]]  # a side's objects holding one shard
    problem: Callable[[Path, int, dict[str, Any], int], str | None]  # why a local shard is damaged (None: intact)
    error: Callable[[Any, int, dict[str, Any], int, str], PtgError]  # the named error of a damaged shard
    key_ok: Callable[[Any], bool]  # a row/image key a commit record may hold
    lock: Callable[[Path, bool], Any]  # the engine's writer lock of a local folder of this kind (folder, force)
    make: str  # the command that makes or repairs a store of this kind


def _priors_problem(path: Path, shard: int, rec: dict[str, Any], rows: int) -> str | None:
    from .store_integrity import shard_problem

    return shard_problem(path, shard, rec, rows)


def _priors_error(where: Any, shard: int, rec: dict[str, Any], rows: int, why: str) -> PtgError:
    from .store_integrity import shard_error

    return shard_error(where, shard, rec, rows, why)


PRIORS = Layout("priors store", GROUP, (SETTINGS, ARRAY_META, GROUP), lambda side, shard: side.keys(f"priors/c/{shard}"),
                _priors_problem, _priors_error, lambda k: isinstance(k, str) and bool(_HEX64.match(k)), priors_lock,
                "ptg extract-priors")


@dataclass
class CopySummary:
    """What a transfer did."""

    copied: int  # shards sent
    present: int  # shards DST already had
    nbytes: int  # shard bytes sent
    seconds: float  # wall time


class _LocalSide:
    """A store folder. Reads and writes never follow a symlink."""

    remote = False

    def __init__(self, path: Path, layout: Layout = PRIORS):
        self.path, self.layout = Path(path), layout
        self.url = str(self.path)

    def _p(self, key: str) -> Path:
        cur = self.path
        for part in check_key(key).split("/"):
            cur = cur / part
            if cur.is_symlink():
                raise PtgError(f"{cur} is a symbolic link; ptg never reads or writes through links in a store "
                               "(replace it with the file it points to)")
        return cur

    def read(self, key: str, limit: int = MAX_META_BYTES) -> bytes | None:
        p = self._p(key)
        if not p.is_file():
            return None
        if p.stat().st_size > limit:
            raise PtgError(f"{p} is {p.stat().st_size} bytes, more than the {limit} it may hold; it is not a file ptg wrote")
        return p.read_bytes()

    def write(self, key: str, data: bytes) -> None:
        atomic_write_bytes(self._p(key), data)

    def write_new(self, key: str, data: bytes) -> bool:
        p = self._p(key)  # the writer lock is held: nobody else creates it between the check and the write
        if p.exists():
            return False
        atomic_write_bytes(p, data)
        return True

    def keys(self, prefix: str) -> list[str]:
        base = self.path / prefix
        if not base.is_dir() or base.is_symlink():
            return []
        return sorted(str(p.relative_to(self.path)) for p in base.rglob("*")
                      if p.is_file() and not p.is_symlink() and not p.name.endswith(".partial") and ".tmp-" not in p.name)

    def clear_shard(self, shard: int) -> None:
        for key in self.layout.shard_keys(self, shard):
            self._p(key).unlink()

    def drop_commit(self, shard: int) -> None:
        """Move a cache's commit record aside (mirrors and stages only: folders ptg owns)."""
        self._p(_commit_key(shard))  # refuses a link on the way
        shardstore.quarantine(self.path, shard)

    def fence(self) -> None:
        """Local stores are guarded by their flock for the whole transfer."""


class _RemoteSide:
    """A store prefix in a bucket; writes are fenced by ``lease``."""

    remote = True

    def __init__(self, store: RemoteStore, lease: Lease | None = None, layout: Layout = PRIORS):
        self.store, self.lease, self.url, self.layout = store, lease, store.url, layout
        self._listing: dict[str, dict[str, Any]] | None = None

    def listing(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        if self._listing is None or refresh:
            self._listing = self.store.listing()
        return self._listing

    def read(self, key: str, limit: int = MAX_META_BYTES) -> bytes | None:
        return self.store.get(key, limit)

    def write(self, key: str, data: bytes) -> None:
        self.store.put(key, data)

    def write_new(self, key: str, data: bytes) -> bool:
        return self.store.put_new(key, data)

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.listing() if k.startswith(prefix.rstrip("/") + "/"))

    def clear_shard(self, shard: int) -> None:
        """Nothing to clear: a put replaces the shard object whole."""

    def quarantine(self, shard: int, raw: bytes) -> bool:
        """Move the bucket's commit record of a damaged shard aside (fenced), if it still is ``raw``.

        The record is copied to ``commits/quarantine/`` (kept for inspection, as in a local store),
        then deleted, so the shard id is free for the rows computed again. Returns whether it moved.
        """
        key = _commit_key(shard)
        if self.store.get(key) != raw:
            return False  # already moved, or replaced by another writer's record: not ours to touch
        self.fence()
        self.store.put(f"{COMMITS}/{QUARANTINE}/shard-{shard:06d}.json.{time.strftime('%Y%m%dT%H%M%S')}", raw)
        self.fence()
        self.store.delete(key)
        self._listing = None
        return True

    def fence(self) -> None:
        if self.lease is not None:
            self.lease.check()


def _array_info(raw: bytes | None, where: str) -> tuple[int, list[int]]:
    """(rows per shard, shape) from an array's zarr.json."""
    try:
        meta = json.loads(raw or b"")
        return int(meta["chunk_grid"]["configuration"]["chunk_shape"][0]), [int(x) for x in meta["shape"]]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise PtgError(f"{where}/{ARRAY_META} is missing or not a zarr array description ({type(exc).__name__}); "
                       f"{where} is not a whole priors store") from None


def _rows_per_shard(side: Any) -> int:
    """Rows per shard of a store: its array's zarr.json, or (that lost) its saved settings; an image
    store's shards hold images, not rows: only the bound on a record's image count."""
    if side.layout is not PRIORS:
        return 1 << 24
    raw = side.read(ARRAY_META)
    saved = side.read(SETTINGS) if raw is None else None
    if saved is not None:
        try:
            rows = json.loads(saved)["rows_per_shard"]
            if isinstance(rows, int) and not isinstance(rows, bool) and 0 < rows <= 1 << 24:
                return rows
        except (ValueError, KeyError, TypeError):
            pass
    return _array_info(raw, side.url)[0]


def _record(side: Any, key: str, raw: bytes | None, rows: int) -> dict[str, Any]:
    """A validated commit record (a shared store is input: its records are checked, not trusted)."""
    shard = int(_COMMIT.match(key).group(1))  # type: ignore[union-attr]
    try:
        rec = json.loads(raw or b"")
        keys, n = rec["keys"], rec["n"]
        ok = (rec["shard"] == shard and isinstance(n, int) and 0 < n <= rows and isinstance(keys, list)
              and len(keys) == n and all(side.layout.key_ok(k) for k in keys)
              and isinstance(rec["sha256"], str) and _HEX64.match(rec["sha256"])
              and isinstance(rec.get("bytes", 0), int) and 0 <= rec.get("bytes", 0) <= MAX_SHARD_BYTES)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise PtgError(f"{side.url}/{key} is not a valid commit record; the store is damaged there: move that record "
                       f"aside and run `{side.layout.make}` again on the store to recompute its rows")
    return rec


def _commits(side: Any, rows: int) -> dict[int, tuple[dict[str, Any], bytes]]:
    """shard -> (record, its exact bytes) of every commit record of a store."""
    keys = [k for k in side.keys(COMMITS) if _COMMIT.match(k)]
    with ThreadPoolExecutor(max_workers=8 if side.remote else 1) as pool:
        raws = list(pool.map(side.read, keys))
    out = {}
    for key, raw in zip(keys, raws):
        if raw is not None:  # removed between list and read: not committed for us
            rec = _record(side, key, raw, rows)
            out[int(rec["shard"])] = (rec, raw)
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["n"], a["keys"], a["sha256"]) == (b["n"], b["keys"], b["sha256"])


def _settings_match(src: Any, dst: Any, src_group: bytes) -> str | None:
    """Why DST's settings differ from SRC's (None when they match or DST is new)."""
    dst_group = dst.read(src.layout.marker)
    if dst_group is None:
        return None
    if src.layout is not PRIORS:  # an image store's settings: its kind and schema (shard sizes are the writer's own)
        a, b = (json.loads(raw) if raw else {} for raw in (src_group, dst_group))
        same = all(a.get(k) == b.get(k) for k in ("kind", "schema_version"))
        return None if same else f"kind/schema {a.get('kind')}/{a.get('schema_version')} vs {b.get('kind')}/{b.get('schema_version')}"
    a = json.loads(src_group).get("attributes", {})
    b = json.loads(dst_group).get("attributes", {})
    diff = _shown_diff(_compat(a), _compat(b))
    if not diff and dst.read(ARRAY_META) is not None:
        ra, rb = _array_info(src.read(ARRAY_META), src.url)[0], _array_info(dst.read(ARRAY_META), dst.url)[0]
        diff = f"rows per shard: {src.url} has {ra}, {dst.url} {rb}" if ra != rb else ""
    return diff or None


def _plan(src: Any, dst: Any, cache: bool, prune: bool) -> tuple[dict, list[int], int]:
    """(SRC's commits, shards to send, shards DST has already); conflicts refused, or dropped in a cache."""
    lay = src.layout
    src_group = src.read(lay.marker)
    if src_group is None and not cache:  # a stage may pull a bucket store that lost it: the engine rebuilds it
        raise PtgError(f"{src.url} is not a {lay.what} (no {lay.marker}); pass a store made by `{lay.make}`")
    rows = _rows_per_shard(src)
    have_src = _commits(src, rows)
    diff = None if src_group is None else _settings_match(src, dst, src_group)
    if diff is not None and not cache and not any(_COMMIT.match(k) for k in dst.keys(COMMITS)):
        diff = None  # DST holds no committed row (a run stopped before its first shard): it takes SRC's settings
    have_dst = _commits(dst, rows) if diff is None else {}
    if diff is not None and not cache:
        raise PtgError(f"{dst.url} is a {lay.what} with other settings than {src.url} ({diff}); copy into a new "
                       "DST, or delete DST's folder/prefix first")
    clash = sorted(s for s, (rec, _) in have_dst.items() if s not in have_src and prune
                   or s in have_src and not _same(rec, have_src[s][0]))
    if diff is not None:  # a cache of a store that was re-made with other settings: start over
        clash = [int(_COMMIT.match(k).group(1)) for k in dst.keys(COMMITS) if _COMMIT.match(k)]  # type: ignore[union-attr]
    if clash and not cache:
        raise PtgError(f"{dst.url} holds shard(s) {clash[:10]} with other rows than {src.url}: it is not a copy of it; "
                       f"copy into a new DST (stores merge only through `{lay.make}`)")
    for s in clash:
        dst.drop_commit(s)
        have_dst.pop(s, None)
    todo = sorted(s for s in have_src if s not in have_dst)
    return have_src, todo, len(have_src) - len(todo)


def _send_metadata(src: Any, dst: Any) -> None:
    """settings.json, the array's and the group's zarr.json (group last: it makes DST a store).

    A bucket gets ptg's folder marker first: a writer killed after any of these puts leaves a
    prefix the next run recognises as its own."""
    for key in ((ARTIFACT_FILE,) if dst.remote else ()) + src.layout.metadata:
        raw = src.read(key)
        if raw is None:
            continue
        if key == ARRAY_META and dst.read(key) is not None:  # never shrink: DST may hold more rows (a stage)
            meta, old = json.loads(raw), _array_info(dst.read(key), dst.url)[1]
            if old[0] > meta["shape"][0]:
                meta["shape"][0] = old[0]
                raw = json.dumps(meta, indent=2).encode()
        dst.write(key, raw)


def _send_shard(src: Any, dst: Any, shard: int, rec: dict[str, Any], raw: bytes, rows: int,
                keep_damaged: bool = False) -> int:
    """Send one shard object, verify it, fence, then create its commit record. Returns bytes sent.

    ``keep_damaged``: a shard damaged in a bucket SRC is committed as it is into a cache DST (mirror or
    stage), whose verified reader names it and whose writer quarantines and recomputes it (`staged_writer`).
    """
    lay = src.layout
    if not src.remote and (problem := lay.problem(src.path, shard, rec, rows)):
        raise lay.error(src.path, shard, rec, rows, problem)
    keys = lay.shard_keys(src, shard)
    dst.clear_shard(shard)
    sent = 0
    for key in keys:
        data = src.read(key, limit=int(rec.get("bytes") or MAX_SHARD_BYTES))
        if data is None:
            raise PtgError(f"{src.url}/{key} vanished while copying; run the copy again")
        dst.write(key, data)
        sent += len(data)
    if "bytes" in rec and sent != rec["bytes"] and not keep_damaged:
        raise lay.error(src.url, shard, rec, rows, f"holds {sent} bytes, its commit records {rec['bytes']} "
                        "(damaged or incomplete)")
    if not dst.remote and not keep_damaged and (problem := lay.problem(dst.path, shard, rec, rows)):
        dst.clear_shard(shard)
        if src.remote:  # the bucket's shard itself is damaged: only a re-extraction repairs it
            raise lay.error(src.url, shard, rec, rows, f"{problem}; nothing was committed for it at {dst.url}")
        raise PtgError(f"shard {shard} of {src.url} arrived damaged at {dst.url} ({problem}); nothing was committed "
                       "for it: run the same command again")
    dst.fence()
    key = _commit_key(shard)
    if not dst.write_new(key, raw) and dst.read(key) != raw:
        raise PtgError(f"{dst.url}/{key} was created by another writer meanwhile; run the copy again")
    return sent


def transfer(src: Any, dst: Any, *, cache: bool = False, prune: bool = False, keep_damaged: bool = False,
             on_plan: Callable[[int], None] | None = None, on_progress: Callable[[int], None] | None = None) -> CopySummary:
    """Copy every shard SRC has and DST lacks (DST's writer lock or lease held by the caller).

    Args:
        src, dst: `_LocalSide` / `_RemoteSide`.
        cache: DST is a folder ptg owns (mirror or stage): conflicting records are moved aside, not refused.
        prune: also drop DST's shards SRC does not have (a mirror follows its source).
        keep_damaged: commit a damaged shard of SRC into the cache DST as it is (see `_send_shard`).
        on_plan: called with the number of shards to send.
        on_progress: called with 1 after each shard.
    """
    t0 = time.perf_counter()
    have_src, todo, present = _plan(src, dst, cache, prune)
    if on_plan is not None:
        on_plan(len(todo))
    dst.fence()  # a writer whose lease was taken over must not rewrite the metadata either
    _send_metadata(src, dst)
    rows = _rows_per_shard(src)
    sent = 0
    # a bucket answers each request after a round trip: several shards in flight hide it (each keeps its own order)
    with ThreadPoolExecutor(max_workers=PARALLEL if src.remote or dst.remote else 1, thread_name_prefix="ptg-copy") as pool:
        futures = [pool.submit(_send_shard, src, dst, shard, *have_src[shard], rows, keep_damaged) for shard in todo]
        try:
            for fut in futures:
                sent += fut.result()
                if on_progress is not None:
                    on_progress(1)
        except BaseException:
            for fut in futures:
                fut.cancel()  # shards not started are left for the rerun; those in flight finish or fail whole
            raise
    return CopySummary(len(todo), present, sent, time.perf_counter() - t0)


def _refuse_foreign(store: RemoteStore, force: bool, layout: Layout = PRIORS) -> None:
    from .lease import PREFIX

    # leases are ours: a writer killed before its first metadata put leaves only its lease behind
    listing = [k for k in store.listing() if not k.startswith(PREFIX)]
    if listing and not force and layout.marker not in listing and ARTIFACT_FILE not in listing:
        shown = ", ".join(sorted(listing)[:5])
        raise PtgError(f"{store.url} already holds objects that are not a ptg {layout.what} ({shown}...); choose an "
                       "empty prefix, or pass --force to write beside them (ptg never deletes objects it did not make)")


def _cache_folder(kind: str, loc: Location) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{loc.bucket}-{loc.prefix}")[-80:]
    return cache_root() / kind / f"{safe}-{hashlib.sha256(loc.url.encode()).hexdigest()[:12]}"


def mirror(location: Location | str, store: RemoteStore | None = None, layout: Layout = PRIORS) -> Path:
    """The local copy of a bucket store's committed state (pulled only when it changed).

    Shards are copied as they are, each with its commit record: the local reader verifies every
    shard it touches (a damaged one is a named error; the others are served).

    Args:
        layout: the kind of store (`PRIORS`, or the image store's, `ptg.pipeline.storage.imagestore`).

    Returns:
        A local store folder under ``$PTG_CACHE/remote/``.

    Raises:
        PtgError: not a store of that kind, or the service failed (a rerun resumes).
    """
    loc = location if isinstance(location, Location) else parse_location(location)
    store = store or RemoteStore(loc)
    folder = _cache_folder("remote", loc)
    seen = {k: [v["size"], v["e_tag"]] for k, v in store.listing().items() if k in layout.metadata or _COMMIT.match(k)}
    if layout.marker not in seen:
        raise PtgError(f"{loc.url} is not a {layout.what} (no {layout.marker} there); pass a store made by `{layout.make}`")
    state = hashlib.sha256(json.dumps(sorted(seen.items())).encode()).hexdigest()

    def current() -> bool:
        try:
            return json.loads((folder / "mirror.json").read_text(encoding="utf-8")).get("state") == state
        except (OSError, ValueError):
            return False

    if current():
        return folder  # unchanged since the last pull (one LIST request)
    with _waiting_lock(folder.with_name(folder.name + ".lock")):  # several readers here (torchrun ranks) pull once
        if not current():
            with layout.lock(folder, False):
                transfer(_RemoteSide(store, layout=layout), _LocalSide(folder, layout), cache=True, prune=True,
                         keep_damaged=True)
                atomic_write_json(folder / "mirror.json", {"url": loc.url, "state": state,
                                                           "pulled": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return folder


@contextmanager
def _waiting_lock(path: Path) -> Iterator[None]:
    """An ``flock`` that waits (the store's own writer lock refuses at once, which suits writers, not readers)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _open_dst(loc: Location, force: bool, stack: Any) -> Any:
    if not loc.remote:
        assert loc.path is not None
        stack.enter_context(priors_lock(loc.path, force))
        return _LocalSide(loc.path)
    store = RemoteStore(loc)
    _refuse_foreign(store, force)
    return _RemoteSide(store, stack.enter_context(Lease(store)))


def copy_store(src: str | Path, dst: str | Path, *, force: bool = False, on_plan: Callable[[int], None] | None = None,
               on_progress: Callable[[int], None] | None = None) -> CopySummary:
    """A verified copy of every committed shard of SRC that DST lacks (`ptg priors copy`).

    Args:
        src, dst: local folders or bucket URLs (`ptg.pipeline.storage.location`).
        force: write into a DST that holds other files/objects (nothing of theirs is deleted).

    Raises:
        PtgError: SRC is not a store, DST holds another store or other rows, a shard is damaged,
            another writer holds DST, or the service failed (a rerun resumes).
    """
    from contextlib import ExitStack

    s, d = parse_location(src, "SRC"), parse_location(dst, "DST")
    if s.url == d.url or (not s.remote and not d.remote and s.path.resolve() == d.path.resolve()):  # type: ignore[union-attr]
        raise PtgError(f"SRC and DST are the same store ({s.url}); name another DST")
    if s.remote and d.remote:
        src_side: Any = _LocalSide(mirror(s))  # verified on the way in, then sent
    elif s.remote:
        src_side = _RemoteSide(RemoteStore(s))
    else:
        assert s.path is not None
        src_side = _LocalSide(s.path)
    with ExitStack() as stack:
        dst_side = _open_dst(d, force, stack)
        return transfer(src_side, dst_side, on_plan=on_plan, on_progress=on_progress)


@contextmanager
def staged_writer(location: Location | str, force: bool = False, layout: Layout = PRIORS) -> Iterator[Path]:
    """Write a bucket store through a local stage: lease held, committed state pulled, new shards pushed.

    Args:
        layout: the kind of store (`PRIORS`, or the image store's): the stage is a local store of that kind.

    Yields:
        The local stage folder, for the store engine (whole shards, commit records, resume).

    Raises:
        PtgError: another live writer holds the bucket, the lease was lost before a commit, or the
            service failed; shards committed in the stage are pushed by the next run.
    """
    loc = location if isinstance(location, Location) else parse_location(location)
    store = RemoteStore(loc)
    _refuse_foreign(store, force, layout)
    stage = _cache_folder("stage", loc)
    with Lease(store) as lease:
        remote = _RemoteSide(store, lease, layout)
        if any(k in layout.metadata or _COMMIT.match(k) for k in remote.listing()):  # damaged metadata too: repaired
            with layout.lock(stage, False):  # a shard damaged in the bucket arrives as it is: the engine quarantines it
                transfer(remote, _LocalSide(stage, layout), cache=True, keep_damaged=True)
        before = set(_quarantined(stage))
        try:
            yield stage
        except PtgError as exc:  # e.g. bad inputs: the shards committed meanwhile are published all the same
            _publish(stage, store, lease, before, layout)
            raise PtgError(str(exc).replace(str(stage), loc.url)) from exc  # name the store the user named
        _publish(stage, store, lease, before, layout)


def _quarantined(stage: Path) -> dict[str, Path]:
    """Records the engine moved aside in a stage: file name -> path."""
    return {p.name: p for p in shardstore.list_files(stage / COMMITS / QUARANTINE, "shard-*.json.*")}


def _publish(stage: Path, store: RemoteStore, lease: Lease, before: set[str], layout: Layout) -> None:
    """Push a stage: first move aside in the bucket the records of shards the engine found damaged
    (and quarantined) during this run, so their recomputed rows can take the ids, then every new shard."""
    if not (stage / layout.marker).is_file():
        return  # the engine made no store there (refused before its first write): nothing to push
    remote = _RemoteSide(store, lease, layout)
    for name, path in sorted(_quarantined(stage).items()):
        if name not in before:
            remote.quarantine(int(name[len("shard-"):].split(".")[0]), path.read_bytes())
    transfer(_LocalSide(stage, layout), _RemoteSide(store, lease, layout))
