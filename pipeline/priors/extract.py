"""The extraction engine behind `ptg extract-priors`: run a frozen encoder once over a manifest.

One writer, several sources of rows (`RowSource`): a frozen image encoder (`EncoderRows`) or the
manifest's recorded degradation parameters (`ptg.pipeline.encoders.degradation.DegradationRows`).
Keys, the plan, the store's metadata, shard allocation, commits and the run record are the
engine's, whatever computes the rows.

Flow (one coordinator per store, holding its writer lock):

1. Key every degraded image by the SHA-256 of its bytes (threads, while the encoder loads); keys
   already committed in the store are reused, duplicates within the manifest are computed once.
2. Allocate whole shards for the rest, in manifest order (`store.allocate_shards`).
3. Compute: each image is decoded once, by a background thread (``loader_workers=0``) or by
   DataLoader workers, which preprocess every view ahead of the encoder; the main thread only runs
   batched inference under ``torch.inference_mode``; a background thread writes and commits each
   shard. With ``workers=N`` (a local dask cluster) or ``dask_scheduler=ADDRESS`` (an existing
   one) each dask task computes and commits one shard; into a bucket, each task uploads its shard
   and the coordinator commits it under the bucket's lease (`ptg.pipeline.storage.bucketwriter.bucket_writer`).
4. Bad inputs: a file that cannot be decoded (or is too small for a tile grid) is found where it
   is decoded. A shard holding one is never committed, so it is never stored as zeros; the run
   goes on, commits every other shard (kept for the next run), then stops naming each bad file
   and its manifest line. With ``skip_bad`` the bad rows are left out of their shard, the rest is
   committed, and they are recorded in the store's metadata.

Exactness: images are batched within a shard, in the same chunks whatever the path, so a resumed
run and a dask run compute every row with the same batch composition as an uninterrupted
single-process run, and the stored values are identical.
"""
from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .. import __version__
from ..core.errors import PtgError
from ..core.imageio import read_image
from ..datasets.manifest import Manifest, Sample, load_manifest
from ..datasets.views import parse_views

ImageLoader = Callable[[Path], np.ndarray]  # path -> float32 H×W×3 in [0, 1]


@dataclass(frozen=True)
class SkippedImage:
    """An input left out by ``skip_bad``."""

    id: str  # manifest id
    line: int  # 1-based manifest line
    path: str  # the degraded image file
    reason: str  # why it could not be used


@dataclass
class ExtractPlan:
    """What a run is about to do; given to ``on_plan`` before computing starts."""

    store: Path | str  # the store written (a bucket URL as a str)
    samples: int  # manifest rows considered
    unique: int  # distinct image contents among them
    reused: int  # distinct keys already in the store
    to_compute: int  # distinct keys computed by this run
    skipped: list[SkippedImage]  # bad inputs left out (skip_bad)
    shards: int  # shards this run writes


@dataclass
class ExtractSummary:
    """The outcome of `extract_priors`."""

    store: Path | str  # the store written (a bucket URL as a str)
    samples: int  # manifest rows considered
    unique: int  # distinct image contents
    computed: int  # rows computed and committed by this run
    reused: int  # rows found in the store already
    skipped: list[SkippedImage] = field(default_factory=list)  # bad inputs left out
    seconds: float = 0.0  # wall time of the whole run
    store_bytes: int = 0  # size of the store on disk after the run
    fingerprint: str = ""  # encoder weights fingerprint
    random_init: bool = False  # the encoder had random weights
    encoder: str = ""  # registry name
    views: tuple[str, ...] = ()  # views stored per row
    dim: int = 0  # prior length


# ---------------------------------------------------------------------------------------------
# Shared computation (local and dask paths must batch identically)


def _views_tensor(img: np.ndarray, views: Sequence[str], pp) -> Any:
    import torch

    from ..encoders.preprocess import apply_preprocess
    from ..datasets.views import apply_view

    return torch.stack([apply_preprocess(apply_view(img, v), pp) for v in views])  # [V, 3, S, S]


