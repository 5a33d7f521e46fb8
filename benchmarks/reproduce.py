"""Reproduction study v2 (issue 10): fair controls, an oracle prior, and tasks where a prior should matter.

    python benchmarks/reproduce.py --config cpu --dry-run        # list every run and its cost estimate
    python benchmarks/reproduce.py --config cpu --jobs 2         # the study (resumable)
    python benchmarks/reproduce.py --config gpu --jobs 8         # one GPU, same data and stores
    python benchmarks/reproduce.py --report                       # Markdown tables and curves from the results file

Tasks (28 real photos of `benchmarks/study_split.json`, 22 train / 6 test, split by photo; every
degradation is applied to every photo, so levels are balanced and paired):
  allinone      one model for 7 degradations: Gaussian noise sigma 15/25/50, low light, motion blur,
                defocus blur, JPEG (quality 10-40)
  blind         blind Gaussian denoising, sigma 10/30/50 (one model, sigma not given)
  lowlight      low light (exposure, gamma, Poisson-Gaussian noise drawn per image)
  blind-ffdnet  refine mode on the frozen pre-trained FFDNet over blind sigma: F is given a fixed
                sigma (FFDNET_SIGMA) whatever the image's; only R trains (at the budget's refine_lr)

Arms (same F, steps, data order, seed and `data.augment` in every arm; deltas paired by seed):
  F              F alone
  R:imagenet     F + R, EfficientNet-Lite0 ImageNet priors (real weights)
  R:restoration  F + R, FFDNet deep-feature priors (real weights; the paper's "-r")
  R:both         F + R with both priors (two T mappings)
  R:constant     R:restoration with every image given one training image's prior, drawn with the seed
                 (`priors.control=constant`): same R and constants, no per-image information; THE
                 control of the deltas
  R:shuffled     R:restoration with each image given another image's prior (fixed derangement)
  R:zero         R:restoration with all-zero priors (removes T's constants too: not a fair control)
  R:degradation  F + R with the manifest's recorded degradation (an oracle; the positive control)
  LargeR         F + "Large R" (4x width, no SVE/CSA, no prior), parameters matched to R:imagenet
  with --normalize-arms also R:imagenet/restoration/degradation and the shuffled and constant controls
  under each other priors.normalize (R:restoration+l2, R:shuffled+l2, ...)
  (every other R arm uses the budget's priors.normalize: standardize, the product's default)

Each run records its config, validation curve (on 64-px centre crops every `val_every` steps),
final test metrics per degradation level (`ptg eval` on whole images, from the last checkpoint, so
no test-set checkpoint selection) and digest in `benchmarks/results/reproduction.json`. Real-prior
arms are also evaluated with *wrong* priors: each test image given the prior of the same photo at
another level (other-level) or of another photo at the same level (other-image); the PSNR drop
says how much R relies on g. Probes (`ptg priors probe`) of every store are recorded too.

Resumable: a run's training is skipped when its final.json exists and resumes from last.pt when
interrupted; evaluations are skipped when their metrics.json exists; stores compute only missing
rows; the results file is rewritten (atomically) after every run.

Cost (`--dry-run` prints it): measured on 2026-11-27 on this 2-core machine with nothing else
running, two runs side by side, one thread each, images cached (median of a run's log): 0.02 s per
step for F alone (UNet width 12, 32-px crops, batch 8), 0.06 s for F + R, 0.10 s for Large R and
R:both, plus ~10 s of start-up per process and 5-15 s per `ptg eval` of the whole test images. The
cpu budget (1200 steps, lr 2e-3) is the longest that fits all four tasks (102 runs) in about 2
hours with --jobs 2 (1 h 49 min on 2026-11-27). F is not converged there (allinone, F alone,
seed 0, test PSNR: lr 1e-3 19.80 dB at 400 steps, 20.41 at 1200, 21.24 at 2400; at 1200 steps
lr 2e-3 gives 21.02 and 3e-3 21.16); `--steps` runs longer.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "reproduction.json"
SPLIT_FILE = REPO / "benchmarks" / "study_split.json"
FFDNET_SIGMA = 30.0  # the frozen FFDNet's noise-map sigma in blind-ffdnet (the middle level)
PRIORS = ("imagenet", "restoration", "degradation")


@dataclass(frozen=True)
class Budget:
    """One hardware configuration of the study; every arm of a task shares it."""

    max_side: int  # sample photos downscaled to this longer side
    steps: int  # optimiser steps per run
    crop: int  # training crop side
    batch: int  # batch size
    lr: float  # Adam learning rate (cosine to 1e-7 over the run)
    refine_lr: float  # the same for refine tasks, where only R trains on a frozen pre-trained F
    width_mult: int  # multiplies F's width
    device: str  # torch device of training and evaluation
    threads: int  # torch threads per run
    val_every: int  # validation curve every N steps (64-px centre crops of the test rows)
    normalize: str = "standardize"  # priors.normalize of every R arm (the product's default; l2 is the paper's)
    sec_per_step: float = 0.25  # cost estimate of one step (one run, its share of the machine)
    loader_workers: int = 0  # DataLoader processes per run
    cache_images: bool = False  # keep decoded images in RAM


BUDGETS = {
    "cpu": Budget(max_side=256, steps=1200, crop=32, batch=8, lr=2e-3, refine_lr=1e-4, width_mult=1, device="cpu", threads=1,
                  val_every=100, sec_per_step=0.075, cache_images=True),
    "gpu": Budget(max_side=256, steps=3000, crop=96, batch=16, lr=5e-4, refine_lr=5e-5, width_mult=2, device="cuda", threads=1,
                  val_every=250, sec_per_step=0.05, loader_workers=1, cache_images=True),
}
F_NET = {"width": 12, "depth": 3}  # UNet F (width scaled by Budget.width_mult)
LARGE_R = {"width": 8}  # "Large R": 1.01M parameters, matched to R with the 1280-d imagenet prior (1.06M)


@dataclass(frozen=True)
class Arm:
    name: str
    mode: str  # baseline | joint | refine
    priors: tuple[str, ...] = ()  # stores used, in order
    control: str = "real"  # priors.control: real | shuffle | constant | zero
    refiner: str = "ptgrm"
    refiner_args: tuple[tuple[str, object], ...] = ()  # R config overrides
    normalize: str | None = None  # priors.normalize of this arm; None: the budget's


def _arms(mode: str) -> tuple[Arm, ...]:
    r = (Arm("R:imagenet", mode, ("imagenet",)), Arm("R:restoration", mode, ("restoration",)),
         Arm("R:both", mode, ("imagenet", "restoration")), Arm("R:constant", mode, ("restoration",), "constant"),
         Arm("R:shuffled", mode, ("restoration",), "shuffle"), Arm("R:zero", mode, ("restoration",), "zero"),
         Arm("R:degradation", mode, ("degradation",)))
    if mode == "refine":
        return r  # F is frozen: the "F" row is the frozen FFDNet's own score in every refine run
    return (Arm("F", "baseline"), *r,
            Arm("LargeR", mode, ("imagenet",), refiner="ptgrm-large", refiner_args=tuple(LARGE_R.items())))


# task -> (manifest task, F, arms, components: (prefix, synth task, params factory))
def _components():
    from ptg.pipeline.datasets.synth import BlurParams, JpegParams, LowLightParams, NoiseParams

    noise = lambda s: (f"s{s:g}", "denoise", NoiseParams(float(s)))  # noqa: E731
    return {
        "allinone": [noise(15), noise(25), noise(50), ("lowlight", "lowlight", LowLightParams()),
                     ("motion", "blur", BlurParams("motion")), ("defocus", "blur", BlurParams("defocus")),
                     ("jpeg", "jpeg", JpegParams((10, 40)))],
        "blind": [noise(10), noise(30), noise(50)],
        "lowlight": [("lowlight", "lowlight", LowLightParams())],
    }


TASKS = {"allinone": ("allinone", "unet", _arms("joint")), "blind": ("blind", "unet", _arms("joint")),
         "lowlight": ("lowlight", "unet", _arms("joint")), "blind-ffdnet": ("blind", "ffdnet", _arms("refine"))}


def normalize_arms(mode: str, default: str) -> tuple[Arm, ...]:
    """`--normalize-arms`: the real priors and their controls under every other `priors.normalize`
    than the budget's (which default is best? issue 10, item 2)."""
    arms = []
    for n in ("l2", "standardize", "none"):
        if n != default:
            arms += [Arm(f"R:imagenet+{n}", mode, ("imagenet",), normalize=n),
                     Arm(f"R:restoration+{n}", mode, ("restoration",), normalize=n),
                     # each transform's own controls: another image's prior, one training image's prior
                     Arm(f"R:shuffled+{n}", mode, ("restoration",), "shuffle", normalize=n),
                     Arm(f"R:constant+{n}", mode, ("restoration",), "constant", normalize=n),
                     Arm(f"R:degradation+{n}", mode, ("degradation",), normalize=n)]
    return tuple(arms)



