"""Training-step cost of F + PTG-RM with cached priors, against computing the prior online with the
encoder in the loop, and against no prior lookup at all (the floor).

The arms train the same F + R (UNet F, PTG-RM R at the arm's prior dim) on the same batches (the
same `TrainDataset` crops of the shipped sample photos, same seed); only the source of the prior
differs:

- ``floor``:  R gets a constant prior tensor made once; no lookup, no encoder.
- ``cached``: the prior of each crop's view comes from a priors store held in RAM (the trainer's
  path: `load_tables` + `TrainDataset`); the store is extracted beforehand (CLIP ViT-B-32, flips).
- ``cached-lazy``: the same store read per sample through the row cache
  (`priorcache.prior_vectors(..., setting="false")`, i.e. ``data.priors_in_memory=false``).
- ``online``: the authors' way: CLIP ViT-B-32 ``encode_image`` of every augmented crop at every
  step (resize, CLIP normalisation, on the training device), with the encoder in memory.
- ``cached-sd`` / ``online-sd``: Stable Diffusion 1.5's VAE encoder + UNet (the v1-5 configs,
  random init; prior = VAE mid-block + latent statistics + UNet mid-block at timestep 200,
  1804-d), input side ``--sd-size``.
- ``cached-blip2`` / ``online-blip2``: BLIP-2's ViT-g/14 (39 layers, width 1408) + Q-Former (12
  layers, 32 queries), transformers' `Blip2Config` defaults = blip2-opt-2.7b's vision and
  Q-Former, random init; the OPT language model is not instantiated (the Q-Former prior does not
  use it); input side ``--blip2-size`` (the position table is built for that side).

- ``refine-live`` / ``refine-cached``: R alone on a frozen F, through the real ``ptg train --mode
  refine`` (step time = the trainer's own ``sec_per_step`` in log.csv: batch + forward + backward
  + Adam), one pair per F of ``--refine-f``: ``restormer-paper`` (26.1M, ptg's registry) and
  ``spandrel-restormer`` (spandrel_extra_arches' Restormer at its default size, 26.1M, loaded from
  a safetensors file with ``--baseline spandrel`` as a user's checkpoint is). Live: F runs forward
  (no_grad) on every crop, F in memory. Cached: ``ptg extract-outputs`` wrote F's outputs of the
  training photos once (timed and reported), and ``ptg train --f-outputs`` never builds F. The
  photos are the shipped samples at ``--refine-side``; the prior is the recorded degradation.

Random weights are fine for timing and memory. Every store is extracted in this process first,
and its extraction throughput reported.

Each arm runs in a fresh subprocess. A step = load the batch (num_workers=0, so data time counts)
+ forward + backward + Adam step. Reported: each arm's median step time after warm-up (the median
over interleaved repeats), the part spent loading the batch, the cached arm's prior lookup timed
alone, and peak memory = on CUDA ``torch.cuda.max_memory_allocated``, on CPU the process's peak
resident set (``VmHWM``).

    .venv/bin/python benchmarks/bench_train.py --threads 1 --batch 2 --steps 8 --warmup 2 --online-steps 2 \
        --repeats 2 --sd-size 128 --blip2-size 112 --out benchmarks/results/train.md
    .venv/bin/python benchmarks/bench_train.py --device cuda --crop 256 --batch 8 --steps 30
    .venv/bin/python benchmarks/bench_train.py --arms floor,refine-live,refine-cached --threads 1 --batch 2 --steps 3 \
        --warmup 1 --repeats 2 --refine-side 192
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARMS = ("floor", "cached", "cached-lazy", "online", "cached-sd", "online-sd", "cached-blip2", "online-blip2",
        "refine-live", "refine-cached")
REFINE_ARMS = ("refine-live", "refine-cached")  # one pair per --refine-f F, through the real `ptg train`
VIEWS = ("identity", "hflip", "vflip", "hvflip")

# SD 1.5's VAE and UNet (v1-5 repo configs), built at random init: the real architectures and sizes.
SD_VAE = {"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
          "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4, "in_channels": 3,
          "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 512,
          "scaling_factor": 0.18215}
SD_UNET = {"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
           "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 768,
           "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
           "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
           "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
           "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}


def big_encoder_spec(name: str, folder: Path, size: int, timestep: int = 200):
    """An `EncoderSpec` of a paper-size foundation model at random init, from configs written to
    ``folder``: ``sd`` = SD 1.5 VAE + UNet (prior at ``timestep``), ``blip2`` = BLIP-2's ViT-g/14 +
    Q-Former (transformers' `Blip2Config` defaults = blip2-opt-2.7b's vision and Q-Former; the OPT
    language model is never instantiated by the encoder). ``size`` = input side (224/512 in the
    released models; the ViT's position table is built for ``size``)."""
    import json

    from ptg.pipeline.encoders import EncoderSpec

    root = folder / name
    if name == "sd":
        for sub, cfg in (("vae", SD_VAE), ("unet", SD_UNET)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub / "config.json").write_text(json.dumps(cfg))
        return EncoderSpec("sd", pretrained=str(root), random_init=True, size=size, timestep=timestep)
    from transformers import Blip2Config

    Blip2Config(vision_config={"image_size": size}).save_pretrained(root)
    return EncoderSpec("blip2", pretrained=str(root), random_init=True, size=size)


def _peak_rss_mib() -> float:
    """This process's peak resident set. VmHWM belongs to the process image and starts afresh at
    exec; ``ru_maxrss`` would carry over the parent's peak (the parent loads SD and BLIP-2 to
    extract their stores)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(arm: str, args: argparse.Namespace) -> dict:
    import torch

    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.ptgrm.models import create_model
    from ptg.ptgrm.train.config import DataConfig, LossConfig, PriorConfig
    from ptg.pipeline.storage.store import sample_keys
    from ptg.ptgrm.train.data import TrainDataset, load_tables
    from ptg.ptgrm.train.losses import build_loss

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    samples = load_manifest(args.manifest).split("train")
    tables = []
    family = arm.split("-")[1] if arm.count("-") and arm != "cached-lazy" else "clip"
    store = {"clip": args.store, "sd": args.work / "sd.zarr", "blip2": args.work / "blip2.zarr"}[family]
    if arm.startswith("cached"):
        import warnings

        from ptg.pipeline.storage.store import open_priors

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random-init stores; identity-only stores fall back for flips
            tables = load_tables([open_priors(store)], sample_keys(samples), VIEWS)
        if arm == "cached-lazy":  # data.priors_in_memory=false: the row cache, read per sample
            from ptg.pipeline.storage.priorcache import prior_vectors

            for t in tables:
                t.vectors = prior_vectors(store, sample_keys(samples), list(t.vectors), setting="false")
    views = VIEWS
    dim = tables[0].dim if tables else 512
    ds = TrainDataset(samples, tables, DataConfig(crop=args.crop), PriorConfig(), views, seed=0,
                      repeat=max(1, -(-args.batch * (args.steps + args.warmup) // len(samples))))
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, sampler=[(0, i) for i in range(len(ds))], drop_last=True)

    encode = None
    if arm.startswith("online"):
        import dataclasses

        from ptg.pipeline.encoders import EncoderSpec, build_encoder

        spec = (EncoderSpec("clip", arch="ViT-B-32", random_init=True) if family == "clip"
                else big_encoder_spec(family, args.work / "configs", args.sd_size if family == "sd" else args.blip2_size))
        enc = build_encoder(dataclasses.replace(spec, device=str(dev)))
        enc.module.eval().requires_grad_(False)
        pp = enc.preprocess
        dim = enc.dim
        mean = torch.tensor(pp.mean, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(pp.std, device=dev).view(1, 3, 1, 1)

        def encode(x: torch.Tensor) -> torch.Tensor:
            # x: [B, 3, crop, crop] on dev -> [B, dim]; square crops: short-side crop and squash are a plain resize
            with torch.no_grad():
                t = torch.nn.functional.interpolate(x, size=(pp.size, pp.size), mode="bicubic", antialias=True).clamp(0, 1)
                return enc.forward((t - mean) / std).float()

    torch.manual_seed(0)
    f = create_model("unet", width=args.width).to(dev)
    r = create_model("ptgrm", prior_dims=(dim,)).to(dev)
    opt = torch.optim.Adam(list(f.parameters()) + list(r.parameters()), lr=1e-4, betas=(0.9, 0.99))
    loss_fn = build_loss(LossConfig())
    const = torch.nn.functional.normalize(torch.ones(args.batch, dim, device=dev), dim=1)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, data_times = [], []
    it = iter(loader)
    steps = args.online_steps if arm in ("online-sd", "online-blip2") else args.steps
    for step in range(args.warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        batch = next(it)
        t_data = time.perf_counter() - t0
        x = batch["x"].to(dev, non_blocking=True)
        y = batch["y"].to(dev, non_blocking=True)
        if arm == "floor":
            g = const
        elif arm.startswith("cached"):
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
    if arm.startswith("cached"):
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
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else _peak_rss_mib()
    return {"arm": arm, "median_s": statistics.median(times), "data_s": statistics.median(data_times), "peak_mib": peak,
            "lookup_s": lookup_s, "dim": dim, "steps": steps,
            "fm_loaded": sorted({m.split(".")[0] for m in sys.modules} & {"open_clip", "transformers", "diffusers"})}


def _refine_f_args(name: str, work: Path) -> list[str]:
    """`ptg train`/`ptg extract-outputs` flags of a refine F: a registered F with its (random) state
    dict saved once, or ``spandrel-restormer``: spandrel_extra_arches' Restormer at its default size
    (26.1M) saved as safetensors and loaded the way a user's checkpoint is (`--baseline spandrel`)."""
    import torch

    if name == "spandrel-restormer":
        path = work / "spandrel_restormer.safetensors"
        if not path.exists():
            from safetensors.torch import save_file
            from spandrel_extra_arches.architectures.Restormer import Restormer

            torch.manual_seed(0)
            save_file({k: v.contiguous() for k, v in Restormer().state_dict().items()}, str(path))
        return ["--baseline", "spandrel", "--baseline-weights", str(path)]
    from ptg.ptgrm.models import create_model

    path = work / f"f_{name}.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(create_model(name).state_dict(), path)
    return ["--baseline", name, "--baseline-weights", str(path)]


def _refine_worker(arm: str, args: argparse.Namespace) -> dict:
    """R alone on a frozen F through the real `ptg train --mode refine`: F live in the loop, or
    F's outputs read from a `ptg extract-outputs` store (`--f-outputs`, F never built)."""
    import csv

    import torch

    from ptg.cli.app import main as ptg

    run = args.work / f"run_{arm}_{args.refine_f}_{os.getpid()}"
    f_args = ["--f-outputs", str(args.work / f"outs_{args.refine_f}")] if arm == "refine-cached" else \
        _refine_f_args(args.refine_f, args.work)
    sets = [f"run.threads={args.threads}", "run.log_every=1", "run.checkpoint_every=100000", "data.val_split=none",
            "data.augment=none", "data.images=files", "data.cache_images=true"]
    rc = ptg(["train", "--mode", "refine", *f_args, "--manifest", str(args.manifest), "--priors", str(args.store),
              "--out", str(run), "--steps", str(args.warmup + args.steps), "--crop", str(args.crop), "--batch-size",
              str(args.batch), "--device", args.device, "-q", *[x for kv in sets for x in ("--set", kv)]])
    if rc:
        raise SystemExit(f"ptg train failed for {arm} {args.refine_f}")
    with open(run / "log.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("sec_per_step")]
    times = [float(r["sec_per_step"]) for r in rows[args.warmup:]]
    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else _peak_rss_mib()
    from ptg.ptgrm.artifacts import load

    restorer, _ = load(run, prefer="last")
    return {"arm": arm, "median_s": statistics.median(times), "data_s": float("nan"), "peak_mib": peak, "lookup_s": 0.0,  # data: not timed apart
            "dim": float(restorer.transform.dims[0]), "steps": len(times),
            "f_params_m": sum(p.numel() for p in restorer.f.parameters()) / 1e6,
            "fm_loaded": sorted({m.split(".")[0] for m in sys.modules} & {"open_clip", "transformers", "diffusers",
                                                                           "spandrel", "spandrel_extra_arches"})}


def _refine_prepare(work: Path, args: argparse.Namespace) -> tuple[Path, Path, list[dict]]:
    """The refine arms' photos (``--refine-side``), a degradation-prior store and, per F,
    `ptg extract-outputs` of the training split (timed: that is the one-off cost caching pays)."""
    from ptg.cli.app import main as ptg
    from ptg.pipeline.datasets.samples import build_samples

    manifest = build_samples(work / "refine_samples", task="denoise", sigma=25.0, seed=0, max_side=args.refine_side,
                             use_opencv=True)
    store = work / "refine_priors.zarr"
    if not store.exists() and ptg(["extract-priors", "--model", "degradation", "--manifest", str(manifest), "--out",
                                   str(store)]):
        raise SystemExit("extract-priors failed")
    rows = []
    for name in args.refine_fs:
        outs = work / f"outs_{name}"
        t = time.perf_counter()
        if ptg(["extract-outputs", "--manifest", str(manifest), *_refine_f_args(name, work), "--out", str(outs),
                "--split", "train", "--device", args.device]):
            raise SystemExit(f"extract-outputs failed for {name}")
        rows.append({"f": name, "seconds": time.perf_counter() - t})
    return manifest, store, rows


def _prepare(work: Path, args: argparse.Namespace) -> tuple[Path, Path, list[dict]]:
    """The sample manifest and one store per encoder (clip: flips; sd, blip2: identity), each
    extracted in this process with its throughput measured from the start of computing."""
    import dataclasses
    import gc
    import warnings

    import torch

    from ptg.pipeline.encoders import EncoderSpec, build_encoder
    from ptg.pipeline.priors.extract import extract_priors
    from ptg.pipeline.datasets.samples import build_samples

    torch.set_num_threads(args.threads)
    manifest = build_samples(work / "samples", task="denoise", sigma=25.0, seed=0, max_side=512, use_opencv=True)
    specs = {"clip": (EncoderSpec("clip", arch="ViT-B-32", random_init=True), "flips"),
             "sd": (big_encoder_spec("sd", work / "configs", args.sd_size), "identity"),
             "blip2": (big_encoder_spec("blip2", work / "configs", args.blip2_size), "identity")}
    wanted = {"clip"} | {a.split("-")[1] for a in args.arms if a.count("-") and a != "cached-lazy" and a not in REFINE_ARMS}
    rows = []
    for name, (spec, views) in specs.items():
        if name not in wanted or (work / f"{name}.zarr").exists():
            continue
        t = time.perf_counter()
        enc = build_encoder(dataclasses.replace(spec, device=args.device))
        build_s = time.perf_counter() - t
        params = sum(p.numel() for p in enc.module.parameters())
        start: list[float] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = extract_priors(manifest, enc, out=work / f"{name}.zarr", views=views, split="train", batch_size=args.batch,
                               loader_workers=0, on_plan=lambda plan: start.append(time.perf_counter()))
        sec = time.perf_counter() - start[0]
        n_views = len(s.views)
        rows.append({"encoder": name, "params_m": params / 1e6, "build_s": build_s, "input": enc.preprocess.size,
                     "dim": s.dim, "views": n_views, "images": s.computed, "img_s": s.computed / sec,
                     "fwd_s": s.computed * n_views / sec, "row_bytes": n_views * s.dim * 2, "store_bytes": s.store_bytes})
        print(f"extract {name}: {params / 1e6:.0f}M params, {s.computed} images x {n_views} views in {sec:.1f} s "
              f"({s.computed / sec:.2f} img/s), dim {s.dim}", flush=True)
        del enc
        gc.collect()
    return manifest, work / "clip.zarr", rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--width", type=int, default=16, help="UNet F width")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--online-steps", type=int, default=3, help="timed steps of the online SD / BLIP-2 arms")
    ap.add_argument("--sd-size", type=int, default=128, help="SD input side (512 released; latent = side / 8)")
    ap.add_argument("--blip2-size", type=int, default=224, help="BLIP-2 ViT input side (224 released)")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma list of arms to run")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="run every arm this many times (interleaved); report the median")
    ap.add_argument("--work", type=Path, default=None, help="folder for the samples, configs and stores (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="append a markdown section to this file")
    ap.add_argument("--refine-f", default="restormer-paper,spandrel-restormer",
                    help="frozen Fs of the refine arms, comma list: registered names, or spandrel-restormer")
    ap.add_argument("--refine-side", type=int, default=256, help="longest side of the refine arms' photos")
    ap.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    ap.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.arm:  # subprocess
        print(json.dumps((_refine_worker if args.arm in REFINE_ARMS else _worker)(args.arm, args)))
        return
    args.refine_fs = [f for f in args.refine_f.split(",") if f]

    args.arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown or "floor" not in args.arms:
        ap.error(f"--arms: unknown {unknown} or no floor; choose from {', '.join(ARMS)}")
    work = (args.work or Path(tempfile.mkdtemp(prefix="bench_train_"))).resolve()
    os.environ["PTG_CACHE"] = str(work / "cache")  # the cached-lazy arm's row cache stays in the work folder
    manifest, store, extraction = _prepare(work, args)
    common = ["--device", args.device, "--threads", str(args.threads), "--crop", str(args.crop), "--batch",
              str(args.batch), "--width", str(args.width), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--online-steps", str(args.online_steps), "--sd-size", str(args.sd_size), "--blip2-size", str(args.blip2_size),
              "--work", str(work)]
    data = {"": ["--manifest", str(manifest), "--store", str(store)]}
    refine_prep: list[dict] = []
    if any(a in REFINE_ARMS for a in args.arms):  # F's outputs for the cached arms, extracted once, outside the timing
        import torch

        torch.set_num_threads(args.threads)
        r_manifest, r_store, refine_prep = _refine_prepare(work, args)
        data["refine"] = ["--manifest", str(r_manifest), "--store", str(r_store)]
    jobs = [(a, f) for a in args.arms for f in (args.refine_fs if a in REFINE_ARMS else [""])]
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        for arm, f in jobs:
            key = f"{arm} ({f})" if f else arm
            extra = [*data["refine"], "--refine-f", f] if f else data[""]
            out = subprocess.run([sys.executable, __file__, "--arm", arm, *common, *extra], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"arm {key} failed:\n{out.stderr[-3000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            runs.setdefault(key, []).append(res)
            print(f"{key:36s} {res['median_s'] * 1000:9.1f} ms/step  peak {res['peak_mib']:8.0f} MiB", flush=True)
    # Median over the interleaved repeats of each arm's median step (robust to a busy neighbour).
    results = {arm: {k: statistics.median(r[k] for r in rs) if k != "fm_loaded" else rs[0][k] for k in rs[0] if k != "arm"}
               for arm, rs in runs.items()}
    floor = results["floor"]
    lines = [
        f"## {datetime.date.today()} — {args.device}, {platform.processor() or platform.machine()} ({os.cpu_count()} cores, "
        f"busy: shared with other jobs), {args.threads} thread(s), batch {args.batch}, crop {args.crop}, UNet width "
        f"{args.width} + PTG-RM (prior dim of the arm)",
        "",
        f"`{' '.join(['.venv/bin/python', 'benchmarks/bench_train.py'] + sys.argv[1:])}`",
        "",
        "| arm | prior dim | median step (ms) | range over repeats (ms) | of which batch loading (ms) | prior lookup per step (ms) | vs floor | peak RSS (MiB) | vs floor | foundation-model packages loaded |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for arm in runs:
        r = results[arm]
        ms = [x["median_s"] * 1000 for x in runs[arm]]
        lines.append(f"| {arm} | {r['dim']:.0f} | {r['median_s'] * 1000:.1f} | {min(ms):.0f}–{max(ms):.0f} | {r['data_s'] * 1000:.1f} | "
                     f"{r['lookup_s'] * 1000:.3f} | {r['median_s'] / floor['median_s']:.3f}× | "
                     f"{r['peak_mib']:.0f} | {r['peak_mib'] / floor['peak_mib']:.2f}× | {', '.join(r['fm_loaded']) or 'none'} |")
    for f in args.refine_fs if "refine-live" in args.arms and "refine-cached" in args.arms else []:
        live, cached = results[f"refine-live ({f})"], results[f"refine-cached ({f})"]
        prep = next(p["seconds"] for p in refine_prep if p["f"] == f)
        lines += ["", f"Refine arms, `ptg train --mode refine` on a frozen `{f}` ({live['f_params_m']:.1f}M parameters), "
                  f"photos of side {args.refine_side}: `--f-outputs` (F never built) instead of F live: step "
                  f"{cached['median_s'] * 1000:.1f} vs {live['median_s'] * 1000:.1f} ms "
                  f"({cached['median_s'] / live['median_s']:.3f}×), peak memory {cached['peak_mib']:.0f} vs "
                  f"{live['peak_mib']:.0f} MiB ({cached['peak_mib'] / live['peak_mib']:.2f}×); `ptg extract-outputs` "
                  f"of the training photos took {prep:.1f} s once."]
    if extraction:
        lines += ["", f"Extraction of the arms' stores over the {extraction[0]['images']} training samples (`extract_priors`, "
                  f"batch {args.batch}, decode thread, timed from the start of computing; images/GiB = 2^30 / "
                  "(views x dim x 2 bytes), the float16 row size; the measured store bytes add shard padding and metadata):", "",
                  "| encoder (random init) | params | input | views | prior dim | img/s | forwards/s | images per GiB (rows) | store bytes |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {e['encoder']} | {e['params_m']:.0f}M | {e['input']} | {e['views']} | {e['dim']} | {e['img_s']:.2f} | "
                  f"{e['fwd_s']:.2f} | {2**30 / e['row_bytes']:,.0f} | {e['store_bytes'] / 2**10:,.0f} KiB |" for e in extraction]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        existed = args.out.exists() and args.out.stat().st_size > 0
        with open(args.out, "a") as fh:
            fh.write(("\n" if existed else "") + text)


if __name__ == "__main__":
    main()