def _encode(enc, x, batch_size: int) -> np.ndarray:
    """x: [B, V, 3, S, S] -> priors [B, V, D] float32, forwarding at most `batch_size` rows at a time."""
    import torch

    b, v = x.shape[:2]
    flat = x.reshape(b * v, *x.shape[2:])
    outs = []
    with torch.inference_mode():
        for i in range(0, flat.shape[0], batch_size):
            outs.append(enc.forward(flat[i : i + batch_size].to(enc.spec.device if enc.spec else "cpu")).float().cpu())
    out = torch.cat(outs).reshape(b, v, -1)
    if out.shape[-1] != enc.dim:
        raise RuntimeError(f"encoder {enc.name} returned {out.shape[-1]} values, declared {enc.dim}")
    if not torch.isfinite(out).all():
        raise PtgError(f"encoder {enc.name} produced non-finite priors; check its weights and --dtype")
    return out.numpy()


def _shard_batches(n: int, batch_size: int) -> list[range]:
    return [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


class _ViewsDataset:
    """Map-style dataset: index -> (index, [V, 3, S, S] or None, error text or None).

    The one place an image is decoded: a file that cannot be used comes back as its error text
    (a bad input, not a crash), so the run can name it and still finish the other shards."""

    def __init__(self, paths: Sequence[Path], views: Sequence[str], pp, loader: ImageLoader):
        self.paths, self.views, self.pp, self.loader = list(paths), tuple(views), pp, loader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, _views_tensor(self.loader(self.paths[i]), self.views, self.pp), None  # tiles raise if too small
        except PtgError as exc:
            return i, None, str(exc)
        except Exception as exc:  # any decoder failure is a bad input
            return i, None, f"cannot read {self.paths[i]}: {type(exc).__name__}: {exc}"


def _collate(items: list) -> tuple[list[int], Any, list[int], list[tuple[int, str]]]:
    """Items of one batch -> (indices, [b_good, V, 3, S, S] or None, good indices, [(index, error)])."""
    import torch

    good = [(i, x) for i, x, err in items if err is None]
    x = torch.stack([x for _, x in good]) if good else None
    return [i for i, _, _ in items], x, [i for i, _ in good], [(i, err) for i, _, err in items if err is not None]


def _load_batches(ds: _ViewsDataset, batches: list[list[int]], loader_workers: int, ahead: int = 2):
    """Yield `_collate` results of ``batches`` in order, decoded ahead of the consumer.

    ``loader_workers > 0``: DataLoader processes. ``0``: one background thread (decoders and
    torch's resampling release the GIL), so the encoder never waits on a decode it could overlap,
    with no worker start-up cost."""
    if loader_workers > 0:
        from torch.utils.data import DataLoader

        yield from DataLoader(ds, batch_sampler=batches, collate_fn=_collate, **_loader_kwargs(loader_workers))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptg-decode") as pool:
        pending = deque(pool.submit(lambda b: _collate([ds[i] for i in b]), b) for b in batches[:ahead])
        for b in batches[ahead:] + [None] * min(ahead, len(batches)):
            item = pending.popleft().result()
            if b is not None:
                pending.append(pool.submit(lambda b: _collate([ds[i] for i in b]), b))
            yield item


def _default_loader(path: Path) -> np.ndarray:
    return read_image(path, channels=3)


def _loader_kwargs(workers: int) -> dict[str, Any]:
    return {"num_workers": workers, "prefetch_factor": 4, "persistent_workers": False} if workers > 0 else {"num_workers": 0}


# ---------------------------------------------------------------------------------------------
# Store path and metadata


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "zarr", "numpy", "open_clip_torch", "transformers", "diffusers", "timm"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def default_store_path(enc, views_spec: str, dtype: str) -> Path:
    """``$PTG_CACHE/priors/<encoder>[-<arch>]-<fingerprint[:16]>-<views>-<dtype>.zarr``: one store
    per encoder and settings on a machine, shared by every experiment."""
    arch = enc.details.get("arch")
    tag = f"{enc.name}-{arch}" if arch else enc.name
    if enc.spec is not None and enc.spec.size is not None:
        tag += f"-s{enc.spec.size}"
    if enc.spec is not None and enc.spec.timestep is not None:
        tag += f"-t{enc.spec.timestep}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{tag}-{enc.fingerprint[:16]}-{views_spec.replace(':', '')}-{dtype}")
    from ..storage.store import cache_root

    return cache_root() / "priors" / f"{safe}.zarr"


