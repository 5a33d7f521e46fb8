"""Batch loading from image files against the image store (`ptg.pipeline.storage.imagestore`): the same
seeded crops (batch 8, 256², the trainer's `TrainDataset`), side by side in one run.

Datasets: ``2k`` = 2040×1356 photos (the shipped sample photos upscaled with Lanczos, then
`ptg data synth --task denoise` σ=25, so each PNG costs what a DIV2K photo costs to decode) and
``samples`` = the shipped sample photos (`ptg data samples`, ≤512 px). Arms: ``files`` (decode the
PNGs of every crop: data.images=files) and ``store`` (crops are views of the store's memory map:
data.images=store), each with 0, 1 and 2 DataLoader workers, batches made as `ptg train` makes them
(`ptg.ptgrm.train.ring`: workers write into preallocated shared slots); ``store-collate`` is the
store read through torch's own batching (each batch collated into fresh shared memory and sent
through a queue), the path before the ring, for comparison. Each arm runs in a fresh process;
the first pass over the images (the store's once-per-reader digest check) is warm-up, reported
apart. Reported: median ms per batch and the 10th–90th percentile.

Memory (2 workers, every image touched by both workers): the growth of the proportional set size
(PSS: shared pages split between the processes that map them) of the loader's processes, in
copies of the decoded dataset: ``files+cache`` (data.cache_images: each worker keeps float32 copies),
``store`` (one copy in the page cache, shared). PSS, not RSS: RSS counts a shared page once per process.

Training step (``--train``; meant for a GPU): UNet F (width 16) + PTG-RM with a constant prior,
batch 8, 256², one loader worker, pinned memory and non-blocking copies; arms files / store /
``gpu`` (the batch already on the device: the floor); reports the step time and its share spent
waiting for the batch, with the device's name.

    .venv/bin/python benchmarks/bench_loader.py --out benchmarks/results/loader.md
    .venv/bin/python benchmarks/bench_loader.py --train --device cuda --datasets 2k --out benchmarks/results/loader_h200.md
    .venv/bin/python benchmarks/bench_loader.py --verify-store --out benchmarks/results/loader_verify.md

Verification of a store someone else wrote (``--verify-store``, only this table): the time
`ImageStore.vouch` takes before a store's pixels are served (what ``ptg train`` does at start), for
the store written here (its records are known true: no decoding), then with an empty verification
ledger (a teammate's store, or a bucket's: first use decodes every image once and compares), then
again (second use: the ledger has them, no decoding). Hashing the files (the keys, which every run
computes anyway) is timed apart.

Everything is written under ``--work`` (default a temp dir, deleted at the end).
"""
from __future__ import annotations

import argparse
import json
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

SIZE_2K = (2040, 1356)


def _stats(ts: list[float]) -> dict:
    ms = sorted(1e3 * t for t in ts)
    return {"median": statistics.median(ms), "p10": ms[int(0.1 * len(ms))], "p90": ms[max(0, int(0.9 * len(ms)) - 1)],
            "n": len(ms)}


def _fmt(s: dict) -> str:
    return f"{s['median']:.3f} ({s['p10']:.3f}–{s['p90']:.3f})"


def prepare(work: Path, n2k: int) -> dict[str, Path]:
    """The two datasets' manifests, and the image store of both."""
    from PIL import Image

    from ptg.pipeline.storage import imagestore
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.pipeline.datasets.samples import build_samples
    from ptg.pipeline.datasets.synth import NoiseParams, synthesize

    small = build_samples(work / "samples", task="denoise", sigma=25.0, seed=0, use_opencv=False)
    clean = work / "clean2k"
    clean.mkdir(exist_ok=True)
    photos = [s.target for s in load_manifest(small).samples][:n2k]
    for p in photos:
        Image.open(p).convert("RGB").resize(SIZE_2K, Image.LANCZOS).save(clean / p.name)
    big = synthesize(clean, work / "2k", "denoise", NoiseParams(sigma=25.0), seed=0, split="train")
    paths = [p for m in (small, big) for p in imagestore.manifest_paths(load_manifest(m).samples)]
    imagestore.cache_images(paths, work / "images")
    return {"samples": small, "2k": big}


