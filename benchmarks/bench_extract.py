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

    from ptg.pipeline.core.imageio import read_image, write_image
    from ptg.pipeline.datasets.manifest import write_manifest

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
    from ptg.pipeline.priors.extract import extract_priors

    import dataclasses

    enc = build_encoder(spec)
    busy: list[float] = []  # seconds inside the encoder's forward during the current pipeline run

    def timed_forward(x, _fwd=enc.forward):
        t = time.perf_counter()
        try:
            return _fwd(x)
        finally:
            busy.append(time.perf_counter() - t)

    timed = dataclasses.replace(enc, forward=timed_forward)
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
                busy.clear()
                s = extract_priors(manifest, timed, out=Path(tmp) / f"s{r}-{lw}.zarr", batch_size=batch, loader_workers=lw,
                                   image_loader=_MemLoader(cache), on_plan=lambda plan: start.append(time.perf_counter()))
                wall = time.perf_counter() - start[0]
                runs.setdefault(f"lw{lw}", []).append(n / wall)
                # the share of the pipeline's wall time the encoder was computing: 1.0 = never waiting
                runs.setdefault(f"busy{lw}", []).append(sum(busy) / wall)
                store_bytes = s.store_bytes
    out = {"encoder": f"{spec.name} {spec.arch or ''}".strip() + (" (random init)" if spec.random_init else ""),
           "input": enc.preprocess.size, "dim": enc.dim, "store_bytes": store_bytes, "n": n}
    out.update({k: _spread(v) for k, v in runs.items()})
    return out


