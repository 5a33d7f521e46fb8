"""Study v3 (issue 24): do real priors boost real pre-trained restorers? Protocol: docs/RESULTS.md.

The protocol's rules (budget on validation, paired statistics, verdict table) live in the library
`ptg.ptgrm.study`, which `ptg study` runs for any F and priors; this script keeps v3's data,
stores and recorded runs, and re-reports them with that library.

    python benchmarks/reproduce.py --study v3 --dry-run          # every run, the stage it belongs to
    python benchmarks/reproduce.py --study v3 --stage budget     # choose crop, lr, steps per F on val
    python benchmarks/reproduce.py --study v3 --stage main       # the seeds, on the frozen budgets
    python benchmarks/reproduce.py --study v3 --report           # the tables, paired by seed

Only R trains: each frozen F (real weights) runs once over every input and view (`ptg
extract-outputs`), and every run is `ptg train --mode refine --f-outputs` on that cache. The
validation photos (`benchmarks/study_split_v3.json`) come from the training photos; they choose
the budget; the test photos are scored once per run, on `last.pt`, with the same cached F.

Resumable at every level: data, stores and caches compute only what is missing; a run with a
final.json is kept, one with a last.pt resumes; a budget JSON, once written, is frozen; the
results file is rewritten atomically after every run. Seed-major: a study stopped early has
every arm at the seeds it reached.
"""
from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import reproduce as v2  # beside this script: data synthesis, stores, wrong-prior stores, evaluation
from ptg.ptgrm.study.budget import choose_crop as _choose_crop, flat_step  # the protocol's rules live in the library

REPO = v2.REPO
RESULTS = REPO / "benchmarks" / "results" / "reproduction_v3.json"
SPLIT_V3 = REPO / "benchmarks" / "study_split_v3.json"
VAL_SEED, N_VAL = 1234, 5  # the validation photos: random.Random(1234).sample(sorted(train), 5)
BUDGET_SEED = 100  # the one seed the budget is chosen with (never a reported seed)
LRS, CROPS, MAX_STEPS, VAL_EVERY = (3e-5, 1e-4, 3e-4), (48, 64, 96), 4000, 100
BATCH = 8
LARGE_R_WIDTH = 9  # ptgrm-large: 1,273,511 parameters, matched to R:both's 1,287,884 (imagenet 1280-d + restoration 192-d)


@dataclass(frozen=True)
class FrozenF:
    data_task: str  # the v2 data it restores
    extract: tuple[str, ...]  # `ptg extract-outputs` arguments that build it
    main_prior: str  # the prior of the ptgrm-release arms and of the budget's real arm


FS = {
    # σ map fixed at 30 whatever the image's σ: the blind case (estimating σ would hand F the answer)
    "ffdnet": FrozenF("blind", ("--baseline", "ffdnet", "--baseline-arg", "pretrained=true", "--baseline-arg", "sigma=30"),
                      "restoration"),
    "oidn": FrozenF("blind", ("--baseline", "oidn"), "restoration"),  # defaults, no auxiliary inputs
    "zero-dce": FrozenF("lowlight", ("--baseline", "zero-dce"), "imagenet"),
}
REAL = {"imagenet": ("imagenet",), "restoration": ("restoration",), "both": ("imagenet", "restoration")}
CONTROLS = {"constant": "constant", "shuffled": "shuffle", "zero": "zero"}


@dataclass(frozen=True)
class Arm:
    name: str
    priors: tuple[str, ...]
    control: str = "real"  # priors.control
    refiner: str = "ptgrm"
    refiner_args: tuple[tuple[str, object], ...] = ()