def _store_metadata(source: "RowSource", views_spec: str, views: tuple[str, ...], dtype: str) -> dict[str, Any]:
    return {
        "kind": "ptg-priors",
        "encoder": source.encoder_metadata(),
        "fingerprint": source.fingerprint,
        "random_init": source.random_init,
        "dim": source.dim,
        "views_spec": views_spec,
        "views": list(views),
        "dtype": dtype,
        "package_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "libraries": _library_versions(),
    }


# ---------------------------------------------------------------------------------------------
# Row sources: what computes the rows the one writer below stores

Task = tuple[int, list[str], list[Path]]  # (shard id, its keys, their degraded image files)
BadRows = list[tuple[int, int, str]]  # (task index, row in the task, why it cannot be used)


class RowSource(Protocol):
    """A source of prior rows: an image encoder (`EncoderRows`) or the manifest's recorded
    degradation (`ptg.pipeline.encoders.degradation.DegradationRows`). The engine does the rest:
    keys, the plan, the store's metadata, shards, commits and the run record."""

    name: str  # the store's encoder name
    dim: int  # length of one prior
    fingerprint: str  # what makes two stores of this source comparable (weights, layout)
    random_init: bool  # built without pre-trained weights (recorded loudly)

    def encoder_metadata(self) -> dict[str, Any]:
        """The store's ``encoder`` record."""

    def default_store(self, views_spec: str, dtype: str) -> Path:
        """Where the store goes when no ``out`` is given."""

    def check(self, samples: Sequence[Sample], keys: Sequence[str], manifest: Path) -> None:
        """Refuse the rows before anything is written (PtgError)."""

    def compute(self, store: Path, tasks: list[Task], views: tuple[str, ...], skip_bad: bool,
                on_progress: Callable[[int], None] | None) -> BadRows:
        """Compute, write and commit every task's shard; report the rows that cannot be used."""


@dataclass
class EncoderRows:
    """Rows computed from pixels by a frozen image encoder, in this process or on dask."""

    enc: Any  # the built `Encoder`
    batch_size: int = 16  # images per batch and per forward pass
    loader_workers: int = 0  # DataLoader processes decoding images; 0 = one background thread
    workers: int = 0  # local dask cluster of N processes (0: this process)
    dask_scheduler: str | None = None  # address of an existing dask scheduler
    image_loader: ImageLoader | None = None  # path -> float image (benchmarks pass pre-decoded ones)

    def __post_init__(self) -> None:
        self.name, self.dim = self.enc.name, self.enc.dim
        self.fingerprint, self.random_init = self.enc.fingerprint, self.enc.random_init
        if (self.workers or self.dask_scheduler) and self.enc.spec is None:
            raise PtgError("dask extraction needs an EncoderSpec (workers rebuild the encoder), not a built Encoder")

    def encoder_metadata(self) -> dict[str, Any]:
        return self.enc.metadata()

    def default_store(self, views_spec: str, dtype: str) -> Path:
        return default_store_path(self.enc, views_spec, dtype)

    def check(self, samples: Sequence[Sample], keys: Sequence[str], manifest: Path) -> None:
        return None  # bad images are found where they are decoded

    def compute(self, store: Path, tasks: list[Task], views: tuple[str, ...], skip_bad: bool,
                on_progress: Callable[[int], None] | None) -> BadRows:
        if self.workers or self.dask_scheduler:
            return _run_dask(store, self.enc.spec, tasks, views, self.batch_size, self.workers, self.dask_scheduler,
                             self.image_loader, skip_bad, on_progress)
        return _run_local(store, self.enc, tasks, views, self.batch_size, self.loader_workers,
                          self.image_loader or _default_loader, skip_bad, on_progress)