def level_of(extra: dict) -> str:
    """The degradation level a test row is reported under (`ptg.ptgrm.study.levels.level_of`)."""
    from ptg.ptgrm.study.levels import level_of as level

    return level(extra)


# ---------------------------------------------------------------------------------------------
# Data, stores, probes, wrong-prior stores


def ptg(*args: str, threads: int = 1) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "ptg.cli.app", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`ptg {' '.join(args)}` failed:\n{proc.stderr[-3000:]}")


def build_data(work: Path, budget: Budget, task: str) -> Path:
    """The task's manifest: every component degradation of every photo, ids ``<component>/<photo>``."""
    from ptg.pipeline.datasets.manifest import id_from_parts, load_manifest, write_manifest
    from ptg.pipeline.datasets.samples import collect_photos
    from ptg.pipeline.datasets.synth import synthesize

    manifest = work / "data" / task / "manifest.jsonl"
    if manifest.is_file():
        return manifest
    expected = json.loads(SPLIT_FILE.read_text())
    photos = work / "photos"
    if not (photos / "done").is_file():
        splits = collect_photos(photos, max_side=budget.max_side)
        if splits != expected:
            raise SystemExit(f"the sample photos differ from {SPLIT_FILE.name} (is the Debian package opencv-doc "
                             f"installed?): missing {sorted(set(expected) - set(splits))}, extra {sorted(set(splits) - set(expected))}")
        (photos / "done").write_text("ok\n")
    rows = []
    for i, (prefix, synth_task, params) in enumerate(_components()[task]):
        part = synthesize(photos, work / "data" / task / prefix, synth_task, params, seed=i + 1, split=lambda s: expected[s])
        for s in load_manifest(part).samples:
            deg = {"task": synth_task, **s.extra["degradation"]}
            if "kernel" in deg:
                deg["kernel"] = f"{prefix}/{deg['kernel']}"
            rows.append({"id": id_from_parts(prefix, s.id), "input": s.input, "target": s.target, "split": s.split, "task": task,
                         "photo": s.id, "degradation": deg})
    return write_manifest(manifest, rows)


