"""Random batches of priors from a store too big for the in-memory path: the Zarr store read as the
trainer would (`PriorsReader.get`, in_memory=False) against the row cache (`ptg.pipeline.storage.priorcache`),
warm (the files in the OS page cache) and cold (evicted), side by side in one process.

Part 1 (the main figure) builds a store of ``--rows`` x ``--views`` x ``--dim`` float16 (default
1.2M x 4 x 512 = 4.6 GiB raw) with the real writer (`write_shard`, default shard/inner-chunk layout), builds
its row cache, and times batches of 64 random keys of one view. Part 2 (layout evidence) writes the
same kind of rows into small Zarr arrays of other inner-chunk shapes/codecs and times the same reads.

Part 3 (``--bucket-rows``) reads one store from a local folder and from an S3 bucket (moto's
server on the loopback address): first pass (pull into the verified mirror, build the row cache)
vs cached reopen, and the warm batch cost both then share.

Cold reads: before each timed batch the files of the arm are evicted from the page cache with
``posix_fadvise(DONTNEED)`` (per file, so other processes' caches are untouched); with ``--drop-caches``
(root only) a few batches are also timed after ``echo 3 > /proc/sys/vm/drop_caches``.

    .venv/bin/python benchmarks/bench_store_read.py --out benchmarks/results/store.md

Everything is written under ``--work`` (default a temp dir) and deleted at the end.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def _evict(folder: Path) -> None:
    for p in _files(folder):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _warm(folder: Path) -> None:
    for p in _files(folder):
        with open(p, "rb") as f:
            while f.read(16 << 20):
                pass


def _drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _stats(ts: list[float]) -> dict:
    ms = sorted(1e3 * t for t in ts)
    return {"median": statistics.median(ms), "p10": ms[int(0.1 * len(ms))], "p90": ms[int(0.9 * len(ms)) - 1 if len(ms) > 1 else 0],
            "n": len(ms)}


def _fmt(s: dict) -> str:
    return f"{s['median']:.3f} ({s['p10']:.3f}–{s['p90']:.3f})"


def build_store(path: Path, rows: int, views: int, dim: int, seed: int = 0) -> tuple[list[str], float, int]:
    from ptg.pipeline.storage.store import allocate_shards, create_or_open_store, write_shard, writer_lock

    rng = np.random.default_rng(seed)
    keys = [f"{i:064x}" for i in range(rows)]
    names = ["identity", "hflip", "vflip", "hvflip", "rot90", "rot180", "rot270", "transpose"][:views]
    meta = {"encoder": {"name": "bench"}, "fingerprint": "bench", "random_init": False, "dim": dim, "views": names,
            "views_spec": "custom", "dtype": "float16"}
    t = time.perf_counter()
    with writer_lock(path):
        m = create_or_open_store(path, meta)
        per = int(m["rows_per_shard"])
        shards = allocate_shards(path, -(-rows // per))
        for s in shards:
            k = keys[s * per : (s + 1) * per]
            write_shard(path, s, k, rng.standard_normal((len(k), views, dim), dtype=np.float32))
    return keys, time.perf_counter() - t, per


def time_reads(read, keys: list[str], folder: Path, batch: int, n_warm: int, n_cold: int, n_drop: int, seed: int,
               unmap=None) -> dict:
    """Warm, then cold batches; ``unmap`` drops an arm's memory maps first (the kernel evicts no mapped page)."""
    rng = np.random.default_rng(seed)
    pick = lambda: rng.integers(0, len(keys), size=batch)  # noqa: E731

    def timed(n: int, evict=None) -> list[float]:
        """Seconds of ``n`` batch reads, each after ``evict()`` (stops early if it returns False)."""
        out = []
        for _ in range(n):
            idx = pick()
            if evict is not None:
                if unmap is not None:
                    unmap()
                if evict() is False:
                    break
            t = time.perf_counter()
            read(idx)
            out.append(time.perf_counter() - t)
        return out

    _warm(folder)
    read(pick())
    warm = timed(n_warm)
    cold = timed(n_cold, lambda: _evict(folder))
    drop = timed(n_drop, _drop_caches)
    return {"warm": _stats(warm), "cold": _stats(cold), "drop": _stats(drop) if drop else None}


