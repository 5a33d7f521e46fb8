"""The image store: decoded images at memory speed, content-addressed, on the shared storage engine.

Why. Decoding a 2K PNG costs ~130 ms here, while a crop of the same decoded pixels from a memory
map costs ~0.1 ms; small restoration models on a GPU are bound by the decoding (BasicSR keeps its
training images in LMDB for the same reason). Decoded images are stored once, uncompressed, in
their decoded dtype, and every DataLoader worker reads them through the page cache: one copy in
memory whatever the worker count, and a crop reads only the rows it covers.

Layout of a store directory::

    STORE/settings.json                 schema, layout, target shard size
    STORE/shards/shard-000012.bin       raw image blocks, each C-contiguous H×W×C, 4 KiB aligned
    STORE/commits/shard-000012.json     keys of shard 12 and, per image, [offset, shape, dtype, sha256]
    STORE/writer.lock                   flock'd by the one writer
    STORE/.ptg-artifact.json            marks the folder as a ptg image store

Keys. A decoded source image is keyed by the SHA-256 of its file's bytes, the key of the priors
store, so a changed file is never served its old pixels (`ptg.ptgrm.train.data.InputGuard` checks
every read). Keys are plain strings and each image records its own dtype (uint8, uint16, float16,
float32) and shape, so derived images (e.g. a frozen restorer's outputs, keyed by the input's
SHA-256, the restorer's weights fingerprint and the view) fit the same store.

Values. uint8/uint16 images hold exactly the integers the file decoded to; `as_float` turns them
into the float32 values `ptg.pipeline.core.imageio.read_image` returns, bit for bit (same cast, same
division). An image whose float values are not such integers (e.g. float TIFF) is stored float32.

Guarantees are the storage engine's (`ptg.pipeline.storage.shardstore`): a shard file is written whole
(temp + fsync + rename), then committed; one writer holds the lock; a writer re-hashes the shards
it reuses and quarantines damaged ones, whose images are then decoded again. A reader checks a
shard's file size when it first maps it and an image's SHA-256 the first time it touches that
image (once per image per reader process: 8 MB hashes in ~10 ms), so damage is a `PtgError`
naming the store, shard and image, never wrong pixels.

Ties to the sources (a shared store is input). A record's digests only show that the bytes are the
ones its writer committed, not that they are the pixels of the file its key names. So a reader also
refuses a key committed in two shards, checks each record against its file's header (H×W, gray or
colour), and serves a record only once it is shown true of its file (`ImageStore.vouch`): records
this user's writer decoded and committed are known true (`ptg.pipeline.storage.provenance`); any
other (a teammate's folder, a bucket's mirror, a store from before this check) is decoded once per
image, compared with its digest, shape and dtype, and remembered, so the second use decodes nothing.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Sequence

import numpy as np

from . import provenance, shardstore
from ..core.errors import PtgError
from ..core.fsio import atomic_write_json, file_sha256
from ..core.limits import max_pixels

KIND = "image-store"
SCHEMA_VERSION = 1
SHARDS = "shards"
SETTINGS = "settings.json"
ALIGN = 4096  # image blocks start on page boundaries: a crop maps only the pages of its rows
DTYPES = ("uint8", "uint16", "float16", "float32")
SCALE = {"uint8": 255.0, "uint16": 65535.0}
SHARD_BYTES = 256 << 20  # target shard size: ~30 2K photos; one hash pass per reused shard
MAX_SIDE = 1 << 16  # bounds what a commit record can ask a reader to map
VOUCH_BYTES = 2 << 30  # memory the decodes of `ImageStore.vouch` may hold at once (threads bounded by it)
MAX_KEY = 512  # characters of a key (a file digest, or an F output's three-part key)
MAX_SHARD_BYTES = 1 << 40  # a settings.json asking for larger shards is not one ptg wrote
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def default_store() -> Path:
    """``$PTG_CACHE/images``: the store `ptg data cache` writes by default, shared by all datasets."""
    from .store import cache_root

    return cache_root() / "images"


def store_arg(value: str | Path | None) -> str | Path:
    """An image store as the user named it: a local folder (expanded), a bucket URL (``s3://...``,
    kept as text: a `Path` would collapse its ``//``), or, for None/"", `default_store`."""
    from .location import parse_location

    if not value:
        return default_store()
    loc = parse_location(value, "the image store")
    return loc.url if loc.remote else loc.path.expanduser()  # type: ignore[union-attr]


def _layout() -> Any:
    """The image store's kind for `ptg.pipeline.storage.storecopy` (its mirror and stage): what a shard's
    object is, how it is verified, and which lock and command belong to it."""
    from .storecopy import Layout

    def shard_keys(side: Any, shard: int) -> list[str]:
        key = f"{SHARDS}/shard-{shard:06d}.bin"
        return [k for k in side.keys(SHARDS) if k == key]

    def lock(folder: Path, force: bool) -> Any:
        return shardstore.writer_lock(folder, KIND, f"the image store {folder}", force,
                                      cleanup=lambda s: shardstore.remove_leftovers(s, [s / SHARDS]))

    return Layout("image store", SETTINGS, (SETTINGS,), shard_keys, lambda path, shard, rec, _: shard_problem(path, shard, rec),
                  lambda where, shard, rec, _, why: _error(where, shard, why), _key_ok,
                  lock, "ptg data cache")


def _folder(store: str | Path) -> Path:
    """The local folder of an image store: itself, or a bucket store's mirror under ``$PTG_CACHE/remote``
    (pulled when its commits changed; every shard verified on first use, as in any local store)."""
    from .location import parse_location

    loc = parse_location(store, "the image store")
    if not loc.remote:
        return loc.path.expanduser()  # type: ignore[union-attr]
    from .storecopy import mirror

    return mirror(loc, layout=_layout())


def shard_path(store: Path, shard: int) -> Path:
    return Path(store) / SHARDS / f"shard-{shard:06d}.bin"


def as_float(arr: np.ndarray) -> np.ndarray:
    """float32 values in [0, 1] of a stored block (or a view of one), as `read_image` returns them."""
    scale = SCALE.get(arr.dtype.name)
    if scale is None:
        return arr if arr.dtype == np.float32 else arr.astype(np.float32)
    out = arr.astype(np.float32)
    out /= np.float32(scale)  # the very operation of read_image: same bits
    return out


def encode(img: np.ndarray) -> np.ndarray:
    """The smallest stored form of a `read_image` result that gives back exactly its values."""
    for name, scale in SCALE.items():
        q = np.round(img * np.float32(scale)).astype(name)
        if np.array_equal(as_float(q), img):
            return q
    return np.ascontiguousarray(img, dtype=np.float32)


def _error(store: Path, shard: int, what: str) -> PtgError:
    return PtgError(f"the image store {store}: shard {shard} {what}. Its pixels are not served. Repair: run "
                    f"`ptg data cache --manifest M --store {store}` again (it re-decodes damaged shards); "
                    f"`ptg data info {store} --verify` lists them all.")


def _count(v: Any, lo: int, hi: int) -> bool:
    """`v` is a JSON integer (not a bool, not a float such as ``1e400``) within [lo, hi]."""
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _check_item(store: Path, shard: int, item: Any, size: Any) -> tuple[int, tuple[int, ...], str, str]:
    """One commit-record entry [offset, shape, dtype, sha256], checked so a file cannot ask for
    an absurd mapping: a known dtype, bounded integer sides, and a block inside the shard's committed `size`."""
    ok = isinstance(item, list) and len(item) == 4
    if ok:
        offset, shape, dtype, digest = item
        ok = (isinstance(shape, list) and len(shape) == 3 and all(_count(v, 1, MAX_SIDE) for v in shape[:2])
              and shape[2] in (1, 3) and _count(shape[2], 1, 3) and isinstance(dtype, str) and dtype in DTYPES
              and isinstance(digest, str) and bool(_HEX64.match(digest)) and _count(size, 0, 1 << 62)
              and _count(offset, 0, 1 << 62) and offset % ALIGN == 0)
    if not ok or offset + _nbytes(shape, dtype) > size:
        raise _error(store, shard, f"has a malformed commit record entry {str(item)[:120]}")
    shape = tuple(shape)
    if shape[0] * shape[1] > max_pixels():  # decoding refused such an image; a record claiming one is crafted
        raise PtgError(f"the image store {store}: shard {shard} records a {shape[1]}x{shape[0]} image, over the pixel "
                       f"limit of {max_pixels():,}; if the store is genuine, raise PTG_MAX_PIXELS")
    return offset, shape, dtype, digest


def _check_record(store: Path, shard: int, rec: dict[str, Any]) -> list[str]:
    """A commit record's own fields (a shared store is input): its keys, a list of plain strings as
    long as its items; its shard size and digest. Returns the keys."""
    keys, items = rec.get("keys"), rec.get("items")
    if not (isinstance(keys, list) and isinstance(items, list) and len(keys) == len(items)):
        raise _error(store, shard, "has a malformed commit record (keys and items must be lists of one length)")
    bad = next((k for k in keys if not _key_ok(k)), None)
    if bad is not None or not keys:
        raise _error(store, shard, f"has a malformed commit record key {str(bad)[:80]!r} (keys are strings of 1 to "
                     f"{MAX_KEY} characters)")
    if not (_count(rec.get("bytes"), 0, 1 << 62) and isinstance(rec.get("sha256"), str) and _HEX64.match(rec["sha256"])):
        raise _error(store, shard, f"has a malformed commit record (bytes {str(rec.get('bytes'))[:40]}, sha256 "
                     f"{str(rec.get('sha256'))[:70]!r})")
    return keys


def _key_ok(k: Any) -> bool:
    return isinstance(k, str) and 0 < len(k) <= MAX_KEY


def _nbytes(shape: Sequence[int], dtype: str) -> int:
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class Entry:
    """Where one image lives: shard, byte offset, H×W×C shape, dtype, SHA-256 of its bytes."""

    shard: int
    offset: int
    shape: tuple[int, ...]
    dtype: str
    sha256: str


class ImageStore:
    """Read-only access to an image store: `array(key)` is a memory-mapped view (no copy, no decode).

    Pickles without its memory maps (a spawned DataLoader worker maps the files again; a forked
    one shares the parent's maps and page cache).
    """

    def __init__(self, path: str | Path):
        self.path = _folder(path)  # a bucket URL: read through its local mirror
        self.shown = path if "://" in str(path) else self.path  # messages name what the user named
        if not (self.path / SETTINGS).is_file():
            raise PtgError(f"{self.shown} is not an image store (no {SETTINGS}); build one with "
                           f"`ptg data cache --manifest M --store {self.shown}`")
        self.settings = _read_settings(self.path)
        self.commits = shardstore.read_commits(self.path)
        self._index: dict[str, Entry] = {}
        self.digests: dict[int, str] = {}  # shard -> its record's `provenance.record_digest`
        for shard, rec in sorted(self.commits.items()):
            self.digests[shard] = provenance.record_digest(rec)
            for key, item in zip(_check_record(self.shown, shard, rec), rec["items"]):
                if key in self._index:  # which shard is right cannot be told from the store: neither is served
                    raise _duplicate(self.shown, key, self._index[key].shard, shard)
                self._index[key] = Entry(shard, *_check_item(self.shown, shard, item, rec["bytes"]))
        self._maps: dict[int, np.memmap] = {}
        self._verified: set[str] = set()
        self._vouched: set[str] = set()  # keys whose record is shown true of their source file (`vouch`)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self._index]

    def entry(self, key: str) -> Entry:
        try:
            return self._index[key]
        except KeyError:
            raise PtgError(f"image {key[:16]}... is not in the image store {self.shown}; run `ptg data cache "
                           f"--manifest M --store {self.shown}` on the manifest that holds it") from None

    def _map(self, shard: int) -> np.memmap:
        mm = self._maps.get(shard)
        if mm is None:
            path, rec = shard_path(self.path, shard), self.commits[shard]
            try:
                size = shardstore.file_size(path)
            except OSError:
                raise _error(self.shown, shard, "is missing its file") from None
            if size != rec["bytes"] or path.is_symlink():
                raise _error(self.shown, shard, f"is {size} bytes on disk, {rec['bytes']} committed (truncated or replaced)")
            mm = self._maps[shard] = np.memmap(path, dtype=np.uint8, mode="r")
        return mm

    def array(self, key: str) -> np.ndarray:
        """The stored H×W×C block of `key` (its own dtype), a read-only view of the memory map."""
        e = self.entry(key)
        raw = self._map(e.shard)[e.offset : e.offset + _nbytes(e.shape, e.dtype)]
        if key not in self._verified:  # first touch in this process: the bytes must be the committed ones
            if hashlib.sha256(raw).hexdigest() != e.sha256:
                raise _error(self.shown, e.shard, f"holds image {key[:16]}... whose bytes do not match their commit "
                                                 "digest (damaged data)")
            self._verified.add(key)
        return raw.view(e.dtype).reshape(e.shape)

    def image(self, key: str) -> np.ndarray:
        """float32 H×W×3 in [0, 1], the values `read_image` gives for the source file."""
        arr = self.array(key)
        return as_float(np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr)

    def verify(self) -> list[int]:
        """Shard ids whose file no longer matches its commit (size or SHA-256 of the file, or of one image)."""
        return [s for s in sorted(self.commits) if self.problem(s) is not None]

    def problem(self, shard: int) -> str | None:
        """Why shard `shard` cannot be trusted (its file, then each image's bytes against its digest), or None."""
        rec = self.commits[shard]
        why = shard_problem(self.path, shard, rec)
        if why is not None:
            return why
        for key in rec["keys"]:
            e = self._index[key]
            raw = self._map(shard)[e.offset : e.offset + _nbytes(e.shape, e.dtype)]
            if hashlib.sha256(raw).hexdigest() != e.sha256:
                return f"holds image {key[:16]}... whose bytes do not match its recorded digest"
        return None

    # -- ties to the source files ---------------------------------------------------------------

    def check_header(self, path: str | Path, key: str) -> None:
        """The record of `key` must say the H×W and channels of `path`'s header (read cheaply, no decoding).

        Raises:
            PtgError: the store records another size or a gray block for a colour file.
        """
        from ..core.imageio import image_header

        e = self.entry(key)
        h, w, c = image_header(path)
        if e.shape[:2] != (h, w) or (e.shape[2] == 1 and c != 1):
            raise self._not_source(path, key, f"records a {e.shape[1]}x{e.shape[0]}x{e.shape[2]} image, the file's "
                                              f"header says {w}x{h}x{c}")

    def vouched(self, key: str) -> bool:
        """Whether `key`'s record is known true of its source (this user wrote or verified it)."""
        if key in self._vouched:
            return True
        e = self.entry(key)
        if key in provenance.known(KIND, self.digests[e.shard]):
            self._vouched.add(key)
            return True
        return False

    def vouch(self, paths: Sequence[Path], keys: Sequence[str], workers: int | None = None) -> int:
        """Show that this store's records of `paths` (keyed `keys`) hold their files' pixels, before any is served.

        Every record is checked against its file's header; a record this user did not write or verify
        before is checked by decoding its file once and comparing the result with the record's digest,
        shape and dtype, then remembered (`ptg.pipeline.storage.provenance`), so a store costs decoding
        only on its first use. Keys the store lacks are skipped. Returns the number of files decoded.

        Raises:
            PtgError: a record that is not its file's pixels (naming the file, the store and the fix).
        """
        todo = []
        for path, key in dict.fromkeys(zip(paths, keys)):
            if key in self:
                self.check_header(path, key)
                if not self.vouched(key):
                    todo.append((Path(path), key))
        if not todo:
            return 0
        if workers is None:  # decodes in flight: each holds float32 pixels and their encoded copy
            largest = max(3 * 6 * int(np.prod(self.entry(k).shape[:2])) for _, k in todo)
            workers = max(1, min(8, os.cpu_count() or 1, VOUCH_BYTES // largest))
        by_record: dict[str, list[str]] = {}
        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _, (_, key) in zip(pool.map(lambda pk: self.vouch_decoded(*pk, remember=False), todo), todo):
                    by_record.setdefault(self.digests[self.entry(key).shard], []).append(key)
        finally:  # one ledger write per record, from this thread (what was shown true stays shown, even on an error)
            for digest, shown in by_record.items():
                provenance.remember(KIND, digest, shown)
        return len(todo)

    def vouch_decoded(self, path: Path, key: str, img: np.ndarray | None = None, remember: bool = True) -> np.ndarray:
        """Compare `key`'s record with the decoded `path` (`img`, if already decoded) and remember it
        (``remember``; `vouch` writes the ledger once per record instead).

        Returns the decoded float32 image (what `image` will serve)."""
        from ..core.imageio import read_image

        img = read_image(path) if img is None else img
        block, e = encode(img), self.entry(key)
        got = (tuple(block.shape), block.dtype.name, hashlib.sha256(np.ascontiguousarray(block)).hexdigest())
        gray = e.shape[2] == 1 and got[0] == e.shape[:2] + (3,) and np.array_equal(block[..., :1].repeat(3, -1), block)
        if gray:  # a gray file stored as one channel: the same pixels once replicated
            got = (e.shape, got[1], hashlib.sha256(np.ascontiguousarray(block[..., :1])).hexdigest())
        if got != (e.shape, e.dtype, e.sha256):
            why = "other pixels" if got[:2] == (e.shape, e.dtype) else f"a {got[1]} {got[0]} block, not {e.dtype} {e.shape}"
            raise self._not_source(path, key, f"holds {why} than the file decodes to here")
        if remember:
            provenance.remember(KIND, self.digests[e.shard], [key])
        self._vouched.add(key)
        return img

    def _not_source(self, path: str | Path, key: str, why: str) -> PtgError:
        return PtgError(f"the image store {self.shown}: image {key[:16]}... of {path} {why}; the store would serve "
                        "pixels that are not this file's, so none are served. If the store is someone else's (or "
                        "was built with another image decoder), train on the files (data.images=files) or build "
                        f"your own store: `ptg data cache --manifest M --store NEW_FOLDER`")


def _duplicate(store: Any, key: str, first: int, second: int) -> PtgError:
    return PtgError(f"the image store {store}: image {key[:16]}... is committed in shard {first} and again in shard "
                    f"{second}; ptg's writer commits a key once, so the store is damaged or crafted and neither is "
                    f"served. Move one of {shardstore.COMMITS}/shard-{first:06d}.json and shard-{second:06d}.json "
                    f"aside, then run `ptg data cache --manifest M --store {store}` (it re-decodes what is missing)")


def shard_problem(store: Path, shard: int, rec: dict[str, Any]) -> str | None:
    """Why a committed image shard cannot be trusted (size, then SHA-256 of the file), or None."""
    path = shard_path(store, shard)
    try:
        if path.is_symlink():
            return "is a symbolic link, not a file ptg wrote"
        if shardstore.file_size(path) != rec["bytes"]:
            return f"is {shardstore.file_size(path)} bytes on disk, {rec['bytes']} committed"
        return None if file_sha256(path) == rec["sha256"] else "does not match its commit digest (damaged data)"
    except OSError:
        return "is missing its file"


def _read_settings(store: Path) -> dict[str, Any]:
    """settings.json of a store a teammate may share: its own folders are no links out (the shard
    files and records are read through them), the file bounded JSON holding an object."""
    from ..core.fsio import no_symlink
    from ..core.limits import read_json

    for name in (SETTINGS, SHARDS, shardstore.COMMITS):
        no_symlink(store / name, f"the image store's {name}")
    settings = read_json(store / SETTINGS, "image store settings")
    if not isinstance(settings, dict):
        raise PtgError(f"{store / SETTINGS} is not a JSON object; {store} is not an image store ptg wrote")
    if settings.get("schema_version") != SCHEMA_VERSION or settings.get("kind") != KIND:
        raise PtgError(f"{store} is not an image store of schema {SCHEMA_VERSION} (its {SETTINGS} says kind "
                       f"{str(settings.get('kind'))[:40]!r}, schema {str(settings.get('schema_version'))[:20]}); use another --store")
    if not _count(settings.get("shard_bytes"), 1, MAX_SHARD_BYTES):
        raise PtgError(f"{store / SETTINGS}: shard_bytes is {str(settings.get('shard_bytes'))[:40]!r}, not a whole number "
                       f"of bytes up to {MAX_SHARD_BYTES}; the file is damaged or crafted: use another --store")
    return settings


def open_image_store(path: str | Path | None = None) -> ImageStore:
    """Open an image store (default: `default_store`)."""
    return ImageStore(path or default_store())


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass
class CacheResult:
    """What a `cache_images` run did."""

    store: Path
    written: int  # images decoded and written by this run
    reused: int  # files whose content was already committed (verified) or listed twice
    shards: int  # shards written by this run
    bytes: int  # bytes of shard files written by this run


def _settings(store: Path, shard_bytes: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    path = store / SETTINGS
    if path.is_file():
        return _read_settings(store)  # checked: a store someone else made is input
    meta = {"kind": KIND, "schema_version": SCHEMA_VERSION, "layout": "shards/shard-N.bin: C-contiguous HxWxC blocks, "
            f"{ALIGN}-byte aligned; commits/shard-N.json items [offset, shape, dtype, sha256]", "shard_bytes": shard_bytes,
            **(extra or {})}
    atomic_write_json(path, meta)
    return meta


def _write_shard(store: Path, shard: int, keys: list[str], blocks: list[np.ndarray], decoded: bool = False) -> int:
    """Write one shard file whole (atomically), then commit it; return its size.

    ``decoded``: the blocks are this process's decoding of the files the keys name, so the record is
    true of its sources by construction: remembered as such (`provenance`), never decoded again to check."""
    items, offset = [], 0
    for b in blocks:
        items.append([offset, list(b.shape), b.dtype.name, hashlib.sha256(np.ascontiguousarray(b)).hexdigest()])
        offset += _padded(b.nbytes)
    h = hashlib.sha256()

    def write(f: IO[bytes]) -> None:
        for b in blocks:
            data = np.ascontiguousarray(b).tobytes() + bytes(_padded(b.nbytes) - b.nbytes)
            h.update(data)
            f.write(data)

    shardstore.write_file(shard_path(store, shard), write)
    rec = {"shard": shard, "n": len(keys), "keys": keys, "items": items, "sha256": h.hexdigest(), "bytes": offset}
    shardstore.write_commit(store, shard, rec)
    if decoded:
        provenance.remember(KIND, provenance.record_digest(rec), keys)
    return offset


def _decode(path: Path, key: str) -> np.ndarray:
    from ..core.imageio import read_image

    img = encode(read_image(path))
    if file_sha256(path) != key:  # changed between hashing and decoding: its key would name other pixels
        raise PtgError(f"the image {path} changed while the image store was being built; run again when it is stable")
    return img


def file_keys(paths: Sequence[Path]) -> list[str]:
    """SHA-256 of each file's bytes (threads: hashlib releases the GIL on large buffers)."""
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(file_sha256, paths))


def manifest_paths(samples: Sequence[Any]) -> list[Path]:
    """Unique image files of manifest samples (inputs and targets), in manifest order."""
    return list(dict.fromkeys(p for s in samples for p in (s.input, s.target) if p is not None))


def cache_images(paths: Sequence[Path], store: str | Path | None = None, shard_bytes: int = SHARD_BYTES,
                 on_progress: Callable[[int], None] | None = None, force: bool = False,
                 keys: Sequence[str] | None = None) -> CacheResult:
    """Decode `paths` into the image store (resumable: committed images are verified and kept).

    Args:
        paths: image files; duplicates (same bytes) are stored once.
        store: the store folder (default `default_store`).
        shard_bytes: target size of a shard file.
        on_progress: called with the number of images done (reused or written) as they are.
        force: write into an existing folder that is not an image store (nothing in it is deleted).
        keys: the files' SHA-256 if already known.

    Raises:
        PtgError: the folder holds something else, another writer holds it, or an image is unreadable.
    """
    if store and "://" in str(store):  # a bucket: the same engine on a local stage, under the bucket's lease
        return _cache_to_bucket(paths, str(store), shard_bytes, on_progress, force, keys)
    store = Path(store or default_store()).expanduser()
    paths = [Path(p) for p in paths]
    keys = list(keys) if keys is not None else file_keys(paths)
    with shardstore.writer_lock(store, KIND, f"the image store {store}", force,
                                cleanup=lambda s: shardstore.remove_leftovers(s, [s / SHARDS])):
        shard_bytes = int(_settings(store, shard_bytes)["shard_bytes"])
        commits = shardstore.reuse_verified(store, lambda s, rec: shard_problem(store, s, rec),
                                            lambda s, rec, why: _error(store, s, why), keys)
        have = {k for rec in commits.values() for k in rec["keys"]}
        todo = list({k: p for k, p in zip(keys, paths) if k not in have}.items())  # one file per distinct content
        if on_progress:
            on_progress(len(paths) - len(todo))
        return _write_missing(store, todo, commits, shard_bytes, on_progress, len(paths) - len(todo))


def _cache_to_bucket(paths: Sequence[Path], url: str, shard_bytes: int, on_progress: Callable[[int], None] | None,
                     force: bool, keys: Sequence[str] | None) -> CacheResult:
    """`cache_images` into ``s3://...``: written whole in a local stage, then its new shards pushed."""
    from dataclasses import replace

    from .location import parse_location
    from .storecopy import staged_writer

    loc = parse_location(url, "--store")
    with staged_writer(loc, force=force, layout=_layout()) as stage:
        res = cache_images(paths, stage, shard_bytes, on_progress, force, keys)
    return replace(res, store=loc.url)  # type: ignore[arg-type]


def _write_missing(store: Path, todo: list[tuple[str, Any]], commits: dict[int, Any], shard_bytes: int,
                   on_progress: Callable[[int], None] | None, reused: int,
                   make: Callable[[Any, str], np.ndarray] = _decode) -> CacheResult:
    """Decode the images not yet stored and write them in whole shards of about `shard_bytes`."""
    taken, nshards, nbytes = set(commits), 0, 0
    keys: list[str] = []
    blocks: list[np.ndarray] = []

    def flush() -> None:
        nonlocal nshards, nbytes
        shard = shardstore.free_ids(taken, 1)[0]
        taken.add(shard)
        nbytes += _write_shard(store, shard, keys[:], blocks[:], decoded=make is _decode)
        nshards += 1
        if on_progress:
            on_progress(len(keys))
        keys.clear()
        blocks.clear()

    for key, path in todo:
        blocks.append(make(path, key))
        keys.append(key)
        if sum(_padded(b.nbytes) for b in blocks) >= shard_bytes:
            flush()
    if keys:
        flush()
    return CacheResult(store, len(todo), reused, nshards, nbytes)


def store_arrays(keys: Sequence[str], make: Callable[[str], np.ndarray], store: str | Path,
                 shard_bytes: int = SHARD_BYTES, settings: dict[str, Any] | None = None) -> CacheResult:
    """Write images computed by ``make(key)`` (e.g. a frozen restorer's outputs) under string keys.

    The writer of `cache_images` (one lock, whole shards, committed keys verified and kept), for
    derived images: resumable, a key committed before is not computed again.

    Args:
        keys: the keys to hold; ``make(key)`` returns its H×W×C block (a dtype of `DTYPES`).
        store: the store folder.
        shard_bytes: target size of a shard file (smaller: less lost to a crash).
        settings: extra entries of a new store's settings.json (what the images are; read back
            with `ImageStore.settings`).
    """
    store = Path(store).expanduser()
    with shardstore.writer_lock(store, KIND, f"the image store {store}",
                                cleanup=lambda s: shardstore.remove_leftovers(s, [s / SHARDS])):
        shard_bytes = int(_settings(store, shard_bytes, settings)["shard_bytes"])
        commits = shardstore.reuse_verified(store, lambda s, rec: shard_problem(store, s, rec),
                                            lambda s, rec, why: _error(store, s, why), keys)
        have = {k for rec in commits.values() for k in rec["keys"]}
        todo = [(k, k) for k in dict.fromkeys(keys) if k not in have]
        return _write_missing(store, todo, commits, shard_bytes, None, len(keys) - len(todo),
                              make=lambda key, _: make(key))


# ---------------------------------------------------------------------------------------------
# Health, sizing and the loader other stages use


def store_info(path: str | Path, verify: bool = False) -> dict[str, Any]:
    """Size and health of an image store, without reading pixels unless `verify` (a bucket: its mirror's)."""
    shown, path = path, _folder(path)
    st = ImageStore(path)
    commits = st.commits
    problems = shardstore.size_problems(path, commits, lambda s: [shard_path(path, s)])
    if verify:
        problems += [f"shard {s}: {why}" for s in sorted(commits) if (why := st.problem(s)) is not None]
    leftovers = [p for p in path.rglob("*") if ".tmp-" in p.name]
    if leftovers:
        problems.append(f"{len(leftovers)} temporary file(s) of an interrupted writer (removed by the next `ptg data cache`)")
    dtypes: dict[str, int] = {}
    for e in st._index.values():
        dtypes[e.dtype] = dtypes.get(e.dtype, 0) + 1
    return {"path": str(shown) if "://" in str(shown) else str(path), "images": len(st), "shards": len(commits), "bytes": sum(r["bytes"] for r in commits.values()),
            "dtypes": dtypes, "problems": problems}


def decoded_bytes(paths: Sequence[Path]) -> int:
    """The store size `paths` need as uint8 RGB (from their headers: nothing decoded)."""
    from ..core.imageio import image_size

    return sum(_padded(h * w * 3) for h, w in (image_size(p) for p in paths))


def fits_disk(store: Path, need: int, share: float = 0.5) -> bool:
    """Whether `need` bytes fit in `share` of the free space where `store` lives."""
    folder = shardstore.cache_root() if "://" in str(store) else Path(store)  # a bucket store is built in a local stage
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return need <= share * shutil.disk_usage(folder).free


def image_loader(store: str | Path | None = None) -> Callable[[str | Path], np.ndarray]:
    """A drop-in for `read_image(path)` that serves decoded pixels from the store when it holds the
    file's current bytes (keyed by their SHA-256), and decodes the file otherwise.

    For `ptg eval`, validation and the study: ``load = image_loader(); img = load(path)``. A record
    is served only once it is shown true of the file (`ImageStore.vouch`): the first use of a store
    someone else wrote decodes each file once and compares; later uses read the store.
    """
    from ..core.imageio import read_image

    try:
        st: ImageStore | None = ImageStore(store or default_store())
    except PtgError:
        if store is not None:
            raise
        st = None  # no default store yet: decode every file

    def load(path: str | Path) -> np.ndarray:
        if st is not None:
            key = file_sha256(path)  # hashing the file's bytes is far cheaper than decoding them
            if key in st:
                st.check_header(path, key)
                if st.vouched(key):
                    return st.image(key)
                return st.vouch_decoded(Path(path), key)  # first use of a record not known true: decoded once, compared
        return read_image(path)

    return load
