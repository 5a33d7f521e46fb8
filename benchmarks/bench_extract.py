"""Benchmark of `ptg extract-priors`: pipeline throughput vs the bare encoder forward, and the time
to read a random batch of 64 priors from a 100k-row store.

Pipeline vs bare forward use the same pre-decoded images (held in memory, so file decoding is
excluded from both): the bare forward runs `encoder.forward` on already preprocessed batches; the
pipeline runs the real engine (`extract_priors`: DataLoader worker preprocessing, batched
inference, background shard writes and commits) with an in-memory image loader, timed from the
moment it starts computing (after hashing and the input check) to its return.

    .venv/bin/python benchmarks/bench_extract.py --out benchmarks/results/extract.md

Not a test: numbers depend on the machine and its load. Use --threads 1 on a shared machine.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _images(folder: Path, n: int, side: int) -> tuple[Path, dict[Path, np.ndarray]]:
    from skimage import data, transform

    from ptg.pipeline.imageio import read_image, write_image
    from ptg.pipeline.manifest import write_manifest

    rng = np.random.default_rng(0)
    names = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
    bases = [transform.resize(getattr(data, p)(), (2 * side, 2 * side), anti_aliasing=True) for p in names]
    rows, cache = [], {}
    for i in range(n):
        t, l = rng.integers(0, side, size=2)
        p = write_image(folder / f"img{i:04d}.png", bases[i % len(bases)][t : t + side, l : l + side])
        cache[p.resolve()] = read_image(p)
        rows.append({"id": f"b{i}", "input": str(p), "target": None, "split": "train"})
    return write_manifest(folder / "m.jsonl", rows), cache


class _MemLoader:
    """Picklable in-memory image loader (DataLoader workers get it by fork)."""

    def __init__(self, cache: dict[Path, np.ndarray]):
        self.cache = cache

    def __call__(self, path: Path) -> np.ndarray:
        return self.cache[Path(path).resolve()]


def bench_encoder(spec, n: int, side: int, batch: int, loader_workers: int, repeats: int) -> dict:
    import torch

    from ptg.pipeline.encoders import apply_preprocess, build_encoder
    from ptg.pipeline.extract import extract_priors

    enc = build_encoder(spec)
    with tempfile.TemporaryDirectory() as tmp:
        manifest, cache = _images(Path(tmp), n, side)
        x = torch.stack([apply_preprocess(img, enc.preprocess) for img in cache.values()])
        with torch.inference_mode():
            enc.forward(x[:batch])  # warm-up
        bare = []
        for _ in range(repeats):
            t = time.perf_counter()
            with torch.inference_mode():
                for i in range(0, n, batch):
                    enc.forward(x[i : i + batch])
            bare.append(n / (time.perf_counter() - t))
        pipe = []
        for r in range(repeats):
            start: list[float] = []
            extract_priors(manifest, enc, out=Path(tmp) / f"s{r}.zarr", batch_size=batch, loader_workers=loader_workers,
                           image_loader=_MemLoader(cache), on_plan=lambda plan: start.append(time.perf_counter()))
            pipe.append(n / (time.perf_counter() - start[0]))
    return {"encoder": f"{spec.name} {spec.arch or ''}".strip() + (" (random init)" if spec.random_init else ""),
            "bare": max(bare), "pipeline": max(pipe), "input": enc.preprocess.size}


def bench_read(rows: int, dim: int, batch: int, repeats: int) -> dict:
    from ptg.pipeline.store import allocate_shards, create_or_open_store, open_priors, write_shard, writer_lock

    rng = np.random.default_rng(0)
    keys = [f"{i:064x}" for i in range(rows)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.zarr"
        meta = {"encoder": {"name": "bench"}, "fingerprint": "bench", "random_init": False, "dim": dim,
                "views": ["identity"], "views_spec": "identity", "dtype": "float16"}
        per = 4096
        t = time.perf_counter()
        with writer_lock(path):
            create_or_open_store(path, meta, rows_per_shard=per)
            shards = allocate_shards(path, -(-rows // per))
            for s in shards:
                k = keys[s * per : (s + 1) * per]
                write_shard(path, s, k, rng.standard_normal((len(k), 1, dim)).astype(np.float32))
        write_s = time.perf_counter() - t
        out = {"rows": rows, "dim": dim, "write_s": write_s}
        for label, in_memory in (("ram", True), ("disk", False)):
            t = time.perf_counter()
            r = open_priors(path, in_memory=in_memory)
            r.get(keys[:1])  # first read (loads the array into RAM in "ram" mode)
            out[f"open_{label}_s"] = time.perf_counter() - t
            times = []
            for _ in range(repeats):
                pick = [keys[i] for i in rng.integers(0, rows, size=batch)]
                t = time.perf_counter()
                r.get(pick)
                times.append(time.perf_counter() - t)
            out[f"{label}_median_ms"] = 1e3 * statistics.median(times)
            out[f"{label}_p95_ms"] = 1e3 * sorted(times)[int(0.95 * len(times))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="images per run")
    ap.add_argument("--side", type=int, default=256, help="side of the pre-decoded images")
    ap.add_argument("--batch", type=int, default=16, help="batch size")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument("--loader-workers", type=int, default=1, help="DataLoader workers of the pipeline")
    ap.add_argument("--repeats", type=int, default=2, help="runs per measurement (best kept)")
    ap.add_argument("--read-rows", type=int, default=100_000, help="rows of the read benchmark store")
    ap.add_argument("--read-dim", type=int, default=512, help="prior dim of the read benchmark store")
    ap.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = ap.parse_args()

    import torch

    from ptg.pipeline.encoders import EncoderSpec

    torch.set_num_threads(args.threads)
    specs = [EncoderSpec("imagenet"), EncoderSpec("clip", arch="ViT-B-32", random_init=True)]
    enc_rows = []
    for spec in specs:
        res = bench_encoder(spec, args.n, args.side, args.batch, args.loader_workers, args.repeats)
        enc_rows.append(res)
        print(f"{res['encoder']}: bare {res['bare']:.2f} img/s, pipeline {res['pipeline']:.2f} img/s "
              f"({res['pipeline'] / res['bare']:.2f}x)", flush=True)
    rd = bench_read(args.read_rows, args.read_dim, 64, 200)
    print(f"read 64 random rows of {rd['rows']}x{rd['dim']} float16: RAM {rd['ram_median_ms']:.3f} ms median "
          f"(p95 {rd['ram_p95_ms']:.3f}), disk {rd['disk_median_ms']:.2f} ms median (p95 {rd['disk_p95_ms']:.2f}); "
          f"open+load {rd['open_ram_s']:.2f} s; write {rd['write_s']:.1f} s", flush=True)

    if args.out:
        cmd = (f".venv/bin/python benchmarks/bench_extract.py --n {args.n} --side {args.side} --batch {args.batch} "
               f"--threads {args.threads} --loader-workers {args.loader_workers} --repeats {args.repeats}")
        lines = [
            "# `ptg extract-priors` benchmark", "",
            f"Machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPU cores "
            f"(shared with other jobs while measured), no GPU; torch {torch.__version__}, {args.threads} torch thread(s), "
            f"{args.loader_workers} DataLoader worker(s).", "",
            f"Command: `{cmd}`", "",
            f"Throughput on the same {args.n} pre-decoded {args.side}x{args.side} images, batch {args.batch} "
            "(best of runs; target: pipeline >= 0.9x bare forward):", "",
            "| encoder | input | bare forward (img/s) | pipeline (img/s) | ratio |", "|---|---|---|---|---|",
        ]
        lines += [f"| {r['encoder']} | {r['input']} | {r['bare']:.2f} | {r['pipeline']:.2f} | {r['pipeline'] / r['bare']:.2f}x |"
                  for r in enc_rows]
        lines += ["", f"Random batch of 64 keys from a {rd['rows']:,}-row store ({rd['dim']}-d float16; target < 5 ms):", "",
                  "| reader mode | median (ms) | p95 (ms) | open + first read (s) |", "|---|---|---|---|",
                  f"| in RAM (auto below 2 GiB) | {rd['ram_median_ms']:.3f} | {rd['ram_p95_ms']:.3f} | {rd['open_ram_s']:.2f} |",
                  f"| on disk (zarr orthogonal read) | {rd['disk_median_ms']:.2f} | {rd['disk_p95_ms']:.2f} | {rd['open_disk_s']:.2f} |",
                  "", f"Writing the {rd['rows']:,}-row store (25 shards, commit records) took {rd['write_s']:.1f} s.", ""]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