def bench_dask(n: int, side: int, batch: int, workers: list[int], rows_per_shard: int, repeats: int = 1) -> list[dict]:
    """`ptg extract-priors --workers N` (the real CLI, PNG files on disk) per N, settings
    interleaved ``repeats`` times, and each store's committed shards (keys + SHA-256 of the stored
    values) compared with the first N's."""
    import subprocess

    from ptg.pipeline.storage.store import read_commits

    walls: dict[int, list[float]] = {w: [] for w in workers}
    commits_of: dict[int, list[dict]] = {w: [] for w in workers}
    with tempfile.TemporaryDirectory() as tmp:
        manifest, _ = _images(Path(tmp), n, side)
        for r, w in ((r, w) for r in range(repeats) for w in workers):
            store = Path(tmp) / f"w{w}-{r}.zarr"
            cmd = [sys.executable, "-m", "ptg.cli.app", "extract-priors", "--manifest", str(manifest), "--model", "imagenet", "--out",
                   str(store), "--batch-size", str(batch), "--rows-per-shard", str(rows_per_shard), "--workers", str(w),
                   "--loader-workers", "0"]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            wall = time.perf_counter() - t
            commits = {sid: (tuple(c["keys"]), c["sha256"]) for sid, c in read_commits(store).items()}
            walls[w].append(wall)
            commits_of[w].append(commits)
            print(f"--workers {w}: {wall:.1f} s for {n} images ({n / wall:.2f} img/s), {len(commits)} shards", flush=True)
    ref = commits_of[workers[0]][0]
    return [{"workers": w, "wall_s": statistics.median(walls[w]), "min": min(walls[w]), "max": max(walls[w]),
             "img_s": n / statistics.median(walls[w]), "shards": len(commits_of[w][0]),
             "same": all(c == ref for c in commits_of[w])} for w in workers]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64, help="images per run")
    ap.add_argument("--side", type=int, default=256, help="side of the pre-decoded images")
    ap.add_argument("--batch", type=int, default=16, help="batch size")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument("--loader-workers", default="0,1", help="comma list: 0 = decode thread, N = DataLoader processes")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs per measurement (median reported)")
    ap.add_argument("--encoders", default="imagenet,clip", help="comma list of imagenet, clip (ViT-B-32, random init)")
    ap.add_argument("--dask-images", type=int, default=0, help="images of the --workers run (0 = skip it)")
    ap.add_argument("--dask-workers", default="0,1,2", help="comma list of --workers values (0 = in process)")
    ap.add_argument("--dask-repeats", type=int, default=1, help="interleaved runs per --workers value (median reported)")
    ap.add_argument("--out", type=Path, default=None, help="write a markdown report here (the --workers section is appended)")
    args = ap.parse_args()

    import torch

    from ptg.pipeline.encoders import EncoderSpec

    torch.set_num_threads(args.threads)
    lws = [int(v) for v in args.loader_workers.split(",")]
    known = {"imagenet": EncoderSpec("imagenet"), "clip": EncoderSpec("clip", arch="ViT-B-32", random_init=True)}
    enc_rows = []
    for name in [e for e in args.encoders.split(",") if e and e != "none"]:
        res = bench_encoder(known[name], args.n, args.side, args.batch, lws, args.repeats)
        enc_rows.append(res)
        print(f"{res['encoder']}: bare {res['bare']['median']:.2f} img/s "
              + ", ".join(f"loader {lw}: {res[f'lw{lw}']['median']:.2f} img/s ({res[f'lw{lw}']['median'] / res['bare']['median']:.3f}x, "
                          f"busy {res[f'busy{lw}']['median']:.3f})"
                          for lw in lws), flush=True)

    dask_rows = (bench_dask(args.dask_images, args.side, args.batch, [int(w) for w in args.dask_workers.split(",")], 16,
                            args.dask_repeats)
                 if args.dask_images else [])
    cmd = " ".join([".venv/bin/python", "benchmarks/bench_extract.py"] + sys.argv[1:])
    if args.out and dask_rows:
        base = dask_rows[0]
        lines = ["", f"## `ptg extract-priors --workers N` (local dask cluster), {args.dask_images} PNG files of {args.side}², "
                 f"imagenet, batch {args.batch}, 16 rows per shard", "",
                 f"Command: `{cmd}` (each run: `ptg extract-priors --manifest M --model imagenet --batch-size {args.batch} "
                 "--rows-per-shard 16 --workers N --loader-workers 0`, wall time of the whole command: start-up, encoder "
                 "load, cluster start, hashing, decode, inference, commits).", "",
                 f"| --workers | wall (s), median (min–max) of {args.dask_repeats} | img/s | vs in-process | shards | "
                 f"committed shards identical to --workers {base['workers']} (keys + SHA-256, every run) |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {r['workers']} | {r['wall_s']:.1f} ({r['min']:.1f}–{r['max']:.1f}) | {r['img_s']:.2f} | {r['img_s'] / base['img_s']:.2f}x | {r['shards']} | "
                  f"{'yes' if r['same'] else 'NO'} |" for r in dask_rows]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write("\n".join(lines) + "\n")
    if args.out and enc_rows:
        cmd = " ".join([".venv/bin/python", "benchmarks/bench_extract.py"] + sys.argv[1:])
        rng = lambda d: f"{d['median']:.2f} ({d['min']:.2f}–{d['max']:.2f})"  # noqa: E731
        lines = [
            "# `ptg extract-priors` benchmark", "",
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, load average "
            f"{os.getloadavg()[1]:.1f} over the last 5 minutes when the report was written (other jobs share the cores "
            f"above {args.threads}); no GPU; torch {torch.__version__}, {args.threads} torch thread(s).", "",
            f"Command: `{cmd}`", "",
            f"Throughput on the same {args.n} pre-decoded {args.side}x{args.side} images, batch {args.batch}; img/s, median "
            f"(min–max) of {args.repeats} interleaved runs in one process; ratio = pipeline median / bare median. "
            "Loader 0 = one decode thread in the process, N = N DataLoader worker processes (default: min(4, CPUs - 1)). "
            "Encoder busy = time inside the encoder's forward / the pipeline's wall time, in the same run: the "
            "load-independent measure of what the pipeline adds (1.0 = the encoder never waits on decoding, "
            "hashing or writing).", "",
            "| encoder | input | bare forward | " + " | ".join(f"pipeline, loader {lw} | ratio | encoder busy" for lw in lws)
            + " | store bytes / image |",
            "|---|---|---|" + "---|---|---|" * len(lws) + "---|",
        ]
        for r in enc_rows:
            lines.append(f"| {r['encoder']} | {r['input']} | {rng(r['bare'])} | "
                         + " | ".join(f"{rng(r[f'lw{lw}'])} | {r[f'lw{lw}']['median'] / r['bare']['median']:.3f}x | "
                                      f"{r[f'busy{lw}']['median']:.3f} ({r[f'busy{lw}']['min']:.3f}–{r[f'busy{lw}']['max']:.3f})" for lw in lws)
                         + f" | {r['store_bytes'] / r['n']:.0f} ({2**30 * r['n'] / max(1, r['store_bytes']):,.0f} images/GiB) |")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        text = "\n".join(lines) + "\n"
        old = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(text + (old[old.index("\n## `ptg extract-priors --workers"):] if "## `ptg extract-priors --workers" in old else ""))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