def _row_source(encoder: Any, keys_of: Callable[[], list[str]], **options: Any) -> tuple[RowSource, list[str]]:
    """The row source ``encoder`` names, and the rows' keys (hashed while an encoder's weights load).

    ``encoder``: a `RowSource`, a built `Encoder`, an `EncoderSpec` or a name; the name
    ``degradation`` (also as a spec's) is the recorded-degradation source.
    """
    from ..encoders import Encoder, EncoderSpec, build_encoder
    from ..encoders.degradation import DegradationRows

    name = encoder if isinstance(encoder, str) else getattr(encoder, "name", None)
    if not isinstance(encoder, Encoder) and name == DegradationRows.name:
        encoder = DegradationRows()
    if not isinstance(encoder, (str, EncoderSpec, Encoder)):
        return encoder, keys_of()
    spec = EncoderSpec(encoder) if isinstance(encoder, str) else encoder
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptg-hash") as pool:
        hashing = pool.submit(keys_of)  # file reads + SHA-256 overlap the weights load
        enc = spec if isinstance(spec, Encoder) else build_encoder(spec)
        keys = hashing.result()
    return EncoderRows(enc, **options), keys


# ---------------------------------------------------------------------------------------------
# The engine


def writer_inputs(manifest: Any, root: str | Path | None, split: str | None, views: str, dtype: str,
                  outside: str = "refuse") -> tuple[list[str], Manifest, list[Any]]:
    """The checked inputs every store writer starts from: view names, the manifest, its rows.

    ``outside`` is `load_manifest`'s (``"allow"`` only from the user's ``--allow-outside``).

    Raises:
        PtgError: an unsupported dtype, bad views, a bad manifest or an empty split.
    """
    if dtype not in ("float16", "float32"):
        raise PtgError(f"--dtype {dtype!r} is not supported; use float16 or float32")
    view_names = parse_views(views)
    m = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, root=root, outside=outside)
    samples = m.split(split) if split else list(m.samples)
    if not samples:
        raise PtgError(f"manifest {m.path} has no rows in split {split!r}")
    return view_names, m, samples


