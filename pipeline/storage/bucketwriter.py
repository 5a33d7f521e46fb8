"""Cluster writers straight into a bucket: workers upload shard objects, the coordinator commits.

`bucket_writer` (``ptg extract-priors --out s3://... --workers N | --dask-scheduler ADDR``) needs
no stage and no shared filesystem. The coordinator holds the bucket's lease, plans in a private
skeleton folder (metadata and commit records only) and creates each commit record, fenced by its
lease; each worker builds one whole shard in its own temporary folder and uploads its objects
(`BucketShards`). A worker killed mid-upload leaves no record, so a rerun computes that shard again.

It reads and writes the bucket through `ptg.pipeline.storage.storecopy`'s sides, so the same checks hold
as for a copy: keys from ptg's own layout, commit records validated before use, object sizes
bounded, no local write through a symlink.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from . import shardstore
from ..core.errors import PtgError
from ..core.fsio import atomic_write_json
from .lease import Lease
from .location import Location, parse_location
from .remote import RemoteStore
from .shardstore import COMMITS
from .storecopy import (ARRAY_META, GROUP, MAX_SHARD_BYTES, PARALLEL, PRIORS, SETTINGS, _COMMIT, _LocalSide,
                        _RemoteSide, _cache_folder, _commit_key, _commits, _record, _refuse_foreign,
                        _rows_per_shard, _send_metadata)


@dataclass(frozen=True)
class BucketShards:
    """What a dask worker needs to write one shard straight into a bucket store.

    No credentials: a worker opens the URL with its own environment (``AWS_*`` etc.), as the
    coordinator does. The metadata objects are the store's (settings, array and group zarr.json).
    """

    url: str  # the store's bucket URL
    metadata: tuple[tuple[str, bytes], ...]  # (key, bytes) of the store's metadata objects

    def skeleton_into(self, folder: Path) -> None:
        """Write the store's metadata into an empty private folder, where the engine builds one shard."""
        local = _LocalSide(folder)
        for key, raw in self.metadata:
            local.write(key, raw)

    def upload(self, folder: Path, shard: int) -> bytes:
        """Upload the objects of a shard built whole in ``folder``; return its commit record's bytes.

        Nothing is committed here: the coordinator creates the record, fenced by its lease, once the
        objects are confirmed in the bucket (`BucketWriter.commit`). A worker killed mid-upload leaves
        no record, and the rerun overwrites the shard's objects whole.
        """
        bucket, local = RemoteStore(parse_location(self.url)), _LocalSide(folder)
        for key in PRIORS.shard_keys(local, shard):
            bucket.put(key, local.read(key, MAX_SHARD_BYTES))  # type: ignore[arg-type]
        raw = local.read(_commit_key(shard))
        if raw is None:
            raise PtgError(f"shard {shard} was not committed in the worker's folder {folder}; run the command again")
        return raw