def _store_complete(store: Path, manifest: Path) -> bool:
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.pipeline.storage.store import open_priors, sample_keys

    return store.exists() and not open_priors(store).missing(sample_keys(load_manifest(manifest).samples))


def build_stores(work: Path, data_task: str, manifest: Path) -> dict[str, Path]:
    stores = {}
    for prior in PRIORS:
        store = work / "priors" / f"{data_task}-{prior}"
        if not _store_complete(store, manifest):  # also lets a machine without the weights reuse carried stores
            ptg("extract-priors", "--model", prior, "--manifest", str(manifest), "--views", "flips", "--out", str(store), threads=2)
        stores[prior] = store
    return stores


def wrong_maps(manifest: Path) -> dict[str, dict[str, str]]:
    """Test-row key -> the key whose prior it gets: ``other-level`` (same photo, the next level in a
    fixed cycle) and ``other-image`` (the next photo, same level); deterministic."""
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.ptgrm.study.levels import wrong_maps as maps

    return maps(load_manifest(manifest).split("test"))


def build_wrong_store(src: Path, out: Path, mapping: dict[str, str]) -> Path:
    """A store holding, for each mapped key, the (all-view) vectors of the key it maps to, with the
    source store's metadata (same fingerprint, so `ptg eval --priors` accepts it)."""
    import numpy as np

    from ptg.pipeline.storage.store import allocate_shards, create_or_open_store, open_priors, read_commits, write_shard, writer_lock

    if out.exists() and read_commits(out):
        return out
    reader = open_priors(src)
    keys = sorted(mapping)
    values = reader.get_all_views([mapping[k] for k in keys])
    meta = {**reader.metadata, "wrong_prior_of": str(src)}
    with writer_lock(out):
        rows = int(create_or_open_store(out, meta)["rows_per_shard"])
        groups = [list(range(i, min(i + rows, len(keys)))) for i in range(0, len(keys), rows)]
        for sid, g in zip(allocate_shards(out, len(groups)), groups):
            write_shard(out, sid, [keys[i] for i in g], np.asarray(values[g]))
    return out