def layout_variants(work: Path, rows: int, views: int, dim: int, batch: int, n_warm: int, n_cold: int) -> list[dict]:
    """Same rows in Zarr arrays of other inner-chunk shapes / codecs, read with `oindex`."""
    import zarr

    rng = np.random.default_rng(1)
    data = rng.standard_normal((rows, views, dim), dtype=np.float32).astype(np.float16)
    per = 1024
    out = []
    for label, inner, codec in (("inner 32 rows, zstd (current)", 32, "default"), ("inner 32 rows, uncompressed", 32, None),
                                ("inner 1 row, zstd", 1, "default"), ("inner 1 row, uncompressed", 1, None),
                                ("inner 1 row x 1 view, uncompressed", (1, 1), None)):
        path = work / f"variant-{len(out)}.zarr"
        chunks = (inner[0], inner[1], dim) if isinstance(inner, tuple) else (inner, views, dim)
        kw = {} if codec == "default" else {"compressors": None}
        arr = zarr.create_array(store=path, shape=data.shape, dtype="float16", chunks=chunks, shards=(per, views, dim),
                                fill_value=0, **kw)
        t = time.perf_counter()
        for s in range(0, rows, per):
            arr[s : s + per] = data[s : s + per]
        write_s = time.perf_counter() - t
        arr = zarr.open_array(path, mode="r")

        def read(idx, arr=arr):
            uniq, inv = np.unique(idx, return_inverse=True)
            return np.asarray(arr.oindex[uniq, 0], dtype=np.float32)[inv]

        res = time_reads(read, [str(i) for i in range(rows)], path, batch, n_warm, n_cold, 0, seed=2)
        out.append({"label": label, "write_s": write_s, "bytes": sum(p.stat().st_size for p in _files(path)), **res})
        print(f"  variant {label}: warm {_fmt(res['warm'])} ms, cold {_fmt(res['cold'])} ms", flush=True)
        shutil.rmtree(path)
    return out