def _dataset(manifest: Path, source: str, store: Path, crop: int, batch: int, batches: int):
    from ptg.pipeline.storage import imagestore
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.ptgrm.train.config import DataConfig, PriorConfig
    from ptg.ptgrm.train.data import ImageSource, InputGuard, TrainDataset

    samples = load_manifest(manifest).samples
    raw = source in ("store", "store-collate")  # uint8 batches, as the trainer loads them (float32 on the device)
    if source.startswith("store"):
        guard = InputGuard(paths=imagestore.manifest_paths(samples))
        images = ImageSource(imagestore.ImageStore(store), guard)
    else:
        images = ImageSource(cache=source == "files+cache")
    repeat = max(1, -(-batch * batches // len(samples)))
    # "store-f32": the store's crops as float32 batches on the CPU
    return TrainDataset(samples, [], DataConfig(crop=crop), PriorConfig(), ("identity", "hflip", "vflip", "hvflip"),
                        seed=0, repeat=repeat, images=images, raw=raw), len(samples)


def _batches(ds, a: dict, prefetch: int = 2, pin: bool = False):
    """The arm's batches of `ds` in order: as `ptg train` makes them (`ring_batches`), or, for
    ``store-collate``, by torch's DataLoader collating each batch (the path before the ring)."""
    import torch

    from ptg.ptgrm.train.ring import BatchRing, ring_batches, ring_slots

    keys = [(0, i) for i in range(len(ds))]
    if a["source"] == "store-collate":
        return iter(torch.utils.data.DataLoader(ds, batch_size=a["batch"], sampler=keys, num_workers=a["workers"],
                                                drop_last=True, prefetch_factor=prefetch if a["workers"] else None))
    ring = BatchRing(ds, a["batch"], ring_slots(a["workers"], prefetch))
    return ring_batches(ring, keys, a["batch"], a["workers"], prefetch, pin=pin)


def _pss_kib(pid: int, under: str | None = None) -> int:
    """PSS of a process (KiB), or of its mappings of files under `under` only."""
    if under is None:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
        return 0
    return _smaps_kib(pid, "Pss:", under)


def _smaps_kib(pid: int, field: str, under: str) -> int:
    """The sum of one smaps field (``Pss:``, ``Rss:``; KiB) over a process's mappings of files under `under`."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            inside = len(head) >= 6 and head[5].startswith(under)
        elif inside and line.startswith(field):
            total += int(head[1])
    return total


def _loader_arm(a: dict) -> dict:
    """Time `batches` batches (after one warm-up pass over the images), or measure PSS growth."""
    import multiprocessing

    import torch

    from ptg.pipeline.datasets.manifest import load_manifest

    torch.set_num_threads(1)
    n = len(load_manifest(a["manifest"]).samples)
    # warm-up: one pass over the images per worker (each reader checks an image's digest once)
    warm = -(-n // a["batch"]) * max(1, a["workers"]) + a["warm"]
    ds, _ = _dataset(Path(a["manifest"]), a["source"], Path(a["store"]), a["crop"], a["batch"], a["batches"] + warm + 2)
    base = _pss_kib(os.getpid())
    it = _batches(ds, a)
    times, first = [], []
    for b in range(warm + a["batches"]):
        t0 = time.perf_counter()
        next(it)
        (first if b < warm else times).append(time.perf_counter() - t0)
    out = {"warm": _stats(first), "batch": _stats(times)}
    if a["workers"]:
        pids = [os.getpid()] + [w.pid for w in multiprocessing.active_children()]  # the loader's workers, alive
        out["pss_growth_mib"] = (sum(_pss_kib(p) for p in pids) - base) / 1024
        out["store_pss_mib"] = sum(_pss_kib(p, str(Path(a["store"]).resolve())) for p in pids) / 1024
        out["store_rss_per_worker_mib"] = [_smaps_kib(p, "Rss:", str(Path(a["store"]).resolve())) / 1024 for p in pids[1:]]
    return out


def _run(a: dict) -> dict:
    cmd = [sys.executable, __file__, "--_arm", json.dumps(a)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise SystemExit(f"arm {a} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _decoded_mib(manifest: Path) -> float:
    from ptg.pipeline.storage import imagestore
    from ptg.pipeline.datasets.manifest import load_manifest

    return imagestore.decoded_bytes(imagestore.manifest_paths(load_manifest(manifest).samples)) / 2**20


def _train_arm(a: dict) -> dict:
    """Median training step of F + PTG-RM with batches from files, the store, or already on the device."""
    import torch

    from ptg.ptgrm.models import create_model
    from ptg.ptgrm.train.config import LossConfig
    from ptg.ptgrm.train.pixels import to_float
    from ptg.ptgrm.train.losses import build_loss

    dev = torch.device(a["device"])
    ds, _ = _dataset(Path(a["manifest"]), "store" if a["source"] == "gpu" else a["source"], Path(a["store"]), a["crop"],
                     a["batch"], a["steps"] + a["warm"])
    it = _batches(ds, {**a, "source": "store" if a["source"] == "gpu" else a["source"], "workers": 1}, prefetch=4,
                  pin=dev.type == "cuda")  # the trainer's path: the ring, pinned copies on CUDA
    torch.manual_seed(0)
    f, r = create_model("unet", width=16).to(dev), create_model("ptgrm", prior_dims=(512,)).to(dev)
    opt = torch.optim.Adam(list(f.parameters()) + list(r.parameters()), lr=1e-4)
    loss_fn, g = build_loss(LossConfig()), torch.full((a["batch"], 512), 512 ** -0.5, device=dev)
    fixed = None
    steps, waits = [], []
    for step in range(a["warm"] + a["steps"]):
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        if a["source"] == "gpu" and fixed is not None:
            x, y = fixed
        else:
            batch = next(it)
            x = to_float(batch["x"].to(dev, non_blocking=True), batch.get("view"))  # the trainer's path: on the device
            y = to_float(batch["y"].to(dev, non_blocking=True), batch.get("view"))
            fixed = (x, y) if a["source"] == "gpu" else None
        t_data = time.perf_counter() - t0
        ihat = f(x)
        loss = loss_fn(ihat, y, x) + loss_fn(r(ihat, x, [g]).out, y, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if step >= a["warm"]:
            steps.append(time.perf_counter() - t0)
            waits.append(t_data)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"
    return {"step": _stats(steps), "wait": _stats(waits), "device": name}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--_arm", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help="Scratch folder (default: a temp dir, deleted at the end).")
    ap.add_argument("--datasets", default="2k,samples")
    ap.add_argument("--n2k", type=int, default=8, help="2K photos made (each with its noisy input).")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--store-batches", type=int, default=200)
    ap.add_argument("--file-batches", type=int, default=6)
    ap.add_argument("--train", action="store_true", help="Also time training steps (files / store / gpu).")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--verify-store", action="store_true", help="Only time verifying a store someone else wrote.")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args._arm:
        a = json.loads(args._arm)
        print(json.dumps(_train_arm(a) if a.get("train") else _loader_arm(a)))
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        t0 = time.perf_counter()
        if args.verify_store:  # the store is written with this run's own ledger, not the user's
            os.environ["PTG_CACHE"] = str(work / "own-cache")
        manifests = prepare(work, args.n2k)
        if args.verify_store:
            lines = _verify_report(args, work, manifests)
        else:
            lines = _report(args, work, manifests, time.perf_counter() - t0)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


def _report(args: argparse.Namespace, work: Path, manifests: dict[str, Path], prep_s: float) -> list[str]:
    common = {"store": str(work / "images"), "crop": args.crop, "batch": args.batch}
    lines = [f"# Batch loading: files vs the image store (batch {args.batch}, {args.crop}² crops)", "",
             f"{platform.platform()}, {os.cpu_count()} CPUs; datasets made and cached in {prep_s:.0f} s. "
             "Median ms per batch (10th–90th percentile), after a warm-up pass.", "",
             "| dataset | workers | files (ms/batch) | store, uint8 batches (ms/batch) | speed-up | store, float32 batches (ms/batch) | store first pass (ms/batch) | store, uint8, torch collate (before the ring) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in args.datasets.split(","):
        m = str(manifests[name])
        for w in (int(v) for v in args.workers.split(",")):
            f = _run({**common, "manifest": m, "source": "files", "workers": w, "batches": args.file_batches, "warm": 0})
            s = _run({**common, "manifest": m, "source": "store", "workers": w, "batches": args.store_batches, "warm": 0})
            s32 = _run({**common, "manifest": m, "source": "store-f32", "workers": w, "batches": args.store_batches // 2,
                        "warm": 0})
            old = _run({**common, "manifest": m, "source": "store-collate", "workers": w, "batches": args.store_batches,
                        "warm": 0})
            lines.append(f"| {name} | {w} | {_fmt(f['batch'])} | {_fmt(s['batch'])} | "
                         f"{f['batch']['median'] / s['batch']['median']:.0f}× | {_fmt(s32['batch'])} | {_fmt(s['warm'])} | "
                         f"{_fmt(old['batch'])} |")
    lines += ["", "Memory, 2 workers, every image touched by both workers. PSS growth of the loader's processes "
              "(main + workers; includes the workers' own interpreters and prefetched batches), and of the store's "
              "mapped pages alone (RSS of those pages in each worker in brackets: both map every page, the kernel "
              "holds it once):", "",
              "| dataset | decoded size (MiB) | files+cache: PSS growth (MiB, copies) | store: PSS growth (MiB, copies) | "
              "store pages: PSS (MiB, copies) [RSS per worker] |", "| --- | --- | --- | --- | --- |"]
    for name in args.datasets.split(","):
        m, size = str(manifests[name]), _decoded_mib(manifests[name])
        fc = _run({**common, "manifest": m, "source": "files+cache", "workers": 2, "batches": 2, "warm": 0})
        st = _run({**common, "manifest": m, "source": "store", "workers": 2, "batches": 2, "warm": 0})
        per = ", ".join(f"{v:.0f}" for v in st["store_rss_per_worker_mib"])
        lines.append(f"| {name} | {size:.0f} | {fc['pss_growth_mib']:.0f} ({fc['pss_growth_mib'] / size:.2f}) | "
                     f"{st['pss_growth_mib']:.0f} ({st['pss_growth_mib'] / size:.2f}) | "
                     f"{st['store_pss_mib']:.0f} ({st['store_pss_mib'] / size:.2f}) [{per}] |")
    if args.train:
        lines += _train_report(args, common, manifests)
    return lines


def _verify_report(args: argparse.Namespace, work: Path, manifests: dict[str, Path]) -> list[str]:
    """First and second use of a store whose records this user has not seen true (see the module docstring)."""
    from ptg.pipeline.core.imageio import read_image
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.pipeline.storage import imagestore

    lines = ["# Using an image store someone else wrote: verification cost (`ImageStore.vouch`)", "",
             f"{platform.platform()}, {os.cpu_count()} CPUs. Seconds for the whole dataset.", "",
             "| dataset | images | hash files (every run) | decode every file once | store written here | "
             "teammate's store, first use (decoded) | second use (decoded) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in args.datasets.split(","):
        paths = imagestore.manifest_paths(load_manifest(manifests[name]).samples)
        t = time.perf_counter()
        keys = imagestore.file_keys(paths)
        hashing = time.perf_counter() - t
        t = time.perf_counter()
        for p in paths:
            read_image(p)
        decode = time.perf_counter() - t
        cells = []
        for cache in ("own-cache", f"teammate-cache-{name}", f"teammate-cache-{name}"):
            os.environ["PTG_CACHE"] = str(work / cache)
            t = time.perf_counter()
            n = imagestore.ImageStore(work / "images").vouch(paths, keys)
            cells.append(f"{time.perf_counter() - t:.3f} ({n})")
        lines.append(f"| {name} | {len(paths)} | {hashing:.3f} | {decode:.3f} | {' | '.join(cells)} |")
    return lines


def _train_report(args: argparse.Namespace, common: dict, manifests: dict[str, Path]) -> list[str]:
    m = str(manifests[args.datasets.split(",")[0]])
    lines = ["", "Training step, UNet width 16 + PTG-RM, 1 loader worker, pinned memory:", "",
             "| source | device | step (ms) | waiting for the batch (ms) | share waiting |", "| --- | --- | --- | --- | --- |"]
    for src in ("files", "store", "gpu"):
        r = _run({**common, "manifest": m, "source": src, "train": True, "device": args.device, "steps": args.train_steps,
                  "warm": 3})
        lines.append(f"| {src} | {r['device']} | {_fmt(r['step'])} | {_fmt(r['wait'])} | "
                     f"{100 * r['wait']['median'] / r['step']['median']:.1f} % |")
    return lines


if __name__ == "__main__":
    main()