def extract_priors(
    manifest: Manifest | str | Path,
    encoder: Any = "imagenet",
    *,
    out: str | Path | None = None,
    views: str = "identity",
    dtype: str = "float16",
    batch_size: int = 16,
    loader_workers: int | None = None,
    workers: int = 0,
    dask_scheduler: str | None = None,
    skip_bad: bool = False,
    split: str | None = None,
    root: str | Path | None = None,
    outside: str = "refuse",
    rows_per_shard: int | None = None,
    image_loader: ImageLoader | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_plan: Callable[[ExtractPlan], None] | None = None,
    force: bool = False,
) -> ExtractSummary:
    """Compute and cache the priors of a manifest's degraded images.

    Args:
        manifest: a `Manifest` or the path of a manifest file.
        encoder: an `EncoderSpec`, a built `Encoder`, a registry name (default weights), or another
            `RowSource`; ``"degradation"`` writes the manifest's recorded degradation (no pixels read).
        out: the store directory or a bucket URL (``s3://bucket/prefix``, under the bucket's lease: in
            this process through a local stage, `ptg.pipeline.storage.storecopy.staged_writer`; with ``workers``
            or ``dask_scheduler`` the workers upload their shards straight into the bucket and this
            process commits them, `ptg.pipeline.storage.bucketwriter.bucket_writer`); None = the per-user cache.
        views: identity | flips | d4 | tiles:N (see `ptg.pipeline.datasets.views`).
        dtype: float16 (default) or float32 storage.
        batch_size: images per DataLoader batch, and rows per forward pass.
        loader_workers: DataLoader processes decoding images; 0 = one background thread of this
            process; None = min(4, CPUs - 1).
        workers: N > 0 runs on a local dask cluster of N processes; 0 runs in this process.
        dask_scheduler: address of an existing dask.distributed scheduler. A folder ``out`` must be
            one its workers share; a bucket ``out`` needs none (workers read its credentials from their
            own environment). Workers read the manifest's image paths themselves: they must reach them.
        skip_bad: leave unreadable images out (recorded in the metadata) instead of stopping.
        split: only rows of this split; None = all rows.
        root: dataset root for a manifest path (default: the manifest's folder).
        outside: "allow" accepts manifest paths outside the root (the user's ``--allow-outside``).
        rows_per_shard: rows per shard for a new store; None = about 4 MiB shards.
        image_loader: path -> float image; default `read_image` (benchmarks pass pre-decoded ones).
        on_progress: called with the number of images just computed.
        on_plan: called once with the `ExtractPlan` before computing starts.
        force: write into an existing `out` folder that is not a priors store (nothing in it is deleted).

    Raises:
        PtgError: bad input (naming file and manifest line), incompatible or locked store, weights
            that cannot be loaded.
    """
    from ..storage.location import parse_location
    from ..storage.store import sample_keys

    bucket = parse_location(out, "--out") if out is not None and parse_location(out, "--out").remote else None
    if bucket is not None and not ((workers or dask_scheduler) and _pixel_encoder(encoder)):
        # in this process: the engine writes a local stage, pushed under the bucket's lease
        return _extract_to_bucket(manifest, encoder, out, {k: v for k, v in locals().items() if k in _EXTRACT_ARGS})
    t0 = time.perf_counter()
    if batch_size < 1:
        raise PtgError(f"--batch-size must be at least 1, got {batch_size}")
    if workers < 0:
        raise PtgError(f"--workers must be 0 (this process) or more, got {workers}")
    view_names, m, samples = writer_inputs(manifest, root, split, views, dtype, outside)
    if loader_workers is None:
        # On 2 cores a worker process competes with the encoder for the CPU (docs/RESULTS.md).
        cpus = os.cpu_count() or 1
        loader_workers = 0 if cpus <= 2 else min(4, cpus - 1)
    source, keys = _row_source(encoder, lambda: sample_keys(samples), batch_size=batch_size,
                               loader_workers=loader_workers, workers=workers, dask_scheduler=dask_scheduler,
                               image_loader=image_loader)
    source.check(samples, keys, m.path)
    if bucket is not None:  # a cluster: workers upload their shards, this process commits them under the lease
        from ..storage.bucketwriter import bucket_writer

        with bucket_writer(bucket, force=force) as writer:
            return _write_rows(source, writer.skeleton, m, samples, keys, views, view_names, dtype, skip_bad,
                               rows_per_shard, on_progress, on_plan, True, t0, bucket=writer)
    store = parse_location(out, "--out").path if out is not None else source.default_store(views, dtype)  # file:// too
    return _write_rows(source, store, m, samples, keys, views, view_names, dtype, skip_bad, rows_per_shard,
                       on_progress, on_plan, force, t0)


def _pixel_encoder(encoder: Any) -> bool:
    """``encoder`` computes rows from pixels (the dask path); the recorded degradation does not."""
    from ..encoders import Encoder, EncoderSpec
    from ..encoders.degradation import DegradationRows

    name = encoder if isinstance(encoder, str) else getattr(encoder, "name", None)
    return isinstance(encoder, (str, EncoderSpec, Encoder)) and name != DegradationRows.name