def cached_probe(work: Path, store: Path, manifest: Path) -> dict:
    """`probe_store` of a store, kept under work/probes: a resumed study does not probe again
    (the cache is keyed by the manifest's and the store's commit digests and the probe's row
    minimums, so new rows or another minimum re-probe)."""
    import hashlib

    from ptg.pipeline.core.fsio import atomic_write_json, file_sha256
    from ptg.pipeline.priors.probe import MIN_TEST_ROWS, MIN_TRAIN_ROWS, probe_store
    from ptg.pipeline.storage.store import read_commits

    settings = [MIN_TRAIN_ROWS, MIN_TEST_ROWS]  # a probe with other row minimums is another probe
    key = hashlib.sha256(json.dumps([file_sha256(manifest), read_commits(store), settings], sort_keys=True, default=str)
                         .encode()).hexdigest()
    path = work / "probes" / f"{store.name}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["report"]
    report = probe_store(store, manifest).to_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"key": key, "report": report})
    return report


def prepare(work: Path, budget: Budget, tasks: list[str]) -> dict:
    """Data, stores, probes and wrong-prior stores of every task."""
    prepared = {}
    for task in tasks:
        data_task = TASKS[task][0]
        if data_task in prepared:
            continue
        manifest = build_data(work, budget, data_task)
        stores = build_stores(work, data_task, manifest)
        probes = {p: cached_probe(work, s, manifest) for p, s in stores.items()}
        wrong = {}
        for kind, mapping in wrong_maps(manifest).items():
            wrong[kind] = {p: build_wrong_store(s, work / "priors" / "wrong" / f"{data_task}-{p}-{kind}", mapping)
                           for p, s in stores.items()}
        prepared[data_task] = {"manifest": manifest, "stores": stores, "probes": probes, "wrong": wrong}
    return prepared


# ---------------------------------------------------------------------------------------------
# Runs


def load_run_for_inference(run_dir: Path):
    """The one place this script loads a trained run: its last checkpoint (never one picked on test)."""
    from ptg.ptgrm.artifacts import load

    return load(run_dir / "checkpoints" / "last.pt")[0]