def arms(f: str) -> tuple[Arm, ...]:
    """Every trained arm of one F ("F alone" is every run's `test_f`: the same cached outputs)."""
    main = FS[f].main_prior
    out = [Arm(f"R:{name}", priors) for name, priors in REAL.items()]
    # each real arm's controls use its own stores, so they have its mappings and parameter count
    out += [Arm(f"R:{name}:{c}", priors, control) for name, priors in REAL.items() for c, control in CONTROLS.items()]
    out += [Arm("LargeR", REAL["both"], refiner="ptgrm-large", refiner_args=(("width", LARGE_R_WIDTH),)),
            Arm("R:degradation", ("degradation",)),
            Arm(f"Rrel:{main}", (main,), refiner="ptgrm-release"),
            Arm(f"Rrel:{main}:constant", (main,), "constant", refiner="ptgrm-release")]
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Data: the v2 manifests with the validation photos carved out, F's outputs cached once


def val_split() -> dict[str, list[str]]:
    """The v3 split (train photos minus the validation photos), written once and then only read."""
    from ptg.pipeline.core.fsio import atomic_write_text

    base = json.loads(v2.SPLIT_FILE.read_text())
    train = sorted(p for p, s in base.items() if s == "train")
    val = sorted(random.Random(VAL_SEED).sample(train, N_VAL))
    split = {"val": val, "train": [p for p in train if p not in val], "test": sorted(p for p, s in base.items() if s == "test")}
    if SPLIT_V3.is_file():
        if json.loads(SPLIT_V3.read_text()) != split:
            raise SystemExit(f"{SPLIT_V3} differs from the split the protocol draws; restore it from git")
    else:
        atomic_write_text(SPLIT_V3, json.dumps(split, indent=1) + "\n")  # never through a link planted there
    return split


def v3_manifest(work: Path, data_task: str) -> Path:
    """The v2 task manifest with the validation photos' rows in split ``val``."""
    from ptg.pipeline.datasets.manifest import load_manifest, write_manifest

    out = work / "data" / data_task / "manifest-v3.jsonl"  # beside the v2 manifest: its files lie under its folder
    if out.is_file():
        return out
    val = set(val_split()["val"])
    src = v2.build_data(work, v2.BUDGETS["cpu"], data_task)
    rows = []
    for s in load_manifest(src).samples:
        extra = {k: v for k, v in s.extra.items() if k not in ("id", "input", "target", "split")}
        rows.append({"id": s.id, "input": s.input, "target": s.target,
                     "split": "val" if extra.get("photo") in val else s.split, **extra})
    return write_manifest(out, rows)


def prepare_task(work: Path, task: str) -> dict:
    """A data task's v3 manifest, priors stores, wrong-prior stores and probes."""
    manifest = v3_manifest(work, task)
    stores = v2.build_stores(work, task, manifest)
    wrong = {kind: {p: v2.build_wrong_store(s, work / "priors" / "wrong-v3" / f"{task}-{p}-{kind}", m)
                    for p, s in stores.items()} for kind, m in v2.wrong_maps(manifest).items()}
    probes = {p: v2.cached_probe(work, s, manifest) for p, s in stores.items()}
    return {"task": task, "manifest": manifest, "stores": stores, "wrong": wrong, "probes": probes}


def prepare(work: Path, fs: list[str]) -> dict[str, dict]:
    """Per F: its data task's preparation (shared by the Fs of one task) and its cached outputs."""
    tasks = {t: prepare_task(work, t) for t in dict.fromkeys(FS[f].data_task for f in fs)}
    prep = {}
    for f in fs:
        outs = work / "outputs" / f
        task = tasks[FS[f].data_task]
        v2.ptg("extract-outputs", *FS[f].extract, "--manifest", str(task["manifest"]), "--views", "flips",
               "--out", str(outs), threads=2)  # a complete cache is verified and kept
        prep[f] = {**task, "outputs": outs}
    return prep


# ---------------------------------------------------------------------------------------------
# Runs