def _write_rows(source: RowSource, store: Path, m: Manifest, samples: list[Sample], keys: list[str], views: str,
                view_names: tuple[str, ...], dtype: str, skip_bad: bool, rows_per_shard: int | None,
                on_progress: Callable[[int], None] | None, on_plan: Callable[[ExtractPlan], None] | None,
                force: bool, t0: float, bucket: Any = None) -> ExtractSummary:
    """The one writer: plan, metadata, shards from ``source``, commits, the run record.

    ``bucket``: a `ptg.pipeline.storage.bucketwriter.BucketWriter` whose ``skeleton`` is ``store`` (a cluster
    run straight into a bucket: metadata pushed before the workers start, each shard committed there).
    """
    from contextlib import nullcontext

    from ..storage.store import allocate_shards, create_or_open_store, store_nbytes, usable_commits, writer_lock

    with writer_lock(store, force=force) if bucket is None else nullcontext():  # a bucket: its lease is held
        meta = create_or_open_store(store, _store_metadata(source, views, view_names, dtype), rows_per_shard)
        rows = int(meta["rows_per_shard"])
        # reused shards are verified first; a damaged one is quarantined and its rows computed again
        usable = usable_commits(store, keys) if bucket is None else bucket.usable(keys)
        todo, n_unique = _missing_rows(keys, samples, {k for rec in usable.values() for k in rec["keys"]})
        reused = n_unique - len(todo)
        groups = [todo[i : i + rows] for i in range(0, len(todo), rows)]
        shard_ids = allocate_shards(store, len(groups)) if groups else []
        if bucket is not None:
            bucket.push_metadata()
        if on_plan is not None:
            on_plan(ExtractPlan(bucket.url if bucket else store, len(samples), n_unique, reused, len(todo), [], len(groups)))
        tasks = [(sid, [k for k, _ in g], [s.input for _, s in g]) for sid, g in zip(shard_ids, groups)]
        bad = source.compute(bucket or store, tasks, view_names, skip_bad, on_progress) if tasks else []
        items = [(groups[t][j][1], err) for t, j, err in sorted(bad)]
        if items and not skip_bad:
            _refuse_bad_inputs(items, m.path, kept=len(tasks) - len({t for t, _, _ in bad}))
        skipped = [SkippedImage(s.id, s.line, str(s.input), err) for s, err in items]
        computed = len(todo) - len(skipped)
        _record_run(store, meta, {"manifest": str(m.path), "samples": len(samples), "computed": computed, "reused": reused,
                                  "skipped": len(skipped), "seconds": round(time.perf_counter() - t0, 3)}, skipped)
        if bucket is not None:
            bucket.push_metadata()  # the run record
    return ExtractSummary(bucket.url if bucket else store, len(samples), n_unique, computed, reused, skipped,
                          time.perf_counter() - t0, bucket.nbytes() if bucket else store_nbytes(store),
                          source.fingerprint, source.random_init, source.name, view_names, source.dim)


def _extract_to_bucket(manifest: Any, encoder: Any, out: str | Path, kw: dict[str, Any]) -> ExtractSummary:
    """`extract_priors` into a bucket in this process: the same engine on a local stage, under the
    bucket's lease, then pushed (a cluster run writes straight into the bucket instead)."""
    from dataclasses import replace

    from ..storage.location import parse_location
    from ..storage.storecopy import staged_writer

    loc = parse_location(out, "--out")
    on_plan = kw["on_plan"]
    if on_plan is not None:  # the plan names the bucket, not the stage
        kw["on_plan"] = lambda plan: on_plan(replace(plan, store=loc.url))
    with staged_writer(loc, force=kw["force"]) as stage:
        summary = extract_priors(manifest, encoder, **{**kw, "out": stage})
    return replace(summary, store=loc.url)


_EXTRACT_ARGS = ("views", "dtype", "batch_size", "loader_workers", "workers", "skip_bad", "split", "root",
                 "outside", "rows_per_shard", "image_loader", "on_progress", "on_plan", "force")  # forwarded to a bucket's stage


def _missing_rows(keys: Sequence[str], samples: Sequence[Sample], have: set[str]) -> tuple[list[tuple[str, Sample]], int]:
    """(the (key, sample) pairs to compute, first occurrence of each key not in ``have``; the number of distinct keys)."""
    todo: list[tuple[str, Sample]] = []
    seen: set[str] = set()
    for k, s in zip(keys, samples):
        if k not in seen:
            seen.add(k)
            if k not in have:
                todo.append((k, s))
    return todo, len(seen)