def train_args(work: Path, budget: Budget, task: str, arm: Arm, seed: int, out: Path, prep: dict) -> list[str]:
    _, f, _ = TASKS[task]
    lr = budget.refine_lr if arm.mode == "refine" else budget.lr
    args = ["train", "--manifest", str(prep["manifest"]), "--mode", arm.mode, "--steps", str(budget.steps),
            "--seed", str(seed), "--out", str(out), "--baseline", f, "--crop", str(budget.crop),
            "--batch-size", str(budget.batch), "--quiet",
            "--set", f"optim.lr={lr}", "--set", f"run.device={budget.device}",
            "--set", f"run.threads={budget.threads}", "--set", "run.checkpoint_every=100",
            "--set", "run.deterministic=false", "--set", f"run.val_every={budget.val_every}",
            "--set", "data.val_crop=64", "--set", "data.augment=flips",  # the same augmentation in every arm
            "--set", f"data.num_workers={budget.loader_workers}",
            "--set", f"data.cache_images={str(budget.cache_images).lower()}"]
    if f == "ffdnet":
        args += ["--set", "model.baseline_args.pretrained=true", "--set", f"model.baseline_args.sigma={FFDNET_SIGMA}"]
    else:
        args += [a for k, v in {**F_NET, "width": F_NET["width"] * budget.width_mult}.items()
                 for a in ("--set", f"model.baseline_args.{k}={json.dumps(v)}")]
    if arm.priors:
        args += ["--refiner", arm.refiner, "--set", f"priors.control={arm.control}",
                 "--set", f"priors.normalize={arm.normalize or budget.normalize}"]
        args += [a for p in arm.priors for a in ("--priors", str(prep["stores"][p]))]
        args += [a for k, v in arm.refiner_args for a in ("--set", f"model.refiner_args.{k}={json.dumps(v)}")]
    if budget.device == "cuda":
        args += ["--set", "run.amp=bf16"]
    return args


def _eval(run: Path, manifest: Path, out: Path, budget: Budget, priors: list[Path] | None = None) -> dict:
    if not (out / "metrics.json").is_file():
        args = ["eval", "--ckpt", str(run / "checkpoints" / "last.pt"), "--manifest", str(manifest), "--out", str(out),
                "--no-images", "--grids", "0", "--device", budget.device]
        args += [a for p in priors or [] for a in ("--priors", str(p))]
        ptg(*args, threads=budget.threads)
    return json.loads((out / "metrics.json").read_text())


def per_level(metrics: dict, levels: dict[str, str], which: str) -> dict:
    """Mean PSNR/SSIM of `which` (baseline | ptgrm) per level and over all test images."""
    groups: dict[str, list] = {"all": []}
    for r in metrics["images"]:
        if which in r:
            groups["all"].append(r[which])
            groups.setdefault(levels[r["id"]], []).append(r[which])
    return {lv: {"psnr": statistics.fmean(m["psnr"] for m in ms), "ssim": statistics.fmean(m["ssim"] for m in ms), "n": len(ms)}
            for lv, ms in groups.items() if ms}


def _curve(run: Path) -> list[dict]:
    """Validation PSNR/SSIM at every validation step, and F alone's PSNR where the log has it (refine)."""
    with open(run / "log.csv", newline="", encoding="utf-8") as f:
        return [{"step": int(r["step"]), "psnr": float(r["val_psnr"]), "ssim": float(r["val_ssim"]),
                 **({"psnr_f": float(r["val_psnr_f"])} if r.get("val_psnr_f") else {})}
                for r in csv.DictReader(f) if r.get("val_psnr")]


