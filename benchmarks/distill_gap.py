"""End-to-end check of `ptg distill`: F + PTG-RM restored with student priors vs teacher priors.

Issue 15's test: on the sample photos with the imagenet and restoration priors, is F + R with
the student's priors within 0.05 dB PSNR of F + R with the teacher's (mean over the test split,
3 seeds)? Steps, each skipped when its output is already there (re-running continues):

a. ``ptg data samples`` (σ = 25), ``ptg extract-priors`` imagenet and restoration (``--views flips``);
b. ``ptg distill`` one student per prior;
c. ``ptg train --preset samples --mode joint`` per prior and seed;
d. every test image restored by each run with four priors: the teacher's (the store's identity
   row: what `ptg restore` recomputes with the encoder, rounded to the store's dtype), the
   student's, and two controls — the train rows' mean prior (no per-image information) and zeros —
   which show how much R uses the prior at all. PSNR (BasicSR convention) against the target.

Inference goes through ONE function, `restore_fr`, so the trainer's inference API can change
under it. Results: a markdown table (``--out``) and ``gap.json`` in the work folder.

    .venv/bin/python benchmarks/distill_gap.py --work /tmp/gap --train-steps 300 --distill-steps 300 \\
        --out benchmarks/results/distill_gap.md
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

PRIORS = ("imagenet", "restoration")
ARMS = ("teacher", "student", "mean", "zero")


def restore_fr(run: Path, x: torch.Tensor, priors: list[torch.Tensor]) -> torch.Tensor:
    """F + R output ``[1, 3, H, W]`` of the run for image ``x`` ``[1, 3, H, W]`` and raw priors ``[[1, D]]``.

    The one place that knows the inference API (adapt it when `ptg.ptgrm.infer` changes).
    """
    from ptg.ptgrm.artifacts import load
    from ptg.ptgrm.infer import run_padded_tiled

    cache = restore_fr.__dict__.setdefault("restorers", {})
    restorer = cache.get(run) or cache.setdefault(run, load(run / "checkpoints" / "last.pt")[0])
    outs = run_padded_tiled(lambda t: restorer.restore(t, priors), x, restorer.multiple)
    return outs[1]


def _ptg(*argv: str) -> None:
    from ptg.cli.app import main

    rc = main([str(a) for a in argv])
    if rc:
        raise SystemExit(f"`ptg {' '.join(map(str, argv))}` failed with exit code {rc}")


def prepare(work: Path, a: argparse.Namespace) -> dict:
    """Steps a-c; returns paths."""
    manifest = work / "data" / "manifest.jsonl"
    if not manifest.is_file():
        _ptg("data", "samples", "--out", work / "data", "--max-side", a.max_side)
    paths = {"manifest": manifest, "stores": {}, "students": {}, "runs": {}}
    for p in PRIORS:
        store = work / f"{p}.zarr"
        _ptg("extract-priors", "--model", p, "--views", "flips", "--manifest", manifest, "--out", store)
        dist = work / f"student-{p}-{a.student}"
        _ptg("distill", "--priors", store, "--manifest", manifest, "--out", dist, "--student", a.student,
             "--steps", a.distill_steps, "--batch-size", a.batch_size, "--threads", a.threads, "--seed", 0, "--quiet")
        paths["stores"][p], paths["students"][p] = store, dist
        for seed in a.seeds:
            run = work / "runs" / f"{p}-s{seed}"
            if not (run / "final.json").is_file():
                _ptg("train", "--preset", "samples", "--manifest", manifest, "--priors", store, "--mode", "joint",
                     "--steps", a.train_steps, "--seed", seed, "--out", run, "--quiet", "--set", f"run.threads={a.threads}",
                     *(["--resume"] if (run / "checkpoints" / "last.pt").is_file() else []))
            paths["runs"][(p, seed)] = run
    return paths


def evaluate(paths: dict, seeds: list[int]) -> dict:
    """Step d: PSNR per (prior, seed, arm, test image)."""
    from ptg.pipeline.core.imageio import read_image
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.pipeline.core.metrics import psnr
    from ptg.pipeline.storage.store import open_priors, sample_keys
    from ptg.ptgrm.artifacts import load_student
    from ptg.ptgrm.infer import image_to_tensor, tensor_to_image

    manifest = load_manifest(paths["manifest"])
    test, train = manifest.split("test"), manifest.split("train")
    out: dict = {"test_ids": [s.id for s in test], "psnr": {}, "agreement": {}}
    for p in PRIORS:
        reader = open_priors(paths["stores"][p])
        student = load_student(paths["students"][p])
        out["agreement"][p] = student.metadata["agreement"]
        teacher = reader.get(sample_keys(test))  # [M, D] raw store rows
        mean = reader.get(sample_keys(train)).mean(0, keepdims=True)
        for seed in seeds:
            run = paths["runs"][(p, seed)]
            for i, s in enumerate(test):
                img, target = read_image(s.input), read_image(s.target)
                g = {"teacher": torch.from_numpy(teacher[i : i + 1]), "student": student.priors_for(s.input, img)[0],
                     "mean": torch.from_numpy(mean), "zero": torch.zeros(1, reader.dim)}
                for arm in ARMS:
                    y = restore_fr(run, image_to_tensor(img), [g[arm]])
                    out["psnr"].setdefault(f"{p}|{seed}|{arm}", []).append(psnr(tensor_to_image(y), target))
    return out


def table(res: dict, a: argparse.Namespace, seconds: float) -> str:
    lines = [
        "# F + PTG-RM with student priors vs teacher priors (issue 15)", "",
        f"Command: `python benchmarks/distill_gap.py --train-steps {a.train_steps} --distill-steps {a.distill_steps} "
        f"--student {a.student} --seeds {' '.join(map(str, a.seeds))} --max-side {a.max_side}` ({seconds / 60:.0f} min on this "
        f"2-core CPU, {a.threads} thread(s)). Sample photos (σ = 25), {len(res['test_ids'])} test images "
        f"({', '.join(res['test_ids'])}); F + R = preset `samples` (UNet width 12 + PTG-RM), {a.train_steps} steps per seed; "
        f"student `{a.student}`, {a.distill_steps} distillation steps. PSNR in dB (BasicSR), mean over the test split; "
        "Δ = student − teacher, paired by seed and image.", "",
        "| prior | student cosine to teacher (test) | train-mean prior cosine | F+R teacher | F+R student | Δ student | "
        "F+R mean prior | Δ mean | F+R zero prior | Δ zero | per-seed Δ student |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in PRIORS:
        m = {arm: [statistics.fmean(res["psnr"][f"{p}|{s}|{arm}"]) for s in a.seeds] for arm in ARMS}
        d = {arm: [x - t for x, t in zip(m[arm], m["teacher"])] for arm in ARMS}
        ag = res["agreement"][p]
        lines.append(f"| {p} | {ag['cos']:.4f} | {ag['cos_mean_prior']:.4f} | {statistics.fmean(m['teacher']):.3f} | "
                     f"{statistics.fmean(m['student']):.3f} | {statistics.fmean(d['student']):+.3f} | "
                     f"{statistics.fmean(m['mean']):.3f} | {statistics.fmean(d['mean']):+.3f} | "
                     f"{statistics.fmean(m['zero']):.3f} | {statistics.fmean(d['zero']):+.3f} | "
                     f"{', '.join(f'{x:+.3f}' for x in d['student'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="work folder (re-running continues in it)")
    ap.add_argument("--student", default="cnn")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--distill-steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8, help="distillation batch size")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--max-side", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="markdown table to write")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.time()
    a.work.mkdir(parents=True, exist_ok=True)
    paths = prepare(a.work, a)
    res = evaluate(paths, a.seeds)
    (a.work / "gap.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    md = table(res, a, time.time() - t0)
    print(md)
    if a.out:
        a.out.write_text(md, encoding="utf-8")


if __name__ == "__main__":
    main()