def _refuse_bad_inputs(items: list[tuple[Sample, str]], manifest: Path, kept: int) -> None:
    shown = "\n".join(f"  manifest line {s.line} (id {s.id!r}): {err}" for s, err in items[:20])
    more = f"\n  ... and {len(items) - 20} more" if len(items) > 20 else ""
    raise PtgError(f"{len(items)} input image(s) of {manifest} cannot be used; no shard holding one was written "
                   f"({kept} other shard(s) were committed and will be reused):\n{shown}{more}\n"
                   "Fix or remove them, or pass --skip-bad to leave them out.")


def _record_run(store: Path, meta: dict[str, Any], counts: dict[str, Any], skipped: list[SkippedImage]) -> None:
    """Append this run (and its newly skipped images) to the store's metadata; the last 100 runs are kept."""
    from ..storage.store import update_metadata

    old = {(d["path"], d["id"]) for d in meta.get("skipped", [])}
    run = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **counts, "host": socket.gethostname(), "package_version": __version__}
    update_metadata(store, skipped=list(meta.get("skipped", [])) + [asdict(s) for s in skipped if (s.path, s.id) not in old],
                    runs=(list(meta.get("runs", [])) + [run])[-100:], updated=run["time"])


def _run_local(store: Path, enc, tasks, views, batch_size: int, loader_workers: int, loader: ImageLoader,
               skip_bad: bool, on_progress: Callable[[int], None] | None) -> list[tuple[int, int, str]]:
    """Decoding runs ahead (`_load_batches`), this thread only infers, a writer thread commits
    shards. Returns the bad inputs as (task, row in task, error)."""
    import zarr

    from ..storage.store import ARRAY, write_shard

    paths = [p for _, _, ps in tasks for p in ps]
    starts = np.cumsum([0] + [len(ps) for _, _, ps in tasks])
    # batches never cross a shard: the same composition as a resumed or a dask run
    batches = [[int(starts[t]) + i for i in r] for t, (_, _, ps) in enumerate(tasks) for r in _shard_batches(len(ps), batch_size)]
    ds = _ViewsDataset(paths, views, enc.preprocess, loader)

    arr = zarr.open_array(store / ARRAY, mode="r+")
    q: queue.Queue = queue.Queue(maxsize=4)
    failure: list[BaseException] = []

    def writer() -> None:
        while (item := q.get()) is not None:
            if not failure:
                try:
                    write_shard(store, *item, arr=arr)
                except BaseException as exc:  # surfaced in the compute thread
                    failure.append(exc)

    th = threading.Thread(target=writer, name="ptg-shard-writer", daemon=True)
    th.start()
    bad: list[tuple[int, int, str]] = []
    try:
        vals: list[np.ndarray] = []  # [b, V, D] blocks of the current shard
        good: list[int] = []  # their rows in the shard
        task_i, seen, tainted = 0, 0, False
        for idx, x, ok, errors in _load_batches(ds, batches, loader_workers):
            start = int(starts[task_i])
            if x is not None:
                vals.append(_encode(enc, x, batch_size))  # [b, V, D]
                good += [i - start for i in ok]
            bad += [(task_i, i - start, err) for i, err in errors]
            tainted |= bool(errors)
            seen += len(idx)
            if on_progress is not None:
                on_progress(len(idx))
            if seen == len(tasks[task_i][1]):
                if failure:
                    raise failure[0]
                sid, keys, _ = tasks[task_i]
                if good and (skip_bad or not tainted):  # a shard with a bad input is committed only without it
                    q.put((sid, [keys[j] for j in good], np.concatenate(vals)))
                task_i, seen, tainted, vals, good = task_i + 1, 0, False, [], []
    finally:
        q.put(None)
        th.join()
    if failure:
        raise failure[0]
    return bad


