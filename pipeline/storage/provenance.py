"""What this user has seen to be true of a store's records: the local verification ledger.

An image store's commit record claims, for each key (the SHA-256 of a source file's bytes), the
SHA-256, shape and dtype of the decoded pixels it stores. Its readers already check that the bytes
they serve hash to the claimed digest; nothing in a store shows that the claim itself is true, so
a teammate's store (or a bucket's) could serve self-consistent other pixels under a real file's key.

A claim is shown true in one of two ways, and then remembered here, outside every store:

- this user's writer decoded the file and wrote the record (`remember`, called at commit);
- a reader decoded the file once and found exactly the recorded digest, shape and dtype
  (`ptg.pipeline.storage.imagestore.ImageStore.vouch`).

Layout: ``$PTG_CACHE/verified/image-store/<ab>/<record digest>.json`` holding ``{"keys": [...]}``: the
keys of that commit record shown true. A record digest is the SHA-256 of the record's canonical
JSON, so it covers every claim the record makes (keys, offsets, shapes, dtypes, digests): an edited
record has another digest and is verified again; two stores holding the same record share the
entry, which is sound because the claims are the same. Entries not `written_by_you` (a shared
``$PTG_CACHE``) are ignored.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from ..core.errors import PtgError
from ..core.fsio import atomic_write_json, written_by_you
from ..core.limits import read_json

FOLDER = "verified"


def record_digest(rec: dict[str, Any]) -> str:
    """SHA-256 of a commit record's canonical JSON (every claim it makes)."""
    return hashlib.sha256(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _entry(kind: str, digest: str) -> Path:
    from .shardstore import cache_root

    return cache_root() / FOLDER / kind / digest[:2] / f"{digest}.json"


def known(kind: str, digest: str) -> set[str]:
    """Keys of the record `digest` this user has shown true (empty when none, or the entry is not theirs)."""
    path = _entry(kind, digest)
    if not path.is_file() or not written_by_you(path):
        return set()
    try:
        keys = read_json(path, "verification record").get("keys")
    except (PtgError, AttributeError):
        return set()  # a damaged entry proves nothing: the keys are verified again
    return {k for k in keys if isinstance(k, str)} if isinstance(keys, list) else set()


def remember(kind: str, digest: str, keys: Iterable[str]) -> None:
    """Add `keys` of the record `digest` to the ledger (atomic; a lost race only costs a re-check)."""
    keys = set(keys)
    if not keys:
        return
    have = known(kind, digest)
    if keys <= have:
        return
    path = _entry(kind, digest)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"keys": sorted(have | keys)})
    except OSError:
        pass  # a read-only cache: the claims are checked again next time, nothing is served unverified