def run_one(work: Path, budget: Budget, task: str, arm: Arm, seed: int, prep: dict) -> dict:
    import yaml

    from ptg.pipeline.datasets.manifest import load_manifest

    name = f"{task}/{arm.name.replace(':', '-')}/s{seed}"
    out = work / "runs" / name
    t0 = time.time()
    if not (out / "final.json").is_file():
        args = train_args(work, budget, task, arm, seed, out, prep)
        if (out / "checkpoints" / "last.pt").is_file():
            args.append("--resume")
        ptg(*args, threads=budget.threads)
    final = json.loads((out / "final.json").read_text())
    if final["step"] != budget.steps:  # a run of another budget must not be reported as this one's
        raise SystemExit(f"{out} was trained for {final['step']} steps, this budget has {budget.steps}: "
                         f"use another --work for another budget")
    levels = {s.id: level_of(s.extra) for s in load_manifest(prep["manifest"]).split("test")}
    which = "baseline" if arm.mode == "baseline" else "ptgrm"
    metrics = _eval(out, prep["manifest"], out / "eval", budget)
    wrong = {}
    if arm.control == "real" and arm.priors and arm.refiner == "ptgrm":  # does R rely on g? give it the wrong one
        for kind, stores in prep["wrong"].items():
            m = _eval(out, prep["manifest"], out / f"eval-wrong-{kind}", budget, [stores[p] for p in arm.priors])
            wrong[kind] = per_level(m, levels, which)
    bundle = load_run_for_inference(out)
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else None  # noqa: E731
    print(f"done {name} in {time.time() - t0:.0f}s", flush=True)
    return {"name": name, "task": task, "f": TASKS[task][1], "arm": arm.name, "seed": seed, "mode": arm.mode,
            "priors": list(arm.priors), "control": arm.control, "normalize": (arm.normalize or budget.normalize) if arm.priors else None,
            "refiner": arm.refiner if arm.priors else None, "steps": final["step"], "seconds": final.get("seconds"),
            "digest": final.get("digest"), "params": {"f": count(bundle.f), "refiner": count(bundle.r)},
            "config": yaml.safe_load((out / "config.yaml").read_text()), "curve": _curve(out),
            "test": per_level(metrics, levels, which), "test_f": per_level(metrics, levels, "baseline"), "wrong": wrong}


def jobs_of(tasks: list[str], seeds: list[int], budget: Budget, with_normalize: bool = False,
            only: list[str] | None = None) -> list[tuple[str, Arm, int]]:
    """Every (task, arm, seed) run; `only`: just the arms of these names (the others stay as they are)."""
    def arms(t: str) -> tuple[Arm, ...]:
        mode = "refine" if TASKS[t][1] == "ffdnet" else "joint"
        every = TASKS[t][2] + (normalize_arms(mode, budget.normalize) if with_normalize else ())
        return tuple(a for a in every if only is None or a.name in only)

    # seed-major: a study stopped early still has every task and arm, with fewer seeds
    return [(t, arm, s) for s in seeds for t in tasks for arm in arms(t)]


def cost_estimate(budget: Budget, jobs: list, n_jobs: int) -> tuple[float, float]:
    """(seconds per run, wall seconds of the study): steps x sec_per_step + ~40 s of start-up and evaluation."""
    per_run = budget.steps * budget.sec_per_step + 40.0
    return per_run, per_run * len(jobs) / max(1, n_jobs)