# ---------------------------------------------------------------------------------------------
# dask.distributed


_WORKER_ENCODERS: dict[Any, Any] = {}  # per worker process: spec -> built encoder (built once)


def _dask_shard(store: Any, spec, shard: int, keys: list[str], paths: list[str], views: tuple[str, ...],
                batch_size: int, threads: int, image_loader: ImageLoader | None,
                skip_bad: bool) -> tuple[int, list[tuple[int, str]], bytes | None]:
    """One dask task: compute and commit one shard (the local path's batching and bad-input rule).

    ``store``: a folder every worker mounts (the shard is committed there), or a
    `ptg.pipeline.storage.bucketwriter.BucketShards` (the shard's objects are uploaded; the coordinator commits).
    Returns (images processed, [(row in shard, error)], the commit record still to create or None)."""
    import torch

    from ..encoders import build_encoder
    from ..storage.store import write_shard

    torch.set_num_threads(threads)
    enc = _WORKER_ENCODERS.get(spec)
    if enc is None:
        enc = _WORKER_ENCODERS[spec] = build_encoder(spec)
    ds = _ViewsDataset([Path(p) for p in paths], views, enc.preprocess, image_loader or _default_loader)
    out, good, bad = [], [], []
    for _, x, ok, errors in _load_batches(ds, [list(r) for r in _shard_batches(len(paths), batch_size)], 0):
        if x is not None:
            out.append(_encode(enc, x, batch_size))
            good += ok
        bad += errors
    if not (good and (skip_bad or not bad)):
        return len(keys), bad, None
    if isinstance(store, str):
        write_shard(Path(store), shard, [keys[j] for j in good], np.concatenate(out))
        return len(keys), bad, None
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ptg-shard-") as tmp:  # the whole shard here, then uploaded
        store.skeleton_into(Path(tmp))
        write_shard(Path(tmp), shard, [keys[j] for j in good], np.concatenate(out))
        return len(keys), bad, store.upload(Path(tmp), shard)


def _run_dask(store: Any, spec, tasks, views, batch_size: int, workers: int, address: str | None,
              image_loader: ImageLoader | None, skip_bad: bool,
              on_progress: Callable[[int], None] | None) -> list[tuple[int, int, str]]:
    """Each shard one dask task. ``store``: a shared folder (workers commit) or a
    `ptg.pipeline.storage.bucketwriter.BucketWriter` (workers upload, this coordinator commits, fenced)."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise PtgError("--workers / --dask-scheduler need dask.distributed: pip install 'dask[distributed]'") from exc

    cluster = None
    try:
        if address:
            try:
                client = Client(address, timeout="20s")
            except Exception as exc:
                raise PtgError(f"cannot connect to the dask scheduler {address!r}: {exc}. Is it running and reachable?") from exc
            threads = 1
        else:
            cluster = LocalCluster(n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=None)
            client = Client(cluster)
            threads = max(1, (os.cpu_count() or 1) // workers)
        target = str(store.resolve()) if isinstance(store, Path) else store.shards()
        with client:
            futs = [client.submit(_dask_shard, target, spec, sid, keys, [str(p) for p in paths], views,
                                  batch_size, threads, image_loader, skip_bad, pure=False,
                                  key=f"ptg-shard-{sid}-{os.getpid()}")
                    for sid, keys, paths in tasks]
            task_of = {f.key: t for t, f in enumerate(futs)}
            bad: list[tuple[int, int, str]] = []
            try:
                for fut in as_completed(futs):
                    n, errors, record = fut.result()  # re-raises a worker's exception here
                    if record is not None:
                        store.commit(tasks[task_of[fut.key]][0], record)
                    bad += [(task_of[fut.key], j, err) for j, err in errors]
                    if on_progress is not None:
                        on_progress(n)
            except BaseException:
                client.cancel(futs)
                raise
    finally:
        if cluster is not None:
            cluster.close()
    return bad
