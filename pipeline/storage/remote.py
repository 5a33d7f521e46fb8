"""A store's prefix in a bucket, as whole objects: put, create-only put, get, list, size, delete.

Backend: zarr's own object-store class, `zarr.storage.ObjectStore`, over `obstore` (S3, GCS, Azure;
`obstore.store.from_url` picks the service from the URL and reads its credentials and endpoint from
that ecosystem's environment: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``AWS_ALLOW_HTTP`` for S3; ``GOOGLE_*`` / ``AZURE_*`` for the others). The create-only
put calls ``obstore.put(mode="create")`` on the store zarr wraps, because
``ObjectStore.set_if_not_exists`` hides whether this call or another one created the object, and the
lease (`ptg.pipeline.storage.lease`) must know.

Why whole objects and not zarr writing to the bucket: a remote store holds exactly a local store's
layout (shard objects, commit records, settings), and writers build whole shards locally with the
one store engine, then upload the shard object and, only after it is stored, its commit record
(`ptg.pipeline.storage.storecopy`). An object store has no partial writes, so an upload cut halfway leaves
either no object or the previous one — never half a shard under a commit record.

Every failure of the service (connection dropped, timeout, denied) is a `PtgError` naming the
object and saying that a rerun resumes; a missing object is ``None``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, TypeVar

from ..core.errors import PtgError
from .location import Location, parse_location

T = TypeVar("T")
MAX_META_BYTES = 64 << 20  # commit records, leases, zarr.json: anything larger is not ours
RETRIES = 3  # obstore retries each request this often (with backoff) before we name the failure
_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def check_key(key: str) -> str:
    """A key relative to the store root: plain names only (a listed key is never trusted to climb out).

    Raises:
        PtgError: a key with an empty, ``.`` or ``..`` part or unusual characters.
    """
    if not _KEY.match(key) or any(p in (".", "..") for p in key.split("/")):
        raise PtgError(f"object key {key!r} is not a key ptg writes (empty, '.' or '..' parts, or odd characters); "
                       "the store holds foreign objects: pass a prefix that only ptg writes to")
    return key


class RemoteStore:
    """Whole-object access to one store prefix in a bucket.

    Args:
        location: a remote `Location` (or its URL).
        retries: how often the client retries a failed request before the error is raised.
    """

    def __init__(self, location: Location | str, retries: int = RETRIES):
        import zarr.storage
        from obstore.store import from_url

        loc = location if isinstance(location, Location) else parse_location(location)
        if not loc.remote:
            raise ValueError(f"{loc} is a local folder, not a bucket URL")
        self.location = loc
        root = f"{loc.scheme}://{loc.bucket}/{loc.prefix}" if loc.prefix else f"{loc.scheme}://{loc.bucket}"
        from datetime import timedelta

        retry = {"max_retries": retries, "retry_timeout": timedelta(seconds=120),
                 "backoff": {"init_backoff": timedelta(seconds=0.1), "max_backoff": timedelta(seconds=2), "base": 2.0}}
        try:
            # no client_options here: passing any replaces those obstore reads from the environment (AWS_ALLOW_HTTP, ...)
            obs = from_url(root, retry_config=retry)
        except Exception as exc:  # obstore's configuration errors
            raise PtgError(f"cannot open {loc.url}: {exc}. Set the service's environment (for S3: AWS_ENDPOINT_URL, "
                           "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION)") from exc
        self.zarr_store = zarr.storage.ObjectStore(obs)  # also what zarr.open_group would read through
        self._obs = obs

    @property
    def url(self) -> str:
        return self.location.url

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        import obstore.exceptions as oe

        try:
            return fn()
        except (FileNotFoundError, oe.NotFoundError):
            raise
        except oe.InvalidPathError as exc:  # a foreign object's key (e.g. with '..'): the bucket's content, not the connection
            bad = re.search(r'[Pp]ath "([^"]{0,300})"', str(exc))
            shown = bad.group(1) if bad else key
            raise PtgError(f"{what} {self.url}/{key}: the bucket holds an object whose key {shown!r} is not a key ptg "
                           "writes (an empty, '.' or '..' part); ptg neither reads nor follows it. Remove that object "
                           f"(e.g. `aws s3 rm '{self.location.scheme}://{self.location.bucket}/{shown}'`), or use a "
                           "prefix only ptg writes to") from None
        except (oe.BaseError, OSError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise PtgError(f"{what} {self.url}/{key} failed ({type(exc).__name__}: {first}); check the connection and "
                           "the service's environment (AWS_ENDPOINT_URL, credentials), then run the same command "
                           "again: committed shards are kept and the rest resumes") from exc

    def _sync(self, coro: Any) -> Any:
        from zarr.core.sync import sync

        return sync(coro)

    def get(self, key: str, limit: int = MAX_META_BYTES) -> bytes | None:
        """The object's bytes, or None when it does not exist.

        Raises:
            PtgError: the service failed, or the object is larger than ``limit`` bytes.
        """
        from zarr.core.buffer import default_buffer_prototype

        check_key(key)
        size = self.size(key)
        if size is None:
            return None
        if size > limit:
            raise PtgError(f"{self.url}/{key} is {size} bytes, more than the {limit} this object may hold; it is not "
                           f"an object ptg wrote: remove it (e.g. `aws s3 rm {self.url}/{key}`) or use a prefix only "
                           "ptg writes to")
        buf = self._call("reading", key, lambda: self._sync(self.zarr_store.get(key, default_buffer_prototype())))
        return None if buf is None else buf.to_bytes()

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` as one object (replacing it): readers see the old object or the whole new one."""
        from zarr.core.buffer import default_buffer_prototype

        check_key(key)
        buf = default_buffer_prototype().buffer.from_bytes(data)
        self._call("uploading", key, lambda: self._sync(self.zarr_store.set(key, buf)))

    def put_new(self, key: str, data: bytes) -> bool:
        """Create the object only if it does not exist; True when this call created it."""
        import obstore
        import obstore.exceptions as oe

        check_key(key)

        def create() -> bool:
            try:
                obstore.put(self._obs, key, data, mode="create")
                return True
            except oe.AlreadyExistsError:
                return False
        return self._call("creating", key, create)

    def listing(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """key -> {"size", "e_tag", "last_modified"} of every object under ``prefix`` (one paged LIST)."""
        import obstore

        def run() -> dict[str, dict[str, Any]]:
            out = {}
            for batch in obstore.list(self._obs, prefix=prefix or None):
                for m in batch:
                    out[m["path"]] = {"size": int(m["size"]), "e_tag": m.get("e_tag"), "last_modified": m["last_modified"]}
            return out
        return self._call("listing", prefix or "(root)", run)

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when it does not exist."""
        check_key(key)
        try:
            return int(self._call("checking", key, lambda: self._sync(self.zarr_store.getsize(key))))
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        """Delete one object this process wrote (callers never pass keys they did not create)."""
        check_key(key)
        self._call("deleting", key, lambda: self._sync(self.zarr_store.delete(key)))