def environment(config: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "cpus": os.cpu_count(), "config": config}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def study(args: argparse.Namespace) -> None:
    from ptg.pipeline.core.fsio import atomic_write_json

    budget = BUDGETS[args.config]
    if args.steps:  # smoke runs of the script itself
        budget = replace(budget, steps=args.steps, val_every=min(budget.val_every, args.steps))
    work, out = Path(args.work).resolve(), Path(args.out)
    tasks, seeds = args.tasks.split(","), [int(s) for s in args.seeds.split(",")]
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise SystemExit(f"unknown task(s) {bad}; choose from {', '.join(TASKS)}")
    only = args.arms.split(",") if args.arms else None
    known = {a.name for t in tasks for a in TASKS[t][2] + normalize_arms("joint", budget.normalize)}
    if only and set(only) - known:
        raise SystemExit(f"unknown arm(s) {sorted(set(only) - known)}; choose from {', '.join(sorted(known))}")
    jobs = jobs_of(tasks, seeds, budget, args.normalize_arms, only)
    per_run, wall = cost_estimate(budget, jobs, args.jobs)
    if args.dry_run:
        for task, arm, seed in jobs:
            print(f"{task}/{arm.name}/s{seed}: mode {arm.mode}, priors {','.join(arm.priors) or '-'}, control {arm.control}, "
                  f"normalize {(arm.normalize or budget.normalize) if arm.priors else '-'}, "
                  f"refiner {arm.refiner if arm.priors else '-'}")
        print(f"{len(jobs)} runs of {budget.steps} steps; estimate ~{per_run:.0f} s per run, ~{wall / 60:.0f} min with "
              f"--jobs {args.jobs} ({args.config}: {budget.sec_per_step} s/step)")
        return
    t0 = time.time()
    prep = prepare(work, budget, tasks)
    old = json.loads(out.read_text()) if out.is_file() else {}
    data = old if old.get("version") == 2 else {"version": 2, "v1": old or None}
    if data.get("budget") not in (None, asdict(budget)):  # another budget's runs are kept apart, not mixed in
        earlier = {k: data.pop(k) for k in list(data) if k not in ("version", "v1", "earlier")}
        data["earlier"] = [*data.get("earlier", []), earlier]
    command = "python benchmarks/reproduce.py " + " ".join(sys.argv[1:])  # every invocation is kept
    data.update({"budget": asdict(budget), "config": args.config, "seeds": seeds, "environment": environment(args.config),
                 "ffdnet_sigma": FFDNET_SIGMA, "command": command,
                 "commands": list(dict.fromkeys([*data.get("commands", [data["command"]] if "command" in data else []), command])),
                 "probes": {**data.get("probes", {}), **{t: p["probes"] for t, p in prep.items()}}})
    runs = {r["name"]: r for r in data.get("runs", [])}
    lock = threading.Lock()

    def one(job):
        task, arm, seed = job
        rec = run_one(work, budget, task, arm, seed, prep[TASKS[task][0]])
        with lock:  # the file always holds every finished run
            runs[rec["name"]] = rec
            data["runs"] = list(runs.values())
            data["wall_seconds"] = round(time.time() - t0, 1)
            atomic_write_json(out, data)

    print(f"{len(jobs)} runs, {args.jobs} at a time (estimate ~{wall / 60:.0f} min)", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:  # each run is its own `ptg train` process
        list(pool.map(one, jobs))
    print(f"wrote {out} ({len(runs)} runs, {time.time() - t0:.0f}s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(BUDGETS), default="cpu")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {', '.join(TASKS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side")
    ap.add_argument("--work", default=str(REPO / ".study"), help="data, stores and run folders")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--steps", type=int, default=0, help="override the budget's steps (smoke tests of this script)")
    ap.add_argument("--dry-run", action="store_true", help="list the runs and the cost estimate, run nothing")
    ap.add_argument("--normalize-arms", action="store_true",
                    help="also run the real priors and their controls under the other priors.normalize choices")
    ap.add_argument("--arms", default="", help="comma-separated arm names: run only these (e.g. R:restoration+l2)")
    ap.add_argument("--report", action="store_true",
                    help="print the Markdown tables of --out, plot its validation curves beside it, and exit")
    ap.add_argument("--study", choices=("v2", "v3"), default="v2", help="v3: boosting frozen pre-trained Fs (study_v3.py)")
    ap.add_argument("--stage", choices=("budget", "main"), default="main", help="v3: stop after the budgets, or run the seeds too")
    ap.add_argument("--fs", default="", help="v3: comma-separated Fs (default: ffdnet,oidn,zero-dce)")
    args = ap.parse_args()
    if args.study == "v3":
        import study_v3  # beside this script

        if args.seeds == "0,1,2":  # v3's protocol: five seeds
            args.seeds = "0,1,2,3,4"
        study_v3.main(args)
    elif args.report:
        from study_report import plot_curves, report  # beside this script

        out = Path(args.out)
        print(report(out))
        print(f"curves: {plot_curves(out, out.with_name(out.stem + '_curves.png'))}")
    else:
        study(args)


if __name__ == "__main__":
    main()
