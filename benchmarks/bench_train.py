"""Training-step cost of F + PTG-RM with cached priors, against computing the prior online with the
encoder in the loop, and against no prior lookup at all (the floor).

Three arms train the same F + R (UNet F, PTG-RM R at prior dim 512) on the same batches (the same
`TrainDataset` crops of the shipped sample photos, same seed); only the source of the prior differs:

- ``floor``:  R gets a constant prior tensor made once; no lookup, no encoder.
- ``cached``: the prior of each crop's view comes from a priors store (the trainer's path:
  `load_tables` + `TrainDataset`); the store is made beforehand with `ptg extract-priors --model clip
  --random-init` (ViT-B-32, random weights are fine for timing).
- ``online``: the authors' way: CLIP ViT-B-32 ``encode_image`` of every augmented crop at every
  step (resize to 224, CLIP normalisation, on the training device), with the encoder in memory.

Each arm runs in a fresh subprocess. A step = load the batch (num_workers=0, so data time counts)
+ forward + backward + Adam step. Reported: each arm's median step time after warm-up (the median
over interleaved repeats), the part spent loading the batch, the cached arm's prior lookup timed
alone, and peak memory = on CUDA ``torch.cuda.max_memory_allocated``, on CPU the process's peak
resident set (``ru_maxrss``).

    .venv/bin/python benchmarks/bench_train.py --threads 1 --out benchmarks/results/train.md
    .venv/bin/python benchmarks/bench_train.py --device cuda --crop 256 --batch 8 --steps 30
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARMS = ("floor", "cached", "online")


def _worker(arm: str, args: argparse.Namespace) -> dict:
    import torch

    from ptg.pipeline.manifest import load_manifest
    from ptg.ptgrm.models import create_model
    from ptg.ptgrm.train.config import DataConfig, LossConfig, PriorConfig
    from ptg.pipeline.store import sample_keys
    from ptg.ptgrm.train.data import TrainDataset, load_tables
    from ptg.ptgrm.train.losses import build_loss

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    samples = load_manifest(args.manifest).split("train")
    tables = []
    if arm == "cached":
        from ptg.pipeline.store import open_priors

        tables = load_tables([open_priors(args.store)], sample_keys(samples), ("identity", "hflip", "vflip", "hvflip"))
    views = ("identity", "hflip", "vflip", "hvflip")
    ds = TrainDataset(samples, tables, DataConfig(crop=args.crop), PriorConfig(), views, seed=0,
                      repeat=max(1, -(-args.batch * (args.steps + args.warmup) // len(samples))))
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, sampler=[(0, i) for i in range(len(ds))], drop_last=True)

    encode = None
    if arm == "online":
        from ptg.pipeline.encoders import EncoderSpec, build_encoder

        enc = build_encoder(EncoderSpec("clip", arch="ViT-B-32", random_init=True, device=str(dev)))
        enc.module.eval().requires_grad_(False)
        pp = enc.preprocess
        mean = torch.tensor(pp.mean, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(pp.std, device=dev).view(1, 3, 1, 1)

        def encode(x: torch.Tensor) -> torch.Tensor:
            # x: [B, 3, crop, crop] on dev -> [B, 512]; square crops, so the short-side resize is a plain resize
            with torch.no_grad():
                t = torch.nn.functional.interpolate(x, size=(pp.size, pp.size), mode="bicubic", antialias=True).clamp(0, 1)
                return enc.forward((t - mean) / std)

    torch.manual_seed(0)
    f = create_model("unet", width=args.width).to(dev)
    r = create_model("ptgrm", prior_dims=(512,)).to(dev)
    opt = torch.optim.Adam(list(f.parameters()) + list(r.parameters()), lr=1e-4, betas=(0.9, 0.99))
    loss_fn = build_loss(LossConfig())
    const = torch.nn.functional.normalize(torch.ones(args.batch, 512, device=dev), dim=1)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, data_times = [], []
    it = iter(loader)
    for step in range(args.warmup + args.steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        batch = next(it)
        t_data = time.perf_counter() - t0
        x = batch["x"].to(dev, non_blocking=True)
        y = batch["y"].to(dev, non_blocking=True)
        if arm == "floor":
            g = const
        elif arm == "cached":
            g = batch["priors"][0].to(dev, non_blocking=True)
        else:
            g = encode(x)
        ihat = f(x)
        out = r(ihat, x, [g]).out
        loss = loss_fn(ihat, y, x) + loss_fn(out, y, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            data_times.append(t_data)
    lookup_s = 0.0
    if arm == "cached":
        # The only work the cached arm adds to the floor: one prior lookup per sample (timed alone,
        # since on a shared CPU the step-time difference drowns in noise).
        import numpy as np

        from ptg.ptgrm.train.data import _prior_vectors

        rng = np.random.default_rng(0)
        n = 2000
        t0 = time.perf_counter()
        for i in range(n):
            _prior_vectors(tables, i % len(samples), views[i % 4], None, PriorConfig(), None, rng)
        lookup_s = (time.perf_counter() - t0) / n * args.batch
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"arm": arm, "median_s": statistics.median(times), "data_s": statistics.median(data_times), "peak_mib": peak,
            "lookup_s": lookup_s,
            "fm_loaded": sorted({m.split(".")[0] for m in sys.modules} & {"open_clip", "transformers", "diffusers"})}


def _prepare(work: Path, device: str) -> tuple[Path, Path]:
    from ptg.pipeline.samples import build_samples

    manifest = build_samples(work / "samples", task="denoise", sigma=25.0, seed=0, max_side=512, use_opencv=True)
    store = work / "clip.zarr"
    if not store.exists():
        subprocess.run([sys.executable, "-m", "ptg.cli.app", "extract-priors", "--model", "clip", "--random-init",
                        "--manifest", str(manifest), "--out", str(store), "--views", "flips", "--split", "train",
                        "--device", device], check=True, capture_output=True)
    return manifest, store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--width", type=int, default=16, help="UNet F width")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="run every arm this many times (interleaved); report the median")
    ap.add_argument("--work", type=Path, default=None, help="folder for the samples and the store (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="append a markdown section to this file")
    ap.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    ap.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:  # subprocess
        print(json.dumps(_worker(args.arm, args)))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_train_"))
    manifest, store = _prepare(work, args.device)
    common = ["--device", args.device, "--threads", str(args.threads), "--crop", str(args.crop), "--batch",
              str(args.batch), "--width", str(args.width), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--manifest", str(manifest), "--store", str(store)]
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for arm in ARMS:
            out = subprocess.run([sys.executable, __file__, "--arm", arm, *common], check=True, capture_output=True, text=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            runs.setdefault(arm, []).append(res)
            print(f"{arm:7s} {res['median_s'] * 1000:8.1f} ms/step  peak {res['peak_mib']:8.0f} MiB", flush=True)
    # Median over the interleaved repeats of each arm's median step (robust to a busy neighbour).
    results = {arm: {k: statistics.median(r[k] for r in rs) if k != "fm_loaded" else rs[0][k] for k in rs[0] if k != "arm"}
               for arm, rs in runs.items()}
    floor = results["floor"]
    lines = [
        f"## {datetime.date.today()} — {args.device}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), batch {args.batch}, crop {args.crop}, UNet width {args.width} + PTG-RM (dim 512)",
        "",
        f"`{' '.join(['.venv/bin/python', 'benchmarks/bench_train.py'] + sys.argv[1:])}`",
        "",
        "| arm | median step (ms) | of which batch loading (ms) | prior lookup per step (ms) | vs floor | peak memory (MiB) | vs floor | foundation-model packages loaded |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for arm in ARMS:
        r = results[arm]
        lines.append(f"| {arm} | {r['median_s'] * 1000:.1f} | {r['data_s'] * 1000:.1f} | {r['lookup_s'] * 1000:.3f} | "
                     f"{r['median_s'] / floor['median_s']:.3f}× | "
                     f"{r['peak_mib']:.0f} | {r['peak_mib'] / floor['peak_mib']:.2f}× | {', '.join(r['fm_loaded']) or 'none'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        existed = args.out.exists() and args.out.stat().st_size > 0
        with open(args.out, "a") as fh:
            fh.write(("\n" if existed else "") + text)


if __name__ == "__main__":
    main()
