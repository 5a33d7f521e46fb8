"""Benchmark of `ptg extract-priors`: pipeline throughput vs the bare encoder forward on the same
images (random-batch reads from a store: `bench_store_read.py`).

Pipeline vs bare forward use the same pre-decoded images (held in memory, so file decoding is
excluded from both): the bare forward runs `encoder.forward` on already preprocessed batches; the
pipeline runs the real engine (`extract_priors`: DataLoader worker preprocessing, batched
inference, background shard writes and commits) with an in-memory image loader, timed from the
moment it starts computing (after hashing and the encoder load) to its return. Bare and pipeline
runs alternate (bare, pipeline per loader setting, bare, ...) in one process; the report gives
the median and the range over ``--repeats`` runs, and the ratio of the medians.

    .venv/bin/python benchmarks/bench_extract.py --out benchmarks/results/extract.md

Not a test: numbers depend on the machine and its load. Use --threads 1 on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
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


def _spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": list(xs)}


def bench_encoder(spec, n: int, side: int, batch: int, loader_workers: list[int], repeats: int) -> dict:
    """Bare forward and the pipeline (one arm per loader setting), interleaved run by run."""
    import torch

    from ptg.pipeline.encoders import apply_preprocess, build_encoder
    from ptg.pipeline.extract import extract_priors

    enc = build_encoder(spec)
    with tempfile.TemporaryDirectory() as tmp:
        manifest, cache = _images(Path(tmp), n, side)
        x = torch.stack([apply_preprocess(img, enc.preprocess) for img in cache.values()])
        with torch.inference_mode():
            enc.forward(x[:batch])  # warm-up
        runs: dict[str, list[float]] = {"bare": []}
        store_bytes = 0
        for r in range(repeats):
            t = time.perf_counter()
            with torch.inference_mode():
                for i in range(0, n, batch):
                    enc.forward(x[i : i + batch])
            runs["bare"].append(n / (time.perf_counter() - t))
            for lw in loader_workers:
                start: list[float] = []
                s = extract_priors(manifest, enc, out=Path(tmp) / f"s{r}-{lw}.zarr", batch_size=batch, loader_workers=lw,
                                   image_loader=_MemLoader(cache), on_plan=lambda plan: start.append(time.perf_counter()))
                runs.setdefault(f"lw{lw}", []).append(n / (time.perf_counter() - start[0]))
                store_bytes = s.store_bytes
    out = {"encoder": f"{spec.name} {spec.arch or ''}".strip() + (" (random init)" if spec.random_init else ""),
           "input": enc.preprocess.size, "dim": enc.dim, "store_bytes": store_bytes, "n": n}
    out.update({k: _spread(v) for k, v in runs.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="images per run")
    ap.add_argument("--side", type=int, default=256, help="side of the pre-decoded images")
    ap.add_argument("--batch", type=int, default=16, help="batch size")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument("--loader-workers", default="0,1", help="comma list: 0 = decode thread, N = DataLoader processes")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per measurement (median reported)")
    ap.add_argument("--encoders", default="imagenet,clip", help="comma list of imagenet, clip (ViT-B-32, random init)")
    ap.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = ap.parse_args()

    import torch

    from ptg.pipeline.encoders import EncoderSpec

    torch.set_num_threads(args.threads)
    lws = [int(v) for v in args.loader_workers.split(",")]
    known = {"imagenet": EncoderSpec("imagenet"), "clip": EncoderSpec("clip", arch="ViT-B-32", random_init=True)}
    enc_rows = []
    for name in args.encoders.split(","):
        res = bench_encoder(known[name], args.n, args.side, args.batch, lws, args.repeats)
        enc_rows.append(res)
        print(f"{res['encoder']}: bare {res['bare']['median']:.2f} img/s "
              + ", ".join(f"loader {lw}: {res[f'lw{lw}']['median']:.2f} img/s ({res[f'lw{lw}']['median'] / res['bare']['median']:.3f}x)"
                          for lw in lws), flush=True)

    if args.out:
        cmd = " ".join([".venv/bin/python", "benchmarks/bench_extract.py"] + sys.argv[1:])
        rng = lambda d: f"{d['median']:.2f} ({d['min']:.2f}–{d['max']:.2f})"  # noqa: E731
        lines = [
            "# `ptg extract-priors` benchmark", "",
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, busy (shared with 5 other "
            f"jobs while measured); no GPU; torch {torch.__version__}, {args.threads} torch thread(s).", "",
            f"Command: `{cmd}`", "",
            f"Throughput on the same {args.n} pre-decoded {args.side}x{args.side} images, batch {args.batch}; img/s, median "
            f"(min–max) of {args.repeats} interleaved runs in one process; ratio = pipeline median / bare median. "
            "Loader 0 = one decode thread in the process (the default on machines with < 3 cores), N = N DataLoader "
            "worker processes.", "",
            "| encoder | input | bare forward | " + " | ".join(f"pipeline, loader {lw} | ratio" for lw in lws) + " | store bytes / image |",
            "|---|---|---|" + "---|---|" * len(lws) + "---|",
        ]
        for r in enc_rows:
            lines.append(f"| {r['encoder']} | {r['input']} | {rng(r['bare'])} | "
                         + " | ".join(f"{rng(r[f'lw{lw}'])} | {r[f'lw{lw}']['median'] / r['bare']['median']:.3f}x" for lw in lws)
                         + f" | {r['store_bytes'] / r['n']:.0f} ({2**30 * r['n'] / max(1, r['store_bytes']):,.0f} images/GiB) |")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