def train_args(prep: dict, arm: Arm, seed: int, out: Path, crop: int, lr: float, steps: int) -> list[str]:
    args = ["train", "--manifest", str(prep["manifest"]), "--mode", "refine", "--f-outputs", str(prep["outputs"]),
            "--steps", str(steps), "--seed", str(seed), "--out", str(out), "--crop", str(crop),
            "--batch-size", str(BATCH), "--lr", str(lr), "--quiet", "--refiner", arm.refiner,
            "--set", "run.device=cpu", "--set", "run.threads=1", "--set", "run.checkpoint_every=100",
            "--set", "run.deterministic=false", "--set", f"run.val_every={VAL_EVERY}",
            "--set", "data.val_crop=64", "--set", "data.augment=flips",
            "--set", f"priors.control={arm.control}", "--set", "priors.normalize=standardize"]
    args += [a for p in arm.priors for a in ("--priors", str(prep["stores"][p]))]
    return args + [a for k, v in arm.refiner_args for a in ("--set", f"model.refiner_args.{k}={json.dumps(v)}")]


def train(prep: dict, arm: Arm, seed: int, out: Path, crop: int, lr: float, steps: int) -> dict:
    if not (out / "final.json").is_file():
        args = train_args(prep, arm, seed, out, crop, lr, steps)
        if (out / "checkpoints" / "last.pt").is_file():
            args.append("--resume")
        v2.ptg(*args)
    final = json.loads((out / "final.json").read_text())
    if final["step"] != steps:
        raise SystemExit(f"{out} was trained for {final['step']} steps, not {steps}: use another --work")
    return final


def evaluate(prep: dict, run: Path, out: Path, priors: list[Path] | None = None) -> dict:
    if not (out / "metrics.json").is_file():
        args = ["eval", "--ckpt", str(run / "checkpoints" / "last.pt"), "--manifest", str(prep["manifest"]),
                "--f-outputs", str(prep["outputs"]), "--split", "test", "--out", str(out), "--no-images", "--grids", "0",
                "--device", "cpu"]
        v2.ptg(*args, *[a for p in priors or [] for a in ("--priors", str(p))])
    return json.loads((out / "metrics.json").read_text())


def refiner_params(run: Path) -> int:
    """R's trained values (parameters and buffers of its state dict) in the run's last checkpoint."""
    import torch

    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    return sum(v.numel() for v in ckpt["refiner"]["state_dict"].values() if v.is_floating_point())


def run_main(work: Path, prep: dict, f: str, arm: Arm, seed: int, budget: dict) -> dict:
    from ptg.pipeline.datasets.manifest import load_manifest

    name = f"{f}/{arm.name.replace(':', '-')}/s{seed}"
    out = work / "runs-v3" / name
    t0 = time.time()
    final = train(prep, arm, seed, out, budget["crop"], budget["lr"], budget["steps"])
    levels = {s.id: v2.level_of(s.extra) for s in load_manifest(prep["manifest"]).split("test")}
    metrics = evaluate(prep, out, out / "eval")
    wrong = {}
    if arm.control == "real" and arm.refiner == "ptgrm":  # does R read g? give it the wrong one
        for kind, stores in prep["wrong"].items():
            m = evaluate(prep, out, out / f"eval-wrong-{kind}", [stores[p] for p in arm.priors])
            wrong[kind] = v2.per_level(m, levels, "ptgrm")
    print(f"done {name} in {time.time() - t0:.0f}s", flush=True)
    return {"name": name, "f": f, "arm": arm.name, "seed": seed, "priors": list(arm.priors), "control": arm.control,
            "refiner": arm.refiner, "budget": budget, "steps": final["step"], "seconds": final.get("seconds"),
            "digest": final.get("digest"), "params": refiner_params(out), "curve": v2._curve(out),
            "test": v2.per_level(metrics, levels, "ptgrm"), "test_f": v2.per_level(metrics, levels, "baseline"),
            "wrong": wrong}


# ---------------------------------------------------------------------------------------------
# The budget, chosen on validation only


def choose_crop(curves: dict[tuple[str, int, float], list[dict]], crop: int) -> dict | None:
    """The library's rule (`ptg.ptgrm.study.budget.choose_crop`) on v3's grid."""
    return _choose_crop(curves, crop, LRS, CROPS[-1])


def budget_dir(results: Path) -> Path:
    """Beside the results file, so that both are committed and a fresh checkout resumes the study."""
    return results.with_name(results.stem + "_budgets")