def bucket_vs_local(work: Path, rows: int, views: int, dim: int, batch: int, n_warm: int) -> list[dict]:
    """The same store read from a local folder and from a bucket (moto's S3 server on 127.0.0.1):
    first open (bucket: pull into the verified mirror; both: build the row cache), cached reopen, and
    warm random batches from the row cache (what a training step pays)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from ptg.pipeline.storage.priorcache import LazyPriorRows, open_row_cache
    from ptg.pipeline.storage.store import open_priors
    from ptg.pipeline.storage.storecopy import copy_store

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the server logs every request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true")
    try:
        boto3.client("s3").create_bucket(Bucket="ptg-bench")
        path = work / "shared.zarr"
        keys, _, _ = build_store(path, rows, views, dim, seed=5)
        t = time.perf_counter()
        copy_store(path, "s3://ptg-bench/priors")
        publish_s = time.perf_counter() - t
        out = []
        for label, where in (("local folder", path), ("bucket (s3://, loopback moto)", "s3://ptg-bench/priors")):
            opens = []
            for _ in range(2):  # first pass, then the cached reopen
                t = time.perf_counter()
                reader = open_priors(where, in_memory=False)
                cache = open_row_cache(reader.path)
                opens.append(time.perf_counter() - t)
            lazy = LazyPriorRows(reader.path, keys, "identity", cache=cache)
            rng = np.random.default_rng(6)
            lazy[rng.integers(0, len(keys), size=batch)]
            ts = []
            for _ in range(n_warm):
                idx = rng.integers(0, len(keys), size=batch)
                t = time.perf_counter()
                lazy[idx]
                ts.append(time.perf_counter() - t)
            out.append({"label": label, "first_s": opens[0], "cached_s": opens[1], "warm": _stats(ts),
                        "publish_s": publish_s if "bucket" in label else None})
            print(f"  {label}: first open {opens[0]:.2f} s, cached reopen {opens[1] * 1e3:.1f} ms, warm batch "
                  f"{_fmt(out[-1]['warm'])} ms", flush=True)
        return out
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_200_000)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warm", type=int, default=200, help="timed warm batches per arm")
    ap.add_argument("--cold", type=int, default=40, help="timed cold (fadvise-evicted) batches per arm")
    ap.add_argument("--drop-caches", type=int, default=5, help="timed batches after drop_caches per arm (root)")
    ap.add_argument("--variant-rows", type=int, default=65536, help="rows of the layout-variant arrays (0 = skip)")
    ap.add_argument("--bucket-rows", type=int, default=65536,
                    help="rows of the store read from a local folder and from a loopback S3 bucket (0 = skip)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="bench_store_", dir=args.work))
    os.environ["PTG_CACHE"] = str(work / "cache")
    from ptg.pipeline.storage.priorcache import LazyPriorRows, open_row_cache
    from ptg.pipeline.storage.store import open_priors, store_nbytes

    try:
        path = work / "big.zarr"
        keys, write_s, per = build_store(path, args.rows, args.views, args.dim)
        nbytes = store_nbytes(path)
        print(f"store: {args.rows} x {args.views} x {args.dim} float16, {nbytes / 2**30:.2f} GiB, written in {write_s:.0f} s", flush=True)
        t = time.perf_counter()
        cache = open_row_cache(path)
        build_s = time.perf_counter() - t
        cache_bytes = sum(p.stat().st_size for p in _files(cache.folder))
        print(f"row cache built in {build_s:.0f} s ({cache_bytes / 2**30:.2f} GiB)", flush=True)

        reader = open_priors(path, in_memory=False)
        karr = np.array(keys)
        t = time.perf_counter()
        lazy = LazyPriorRows(path, keys, "identity", cache=cache)
        index_s = time.perf_counter() - t
        zarr_read = lambda idx: reader.get(list(karr[idx]), "identity")  # noqa: E731
        cache_read = lambda idx: lazy[idx]  # noqa: E731
        # same random keys through both paths give the same values
        probe = np.random.default_rng(9).integers(0, len(keys), size=args.batch)
        assert np.array_equal(zarr_read(probe), cache_read(probe))
        res = {}
        for name, fn, folder, unmap in (("zarr", zarr_read, path, None), ("rowcache", cache_read, cache.folder, cache.close)):
            res[name] = time_reads(fn, keys, folder, args.batch, args.warm, args.cold, args.drop_caches, seed=3, unmap=unmap)
            r = res[name]
            print(f"{name}: warm {_fmt(r['warm'])} ms, cold {_fmt(r['cold'])} ms"
                  + (f", after drop_caches {_fmt(r['drop'])} ms" if r["drop"] else ""), flush=True)
        # in RAM for reference: one view as a float16 array, indexed + cast like the in-memory path
        ram = np.array(cache.view("identity"))
        rng = np.random.default_rng(4)
        ts = []
        for _ in range(args.warm):
            idx = lazy.rows[rng.integers(0, len(keys), size=args.batch)]
            t = time.perf_counter()
            ram[idx].astype(np.float32)
            ts.append(time.perf_counter() - t)
        res["ram"] = {"warm": _stats(ts)}
        del ram
        print(f"in RAM: {_fmt(res['ram']['warm'])} ms", flush=True)
        shutil.rmtree(path)
        shutil.rmtree(work / "cache")
        variants = layout_variants(work, args.variant_rows, args.views, args.dim, args.batch, args.warm, args.cold) if args.variant_rows else []
        bucket = bucket_vs_local(work, args.bucket_rows, args.views, args.dim, args.batch, args.warm) if args.bucket_rows else []
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.out:
        cmd = " ".join([".venv/bin/python", "benchmarks/bench_store_read.py"] + sys.argv[1:])
        drop = res["zarr"]["drop"] is not None
        lines = [
            "# Random prior batches from a store bigger than the in-memory budget", "",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[1]:.1f} over the last "
            "5 minutes when the report was written (timings are noisy; every figure below comes from the same process, "
            "arms interleaved by phase).", "",
            f"Command: `{cmd}`", "",
            f"Store: {args.rows:,} rows x {args.views} views x {args.dim}-d float16 = {nbytes / 2**30:.2f} GiB on disk, written "
            f"by `write_shard` (default layout: {per}-row shards, 32-row zstd inner chunks) in "
            f"{write_s:.0f} s. Row cache (`ptg.pipeline.storage.priorcache`, one uncompressed `.npy` per view + sorted key index) "
            f"built in {build_s:.0f} s, {cache_bytes / 2**30:.2f} GiB; its key index opened for all {args.rows:,} keys in "
            f"{index_s:.2f} s.", "",
            f"Batch of {args.batch} random keys of one view, float32 out; ms, median (p10–p90). Warm = the arm's files "
            f"read once so they sit in the page cache ({args.warm} batches). Cold = the row cache's maps closed and the arm's "
            f"files evicted with posix_fadvise(DONTNEED) before each batch (reopening the maps is inside the timing) ({args.cold} batches)"
            + (f"; drop_caches = `echo 3 > /proc/sys/vm/drop_caches` before each batch ({args.drop_caches} batches)." if drop else "."),
            "",
            "| path | warm | cold (fadvise) |" + (" cold (drop_caches) |" if drop else ""),
            "|---|---|---|" + ("---|" if drop else ""),
        ]
        for name, label in (("zarr", "Zarr store, `PriorsReader.get` (in_memory=False)"), ("rowcache", "row cache, `LazyPriorRows`")):
            r = res[name]
            lines.append(f"| {label} | {_fmt(r['warm'])} | {_fmt(r['cold'])} |" + (f" {_fmt(r['drop'])} |" if drop else ""))
        lines.append(f"| in RAM (float16 array, index + cast), reference | {_fmt(res['ram']['warm'])} | – |" + (" – |" if drop else ""))
        if variants:
            lines += ["", f"Layout evidence: {args.variant_rows:,} rows x {args.views} views x {args.dim}-d float16 in Zarr arrays "
                      f"with 1024-row shards and other inner chunks, read with `oindex[sorted rows, view]` (same batches):", "",
                      "| Zarr inner chunk | bytes on disk | write (s) | warm | cold (fadvise) |", "|---|---|---|---|---|"]
            lines += [f"| {v['label']} | {v['bytes'] / 2**20:.0f} MiB | {v['write_s']:.1f} | {_fmt(v['warm'])} | {_fmt(v['cold'])} |"
                      for v in variants]
        if bucket:
            lines += ["", f"Shared through a bucket: a {args.bucket_rows:,}-row store (same views/dim) published with "
                      f"`copy_store` to moto's S3 server on 127.0.0.1 in {bucket[1]['publish_s']:.1f} s, then opened from "
                      "each place twice. First open: the bucket's shards pulled into the verified mirror under $PTG_CACHE, "
                      "and the row cache built; cached reopen: one LIST (commits unchanged) and the ready row cache. Warm "
                      f"batches of {args.batch} random keys from the row cache ({args.warm} batches).", "",
                      "| store | first open (s) | cached reopen (ms) | warm batch (ms) |", "|---|---|---|---|"]
            lines += [f"| {b['label']} | {b['first_s']:.2f} | {b['cached_s'] * 1e3:.1f} | {_fmt(b['warm'])} |" for b in bucket]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