class BucketWriter:
    """The coordinator of a cluster run into a bucket: it holds the lease and commits; workers upload.

    ``skeleton`` is a private temporary folder with the store's metadata and commit records only
    (kilobytes, never a shard): the engine plans there (settings check, shard ids, array shape) and
    its metadata is pushed to the bucket before the workers start.
    """

    def __init__(self, store: RemoteStore, lease: Lease, skeleton: Path):
        self.store, self.lease, self.skeleton = store, lease, skeleton
        self.remote = _RemoteSide(store, lease)
        self.url = store.url
        self._raw: dict[int, bytes] = {}  # shard -> the bucket's commit record as pulled

    def pull(self) -> None:
        """The bucket's metadata objects and commit records into the skeleton."""
        local = _LocalSide(self.skeleton)
        for key in PRIORS.metadata:
            if (raw := self.remote.read(key)) is not None:
                local.write(key, raw)
        if any(_COMMIT.match(k) for k in self.remote.keys(COMMITS)):
            for shard, (_, raw) in _commits(self.remote, _rows_per_shard(self.remote)).items():
                local.write(_commit_key(shard), raw)
                self._raw[shard] = raw

    def usable(self, keys: list[str]) -> dict[int, dict[str, Any]]:
        """Committed shards holding any of ``keys``, each verified against its commit digest; a damaged
        one is moved aside in the bucket (fenced) with a `DamagedShardWarning`, so its rows are computed again."""
        import warnings

        commits, wanted = shardstore.read_commits(self.skeleton), set(keys)
        rows = _rows_per_shard(_LocalSide(self.skeleton))  # the engine made or checked the skeleton's array
        self.remote.listing(refresh=True)
        memo = self._verified()  # shards verified by an earlier run, unchanged since: not downloaded again
        todo = [shard for shard, rec in sorted(commits.items())
                if not wanted.isdisjoint(rec["keys"]) and memo.get(str(shard)) != self._seen(shard, rec)]
        with ThreadPoolExecutor(max_workers=PARALLEL, thread_name_prefix="ptg-verify") as pool:
            problems = list(pool.map(lambda shard: self._problem(shard, commits[shard], rows), todo))
        good = {str(shard): self._seen(shard, commits[shard]) for shard, why in zip(todo, problems) if why is None}
        if good:
            atomic_write_json(self._memo_path(), {**memo, **good})
        for shard, why in zip(todo, problems):
            if why is not None:
                self.remote.quarantine(shard, self._raw[shard])
                shardstore.quarantine(self.skeleton, shard)
                warnings.warn(f"{PRIORS.error(self.url, shard, commits[shard], rows, why)} It will be computed again.",
                              shardstore.DamagedShardWarning, stacklevel=3)
                del commits[shard]
        return commits

    def _memo_path(self) -> Path:
        folder = _cache_folder("verified", self.store.location)
        return folder.with_name(folder.name + ".json")

    def _verified(self) -> dict[str, str]:
        """shard -> `_seen` when this user's earlier run verified it (``$PTG_CACHE/verified/``)."""
        try:
            memo = json.loads(self._memo_path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return memo if isinstance(memo, dict) else {}

    def _seen(self, shard: int, rec: dict[str, Any]) -> str:
        """What the bucket holds for a shard now: its digest, its objects' sizes and e_tags (a rewrite changes them)."""
        listing = self.remote.listing()
        objects = [[k, listing[k]["size"], listing[k]["e_tag"]] for k in self.remote.keys(f"priors/c/{shard}")]
        if not objects or any(e is None for _, _, e in objects):
            return ""  # a service without e_tags: always verified
        return json.dumps([rec["sha256"], objects])

    def _problem(self, shard: int, rec: dict[str, Any], rows: int) -> str | None:
        """Why a committed shard of the bucket cannot be reused: its objects are downloaded into a private
        temporary folder (one shard at a time per thread, removed at once) and verified there."""
        import tempfile

        keys = self.remote.keys(f"priors/c/{shard}")
        size = sum(self.remote.listing()[k]["size"] for k in keys)
        if size != rec.get("bytes", size):
            return f"holds {size} bytes, its commit records {rec['bytes']} (damaged or incomplete)"
        with tempfile.TemporaryDirectory(prefix="ptg-verify-") as tmp:
            local = _LocalSide(Path(tmp))
            local.write(ARRAY_META, _LocalSide(self.skeleton).read(ARRAY_META))  # type: ignore[arg-type]
            for key in keys:
                if (data := self.remote.read(key, limit=int(rec.get("bytes") or MAX_SHARD_BYTES))) is not None:
                    local.write(key, data)
            return PRIORS.problem(Path(tmp), shard, rec, rows)

    def push_metadata(self) -> None:
        """The skeleton's metadata into the bucket (fenced; the array's shape never shrinks)."""
        self.remote.fence()
        _send_metadata(_LocalSide(self.skeleton), self.remote)

    def shards(self) -> BucketShards:
        local = _LocalSide(self.skeleton)
        return BucketShards(self.url, tuple((k, local.read(k)) for k in (SETTINGS, ARRAY_META, GROUP)))  # type: ignore[misc]

    def commit(self, shard: int, raw: bytes) -> None:
        """Create a worker's shard's commit record, once its objects are in the bucket whole (fenced).

        Raises:
            PtgError: the objects are missing or of another size than the record says, the record is
                not valid, another writer created it, or this coordinator's lease was taken over.
        """
        key = _commit_key(shard)
        rec = _record(self.remote, key, raw, _rows_per_shard(_LocalSide(self.skeleton)))
        size = sum(v["size"] for k, v in self.store.listing(f"priors/c/{shard}/").items())
        if size != rec["bytes"]:
            raise PtgError(f"{self.url}/priors/c/{shard} holds {size} bytes after its worker finished, its commit "
                           f"records {rec['bytes']}; nothing was committed for it: run the same command again")
        self.remote.fence()
        if not self.remote.write_new(key, raw) and self.remote.read(key) != raw:
            raise PtgError(f"{self.url}/{key} was created by another writer meanwhile; run the command again")
        _LocalSide(self.skeleton).write(key, raw)

    def nbytes(self) -> int:
        from .lease import PREFIX

        return sum(v["size"] for k, v in self.store.listing().items() if not k.startswith(PREFIX))


@contextmanager
def bucket_writer(location: Location | str, force: bool = False) -> Iterator[BucketWriter]:
    """Hold a bucket store's lease for a cluster run whose workers write the shards (`BucketWriter`).

    Raises:
        PtgError: the prefix holds foreign objects, another live writer holds the bucket, or the
            service failed (committed shards are kept; a rerun resumes).
    """
    import tempfile

    loc = location if isinstance(location, Location) else parse_location(location)
    store = RemoteStore(loc)
    _refuse_foreign(store, force)
    with Lease(store) as lease, tempfile.TemporaryDirectory(prefix="ptg-skeleton-") as tmp:
        skeleton = Path(tmp) / "store"
        with PRIORS.lock(skeleton, False):  # the engine's own checks hold for the skeleton too
            writer = BucketWriter(store, lease, skeleton)
            writer.pull()
            yield writer