def budget_of(work: Path, results: Path, prep: dict, f: str, jobs: int, max_steps: int = MAX_STEPS) -> dict:
    """crop: the smallest at which R:constant does not end below F on validation (crops are tried in
    ascending order, so larger ones are trained only when needed); lr: R:main's best there; steps:
    `flat_step` of that curve. Frozen once written."""
    path = budget_dir(results) / f"{f}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from ptg.pipeline.core.fsio import atomic_write_json

    main = FS[f].main_prior
    roles = {"main": Arm(f"R:{main}", (main,)), "constant": Arm(f"R:{main}:constant", (main,), "constant")}

    def one(job):
        role, crop, lr = job
        out = work / "budget-runs-v3" / f / f"{role}-c{crop}-lr{lr:g}"
        train(prep, roles[role], BUDGET_SEED, out, crop, lr, max_steps)
        return (role, crop, lr), v2._curve(out)

    curves: dict[tuple[str, int, float], list[dict]] = {}
    with ThreadPoolExecutor(jobs) as pool:
        for crop in CROPS:
            curves.update(pool.map(one, [(role, crop, lr) for lr in LRS for role in roles]))
            chosen = choose_crop(curves, crop)
            if chosen:
                break
    chosen["steps"] = flat_step(curves[("main", chosen["crop"], chosen["lr"])])
    budget = {**chosen, "f": f, "seed": BUDGET_SEED, "max_steps": max_steps,
              "curves": {f"{r}-c{c}-lr{lr:g}": v for (r, c, lr), v in curves.items()}}
    atomic_write_json(path, budget)
    return budget


# ---------------------------------------------------------------------------------------------
# Analysis


def report(path: Path, work: Path) -> str:
    """The v3 tables, made by the library that `ptg study` reports with (`ptg.ptgrm.study.report`)."""
    from ptg.ptgrm.study.report import arms_table, verdict_table, wrong_table

    data = json.loads(path.read_text())
    runs = data.get("runs", [])
    params = {}
    for r in runs:  # records written before R's size was kept: read it from the checkpoint
        run = work / "runs-v3" / r["name"]
        params.setdefault((r["f"], r["arm"]), r.get("params") or (refiner_params(run) if run.is_dir() else None))
    lines = verdict_table(runs, groups=list(FS), real_arms=[f"R:{n}" for n in REAL], positives=False)
    lines += ["", *arms_table(runs, params)]
    lines += ["", "Wrong-prior test: test PSNR with another level's / another image's prior minus with its own, "
              "paired by seed:", "", *wrong_table(runs, positives=False)]
    from study_report import probe_table  # beside this script

    return "\n".join(lines + probe_table(data.get("probes", {})))


