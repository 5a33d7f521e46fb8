"""Reproduction study: do priors from real pre-trained models improve restoration here?

Runs every task × F × arm × seed of issue 7 with `ptg`'s own commands and writes
`benchmarks/results/reproduction.json`; `--report` turns that file into `docs/RESULTS.md`.

    python benchmarks/reproduce.py --config cpu --jobs 2          # this 2-core CPU
    python benchmarks/reproduce.py --config gpu --jobs 8          # one GPU, runs side by side
    python benchmarks/reproduce.py --report                        # tables from the JSON

Resumable: a run whose `final.json` exists is read, not re-run; an interrupted run resumes from its
last checkpoint; data and priors stores are reused (the store computes only missing rows).

Arms (same F, steps, data order and seed within a row of the table):
  F              F alone (mode baseline)
  R:imagenet     F + PTG-RM, EfficientNet-Lite0 priors (real ImageNet weights)
  R:restoration  F + PTG-RM, FFDNet deep-feature priors (real weights; the paper's "-r")
  R:*-shuffled   the same with each image given another image's prior (fixed derangement)
  R:zero         F + PTG-RM with all-zero priors
  LargeR         F + "Large R" (4x width, no SVE/CSA, no priors): more parameters, no prior
and, for denoising, `refine` mode on the pre-trained FFDNet (F frozen, only R trained).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "reproduction.json"
SPLIT_FILE = REPO / "benchmarks" / "study_split.json"

TASKS = {  # name -> ptg data samples arguments
    "denoise25": {"task": "denoise", "sigma": 25.0},
    "denoise50": {"task": "denoise", "sigma": 50.0},
    "lowlight": {"task": "lowlight", "sigma": 25.0},
}
PRIORS = ("imagenet", "restoration")


@dataclass(frozen=True)
class Budget:
    """One hardware configuration of the study; every arm of a task shares it."""

    max_side: int  # sample photos downscaled to this longer side
    views: str  # views cached per image (per-view priors follow the augmentation)
    steps: int  # optimiser steps per run
    crop: int  # training crop side
    batch: int  # batch size
    lr: float  # Adam learning rate (cosine to 1e-7 over the run)
    width_mult: int  # multiplies the widths of both F networks
    device: str  # torch device of training
    threads: int  # torch threads per run
    loader_workers: int = 0  # DataLoader processes per run (PNG decoding off the training loop)
    cache_images: bool = False  # keep decoded images in RAM (the GPU runs are bound by PNG decoding otherwise)


BUDGETS = {
    # 2-core CPU: 150 runs of 200 steps, two at a time, one thread each (about 75 min in all).
    "cpu": Budget(max_side=256, views="flips", steps=200, crop=48, batch=8, lr=1e-3, width_mult=1, device="cpu", threads=1),
    # One GPU: the same data and stores (so they can be carried over), 2x wider F, larger crops and
    # batches, ~7x the steps; several runs share the card.
    "gpu": Budget(max_side=256, views="flips", steps=2000, crop=128, batch=16, lr=5e-4, width_mult=2, device="cuda",
                  threads=1, loader_workers=1, cache_images=True),
}
# The two target networks F, small enough for the CPU budget (widths scaled by Budget.width_mult).
F_NETS = {"unet": {"width": 12, "depth": 3}, "nafnet": {"width": 8, "enc_blocks": [1, 1, 1], "dec_blocks": [1, 1, 1]}}
# "Large R" at width 8 (latent 32 channels, no priors): 1.01M parameters, matched to R with the
# 1280-d imagenet prior (1.06M) and above R with the 192-d restoration prior (0.51M).
LARGE_R = {"width": 8}


@dataclass(frozen=True)
class Arm:
    name: str
    mode: str  # baseline | joint | refine
    prior: str | None  # store used (None: no store)
    control: str = "real"  # real | shuffle | zero
    refiner: str = "ptgrm"
    refiner_args: tuple[tuple[str, object], ...] = ()  # R config overrides


ARMS = (
    Arm("F", "baseline", None),
    Arm("R:imagenet", "joint", "imagenet"),
    Arm("R:imagenet-shuffled", "joint", "imagenet", "shuffle"),
    Arm("R:restoration", "joint", "restoration"),
    Arm("R:restoration-shuffled", "joint", "restoration", "shuffle"),
    Arm("R:zero", "joint", "imagenet", "zero"),
    Arm("LargeR", "joint", "imagenet", refiner="ptgrm-large", refiner_args=tuple(LARGE_R.items())),
)
REFINE_ARMS = (
    Arm("R:imagenet", "refine", "imagenet"),
    Arm("R:restoration", "refine", "restoration"),
    Arm("R:restoration-shuffled", "refine", "restoration", "shuffle"),
    Arm("R:zero", "refine", "restoration", "zero"),
)


# Follow-ups when real priors do not beat the controls (issue 7), all with the UNet F and 3 seeds;
# every other setting as in the main study. Run in this order; each is saved as soon as it ends.
_CORE = ("R:restoration", "R:restoration-shuffled", "R:zero")
# Controls with the imagenet store's own dimension for refine on FFDNet (the main refine arms'
# controls use the 192-d restoration store, so R there has fewer parameters than R:imagenet).
REFINE_IMAGENET_ARMS = (
    Arm("R:imagenet-shuffled", "refine", "imagenet", "shuffle"),
    Arm("R:zero-imagenet", "refine", "imagenet", "zero"),
)
INVESTIGATIONS = {
    "refine-imagenet-controls": {"task": "denoise50", "f": "ffdnet", "steps_mult": 1, "sets": (),
                                 "arms": tuple(a.name for a in REFINE_IMAGENET_ARMS),
                                 "why": "is R:imagenet's gain on the frozen FFDNet at sigma 50 the prior's, or T's parameters'?"},
    "blind": {"task": "blind", "steps_mult": 1, "sets": (), "arms": ("F", *_CORE),
              "why": "one model for sigma 25 and 50 (blind denoising): the prior can carry the noise level"},
    "prior-lr10": {"task": "denoise25", "steps_mult": 1, "sets": ("priors.lr_mult=10",), "arms": _CORE,
                   "why": "10x learning rate on R's prior mappings T"},
    "longer": {"task": "denoise25", "steps_mult": 3, "sets": (), "arms": ("F", *_CORE),
               "why": "3x the steps: are the networks too undertrained to use a prior?"},
}


def blind_manifest(work: Path) -> Path:
    """denoise25 and denoise50 in one manifest (ids prefixed), for the blind-denoising follow-up."""
    from ptg.pipeline.manifest import load_manifest, write_manifest

    out = work / "data" / "blind" / "manifest.jsonl"
    rows = []
    for task in ("denoise25", "denoise50"):
        for smp in load_manifest(work / "data" / task / "manifest.jsonl").samples:
            rows.append({"id": f"{task}/{smp.id}", "input": smp.input, "target": smp.target, "split": smp.split, **smp.extra})
    return write_manifest(out, rows)


def ptg(*args: str, threads: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ptg.cli.app", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`ptg {' '.join(args)}` failed:\n{proc.stderr[-3000:]}")


def _store_complete(store: Path, manifest: Path) -> bool:
    from ptg.pipeline.manifest import load_manifest
    from ptg.pipeline.store import open_priors, sample_keys

    if not store.exists():
        return False
    keys = sample_keys(load_manifest(manifest).samples)
    return not open_priors(store).missing(keys)


def prepare(work: Path, budget: Budget, tasks: list[str]) -> dict[str, Path]:
    """Data and both priors stores of every task; returns task -> manifest."""
    manifests = {}
    expected = json.loads(SPLIT_FILE.read_text())
    for task in tasks:
        data = work / "data" / task
        manifest = data / "manifest.jsonl"
        if not manifest.is_file():
            t = TASKS[task]
            ptg("data", "samples", "--out", str(data), "--task", t["task"], "--sigma", str(t["sigma"]),
                "--max-side", str(budget.max_side), "--seed", "0", threads=2)
        rows = [json.loads(line) for line in manifest.read_text().splitlines()]
        got = {r["id"]: r["split"] for r in rows}
        if got != expected:
            raise SystemExit(f"the sample photos differ from {SPLIT_FILE.name} (is the Debian package opencv-doc "
                             f"installed?): missing {sorted(set(expected) - set(got))}, extra {sorted(set(got) - set(expected))}")
        for prior in PRIORS:
            if _store_complete(work / "priors" / f"{task}-{prior}", manifest):
                continue  # also lets a machine without the encoders' weights reuse carried stores
            ptg("extract-priors", "--model", prior, "--manifest", str(manifest), "--views", budget.views,
                "--out", str(work / "priors" / f"{task}-{prior}"), threads=2)
        manifests[task] = manifest
    return manifests


def run_one(work: Path, budget: Budget, task: str, manifest: Path, f: str, arm: Arm, seed: int,
            variant: str = "", sets: tuple[str, ...] = ()) -> dict:
    from ptg.ptgrm.train.checkpoint import load_for_inference

    name = f"{task}/{f}/{arm.name.replace(':', '-')}/s{seed}"
    if variant:
        name = f"investigate/{variant}/{name}"
    out = work / "runs" / name
    final = out / "final.json"
    if not final.is_file():
        t0 = time.time()
        args = ["train", "--manifest", str(manifest), "--mode", arm.mode, "--steps", str(budget.steps),
                "--seed", str(seed), "--out", str(out), "--baseline", f, "--crop", str(budget.crop),
                "--batch-size", str(budget.batch), "--quiet",
                "--set", f"optim.lr={budget.lr}", "--set", f"run.device={budget.device}",
                "--set", f"run.threads={budget.threads}", "--set", f"priors.control={arm.control}",
                "--set", "run.checkpoint_every=100", "--set", "run.deterministic=false",
                "--set", f"data.num_workers={budget.loader_workers}",
                "--set", f"data.cache_images={str(budget.cache_images).lower()}"]
        if f == "ffdnet":
            sigma = TASKS[task]["sigma"]
            args += ["--set", "model.baseline_args.pretrained=true", "--set", f"model.baseline_args.sigma={sigma}"]
        else:
            net = {**F_NETS[f], "width": F_NETS[f]["width"] * budget.width_mult}
            args += [a for k, v in net.items() for a in ("--set", f"model.baseline_args.{k}={json.dumps(v)}")]
        args += [a for k, v in arm.refiner_args for a in ("--set", f"model.refiner_args.{k}={json.dumps(v)}")]
        if arm.prior:
            args += ["--priors", str(work / "priors" / f"{task}-{arm.prior}"), "--refiner", arm.refiner]
        if budget.device == "cuda":
            args += ["--set", "run.amp=bf16"]
        args += [a for kv in sets for a in ("--set", kv)]
        if (out / "checkpoints" / "last.pt").is_file():
            args.append("--resume")
        ptg(*args, threads=budget.threads)
        print(f"done {name} in {time.time() - t0:.0f}s", flush=True)
    res = json.loads(final.read_text())
    bundle = load_for_inference(out)
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else None  # noqa: E731
    return {"task": task, "f": f, "arm": arm.name, "seed": seed, "variant": variant, "mode": arm.mode, "prior": arm.prior,
            "control": arm.control, "refiner": arm.refiner if arm.mode != "baseline" else None,
            "psnr": res["val"]["psnr"], "ssim": res["val"]["ssim"],
            "psnr_own_f": res["val"].get("psnr_f"), "ssim_own_f": res["val"].get("ssim_f"),
            "params": {"f": count(bundle.baseline), "refiner": count(bundle.refiner)},
            "seconds": res.get("seconds"), "steps": res["step"], "digest": res.get("digest")}


def ffdnet_alone(manifest: Path, sigma: float) -> dict:
    """The pre-trained FFDNet's own scores on the test split (the refine rows' 'F')."""
    import torch

    from ptg.pipeline.imageio import read_image
    from ptg.pipeline.manifest import load_manifest
    from ptg.pipeline.metrics import psnr, ssim
    from ptg.ptgrm.models import create_model

    net = create_model("ffdnet", pretrained=True, sigma=sigma).eval()
    ps, ss = [], []
    for s in load_manifest(manifest).split("test"):
        x = torch.from_numpy(read_image(s.input)).permute(2, 0, 1)[None]
        with torch.inference_mode():
            y = net(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        t = read_image(s.target)
        ps.append(psnr(y, t))
        ss.append(ssim(y, t))
    return {"psnr": statistics.fmean(ps), "ssim": statistics.fmean(ss)}


def environment(budget_name: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "cpus": os.cpu_count(), "budget": budget_name}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def study(args: argparse.Namespace) -> None:
    budget = BUDGETS[args.config]
    if args.steps:  # smoke runs of the script itself
        budget = Budget(**{**asdict(budget), "steps": args.steps})
    work = Path(args.work).resolve()
    tasks = args.tasks.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.time()
    manifests = prepare(work, budget, tasks)
    jobs = []
    for task in tasks:
        for f in F_NETS:
            jobs += [(task, f, arm, seed) for arm in ARMS for seed in seeds]
        if TASKS[task]["task"] == "denoise":
            jobs += [(task, "ffdnet", arm, seed) for arm in REFINE_ARMS for seed in seeds]
    print(f"{len(jobs)} runs, {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:  # each run is its own `ptg train` process
        runs = list(pool.map(lambda j: run_one(work, budget, j[0], manifests[j[0]], *j[1:]), jobs))
    refs = {t: ffdnet_alone(manifests[t], TASKS[t]["sigma"]) for t in tasks if TASKS[t]["task"] == "denoise"}
    out = {"budget": asdict(budget), "config": args.config, "tasks": {t: TASKS[t] for t in tasks}, "seeds": seeds,
           "environment": environment(args.config), "wall_seconds": round(time.time() - t0, 1),
           "ffdnet_pretrained": refs, "runs": runs,
           "command": f"python benchmarks/reproduce.py --config {args.config} --jobs {args.jobs}"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out} ({len(runs)} runs, {out['wall_seconds']:.0f}s)")


def investigate(args: argparse.Namespace) -> None:
    """Run the follow-ups and add each to the results file as soon as it ends."""
    budget = BUDGETS[args.config]
    work = Path(args.work).resolve()
    seeds = [int(x) for x in args.seeds.split(",")]
    manifests = prepare(work, budget, ["denoise25", "denoise50"])
    manifests["blind"] = blind_manifest(work)
    for prior in PRIORS:
        if not _store_complete(work / "priors" / f"blind-{prior}", manifests["blind"]):
            ptg("extract-priors", "--model", prior, "--manifest", str(manifests["blind"]), "--views", budget.views,
                "--out", str(work / "priors" / f"blind-{prior}"), threads=2)
    for variant, spec in INVESTIGATIONS.items():
        b = Budget(**{**asdict(budget), "steps": budget.steps * spec["steps_mult"]})
        f = spec.get("f", "unet")
        arms = REFINE_IMAGENET_ARMS if f == "ffdnet" else ARMS
        jobs = [(arm, seed) for arm in arms if arm.name in spec["arms"] for seed in seeds]
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(lambda j: run_one(work, b, spec["task"], manifests[spec["task"]], f, j[0], j[1],
                                                   variant, spec["sets"]), jobs))
        data = json.loads(Path(args.out).read_text())
        inv = data.setdefault("investigations", {"variants": {}, "runs": []})
        inv["variants"][variant] = spec
        inv["runs"] = [r for r in inv["runs"] if r["variant"] != variant] + runs
        Path(args.out).write_text(json.dumps(data, indent=1))
        print(f"{variant}: added {len(runs)} runs to {args.out}", flush=True)


def _ms(values: list[float], digits: int) -> str:
    m = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def report(path: Path) -> str:
    """Markdown tables: per task and F, every arm's mean ± std over seeds and its delta vs F."""
    data = json.loads(path.read_text())
    lines = []
    for task in data["tasks"]:
        lines.append(f"\n### {task}\n")
        lines.append("| F | arm | PSNR (dB) | ΔPSNR vs F | SSIM | ΔSSIM×100 | params of R | seeds |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for f in [*F_NETS, "ffdnet"]:
            rows = [r for r in data["runs"] if r["task"] == task and r["f"] == f]
            if not rows:
                continue
            if f == "ffdnet":
                ref = data["ffdnet_pretrained"][task]
                base_p, base_s = {0: ref["psnr"]}, {0: ref["ssim"]}
                lines.append(f"| ffdnet (pre-trained, frozen) | F | {ref['psnr']:.2f} | — | {ref['ssim']:.4f} | — | — | — |")
            else:
                base = [r for r in rows if r["arm"] == "F"]
                base_p, base_s = {r["seed"]: r["psnr"] for r in base}, {r["seed"]: r["ssim"] for r in base}
            for arm in dict.fromkeys(r["arm"] for r in rows):
                rs = [r for r in rows if r["arm"] == arm]
                p, s = [r["psnr"] for r in rs], [r["ssim"] for r in rs]
                # deltas are paired by seed: the same data order and initial F
                dp = [r["psnr"] - base_p.get(r["seed"], base_p.get(0)) for r in rs]
                ds = [100 * (r["ssim"] - base_s.get(r["seed"], base_s.get(0))) for r in rs]
                r_params = rs[0]["params"]["refiner"]
                delta = "—" if arm == "F" else _ms(dp, 2)
                dss = "—" if arm == "F" else _ms(ds, 2)
                lines.append(f"| {f} | {arm} | {_ms(p, 2)} | {delta} | {_ms(s, 4)} | {dss} | "
                             f"{r_params if r_params is not None else '—'} | {len(rs)} |")
    inv = data.get("investigations")
    if inv:
        lines.append("\n### Follow-ups\n")
        lines.append("| variant | task | F | arm | PSNR (dB) | ΔPSNR vs F | SSIM | seeds |")
        lines.append("|---|---|---|---|---:|---:|---:|---:|")
        for variant, spec in inv["variants"].items():
            f = spec.get("f", "unet")
            rows = [r for r in inv["runs"] if r["variant"] == variant]
            own_f = {r["seed"]: r["psnr"] for r in rows if r["arm"] == "F"}
            main_f = {r["seed"]: r["psnr"] for r in data["runs"]
                      if r["task"] == spec["task"] and r["f"] == f and r["arm"] == "F"}
            if f == "ffdnet":  # the frozen pre-trained F: the same for every seed
                main_f = {r["seed"]: data["ffdnet_pretrained"][spec["task"]]["psnr"] for r in rows}
            base = own_f or main_f  # a variant that does not retrain F compares with the study's F
            for arm in dict.fromkeys(r["arm"] for r in rows):
                rs = [r for r in rows if r["arm"] == arm]
                dp = "—" if arm == "F" else _ms([r["psnr"] - base[r["seed"]] for r in rs], 2)
                lines.append(f"| {variant} | {spec['task']} | {f} | {arm} | {_ms([r['psnr'] for r in rs], 2)} | {dp} | "
                             f"{_ms([r['ssim'] for r in rs], 4)} | {len(rs)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(BUDGETS), default="cpu")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side")
    ap.add_argument("--work", default=str(REPO / ".study"), help="data, stores and run folders")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--steps", type=int, default=0, help="override the budget's steps (smoke tests of this script)")
    ap.add_argument("--report", action="store_true", help="print the Markdown tables of --out and exit")
    ap.add_argument("--investigate", action="store_true", help="run the follow-up variants (after the study)")
    args = ap.parse_args()
    if args.report:
        print(report(Path(args.out)))
    elif args.investigate:
        investigate(args)
    else:
        study(args)


if __name__ == "__main__":
    main()