def plot_curves(path: Path, out: Path) -> Path:
    """Validation PSNR against steps. Top row, per F: every budget run (seed 100; solid R:main,
    dashed R:constant, one colour per crop and lr) with F alone. Bottom row: each arm's mean over
    its seeds on the frozen budget, F alone in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ptg.ptgrm.study.report import mean_curves

    runs = json.loads(path.read_text()).get("runs", [])
    fs = [f for f in FS if any(r["f"] == f for r in runs) or (budget_dir(path) / f"{f}.json").is_file()]
    fig, axes = plt.subplots(2, max(1, len(fs)), figsize=(5.2 * max(1, len(fs)) + 2.2, 7.0), squeeze=False)
    arm_names = list(dict.fromkeys(r["arm"] for r in runs))
    cmap = plt.get_cmap("tab20")
    colour = {a: cmap(i % 20) for i, a in enumerate(arm_names)}
    for col, f in enumerate(fs):
        top, bottom = axes[0][col], axes[1][col]
        bpath = budget_dir(path) / f"{f}.json"
        if bpath.is_file():
            b = json.loads(bpath.read_text())
            for i, (key, curve) in enumerate(sorted(b["curves"].items(), key=lambda kv: kv[0].split("-", 1)[1])):
                role = key.split("-", 1)[0]
                top.plot([c["step"] for c in curve], [c["psnr"] for c in curve], color=cmap(i // 2 % 20),
                         linestyle="-" if role == "main" else "--", linewidth=1.0, label=key)
                top.plot([c["step"] for c in curve], [c["psnr_f"] for c in curve], color="black", linewidth=0.8)
            top.set_title(f"{f}: budget runs (chosen crop {b['crop']}, lr {b['lr']:g}, {b['steps']} steps)", fontsize=8)
            top.legend(fontsize=6, ncol=2)
        rows = [r for r in runs if r["f"] == f]
        for arm, (steps, means) in mean_curves(rows).items():
            bottom.plot(steps, means, color=colour[arm], label=arm,
                        linewidth=2.0 if arm in (f"R:{FS[f].main_prior}", "R:degradation", "LargeR") else 0.9)
        if rows:
            curve = rows[0]["curve"]
            bottom.plot([c["step"] for c in curve], [c["psnr_f"] for c in curve], color="black", linewidth=2.0, label="F alone")
            bottom.set_title(f"{f}: mean over seeds", fontsize=8)
            bottom.legend(fontsize=5, ncol=2)
        for ax in (top, bottom):
            ax.set_xlabel("step")
            ax.set_ylabel("val PSNR (dB)", fontsize=8)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------


def main(args) -> None:
    from ptg.pipeline.core.fsio import atomic_write_json

    out = Path(args.out) if args.out != str(v2.RESULTS) else RESULTS
    work = Path(args.work).resolve()
    if args.report:
        print(report(out, work))
        print(f"curves: {plot_curves(out, out.with_name(out.stem + '_curves.png'))}")
        return
    fs = args.fs.split(",") if args.fs else list(FS)
    bad = [f for f in fs if f not in FS]
    if bad:
        raise SystemExit(f"unknown F(s) {bad}; choose from {', '.join(FS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(s, f, a) for s in seeds for f in fs for a in arms(f)]  # seed-major
    if args.dry_run:
        for f in fs:
            print(f"budget {f}: {len(LRS) * 2} runs of {args.steps or MAX_STEPS} steps per crop, crops {CROPS} in turn "
                  f"until R:constant does not end below F (seed {BUDGET_SEED}, R:{FS[f].main_prior} and its constant "
                  f"control; lr {LRS})")
        for s, f, a in jobs:
            print(f"{f}/{a.name}/s{s}: priors {','.join(a.priors)}, control {a.control}, refiner {a.refiner}")
        print(f"{len(jobs)} main runs")
        return
    val_split()
    prep = prepare(work, fs)
    budgets = {f: budget_of(work, out, prep[f], f, args.jobs, args.steps or MAX_STEPS) for f in fs}
    if args.stage == "budget":
        print(json.dumps({f: {k: b[k] for k in ("crop", "lr", "steps")} for f, b in budgets.items()}))
        return
    data = json.loads(out.read_text()) if out.is_file() else {"version": 3}
    # merged, not replaced: the Fs may be run one invocation at a time (--fs ffdnet, then --fs oidn)
    data.setdefault("budgets", {}).update({f: {k: v for k, v in b.items() if k != "curves"} for f, b in budgets.items()})
    data.setdefault("probes", {}).update({f: p["probes"] for f, p in prep.items()})
    data["environment"] = v2.environment("cpu")
    runs = {r["name"]: r for r in data.get("runs", [])}
    lock, t0 = threading.Lock(), time.time()

    def one(job):
        seed, f, arm = job
        done = runs.get(f"{f}/{arm.name.replace(':', '-')}/s{seed}")
        budget = data["budgets"][f]  # without the curves
        if done and all(done["budget"][k] == budget[k] for k in ("crop", "lr", "steps")):
            return  # recorded by an earlier session (its run folder may be gone with its checkout)
        rec = run_main(work, prep[f], f, arm, seed, budget)
        with lock:  # the file always holds every finished run
            runs[rec["name"]] = rec
            data["runs"] = list(runs.values())
            data["wall_seconds"] = round(time.time() - t0, 1)
            atomic_write_json(out, data)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, jobs))
    print(f"wrote {out} ({len(runs)} runs)")
