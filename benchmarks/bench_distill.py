"""Prior computation per image and peak memory: teacher encoders vs the `ptg distill` students.

Arms (each in a fresh subprocess, so its memory is its own):

- teacher ``imagenet``: EfficientNet-Lite0 with the real ImageNet weights (1280-d prior);
- teacher ``restoration``: FFDNet with the real KAIR weights (192-d prior);
- each student (``cnn``, ``efficientnet-lite0``) at each teacher's prior dim and pinned crop,
  through `PriorStudent` (the inference path: preprocessing, network, de-normalisation). Weights
  do not change time or memory, so the students are untrained unless ``--dist`` folders are given.

Images: the scikit-image photos shipped offline (9, longer side ``--side``), with Gaussian noise
σ = 25 (fixed seed), decoded once into memory; every arm gets the same arrays. Time per image =
preprocessing + forward, batch 1, ``--threads`` torch threads; ``--repeats`` passes after one
warm-up pass; median and 10th–90th percentile over all (image, pass) timings. Peak memory: peak
resident set of the process minus its resident set after ``import torch`` (weights, libraries
such as timm, activations).

    .venv/bin/python benchmarks/bench_distill.py --threads 1 --out benchmarks/results/distill.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ARMS = [("teacher", "imagenet"), ("teacher", "restoration"), ("cnn", "imagenet"), ("efficientnet-lite0", "imagenet"),
        ("cnn", "restoration"), ("efficientnet-lite0", "restoration")]


def _rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024


def _photos(side: int) -> list:
    import numpy as np
    from PIL import Image

    from ptg.pipeline.datasets.samples import SKIMAGE_PHOTOS, _skimage_photo

    rng = np.random.default_rng(0)
    out = []
    for name in SKIMAGE_PHOTOS:
        im = Image.fromarray(_skimage_photo(name))
        scale = side / max(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
        a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
        out.append(np.clip(a + rng.normal(0, 25 / 255, a.shape), 0, 1).astype(np.float32))
    return out


def _worker(arm: str, teacher: str, side: int, threads: int, repeats: int, dist: str | None) -> dict:
    import torch

    torch.set_num_threads(threads)
    rss0 = _rss_kib()
    images = _photos(side)
    img_kib = sum(a.nbytes for a in images) // 1024
    from ptg.pipeline.encoders import EncoderSpec, apply_preprocess, build_encoder

    if arm == "teacher":
        enc = build_encoder(EncoderSpec(teacher))
        params = sum(p.numel() for p in enc.module.parameters())

        def prior(img):
            with torch.inference_mode():
                return enc.forward(apply_preprocess(img, enc.preprocess)[None])
    else:
        from ptg.ptgrm.artifacts.student import Normalizer, PriorStudent, load_student
        from ptg.ptgrm.distill import _pinned_preprocess
        from ptg.ptgrm.students import create_student

        if dist:
            student = load_student(dist)
        else:
            # the teacher's metadata without building it: dims and pinned crop as `ptg distill` records them
            dim = {"imagenet": 1280, "restoration": 192}[teacher]
            from ptg.pipeline.encoders import imagenet, restoration

            pp = imagenet.PREPROCESS if teacher == "imagenet" else None
            pp_dict = pp.to_dict() if pp is not None else {"size": restoration.DEFAULT_SIZE, "resize": "center_crop"}
            pp = _pinned_preprocess({"encoder": {"preprocessing": pp_dict}}, arm, None)
            kw = {"pretrained": False} if arm == "efficientnet-lite0" else {}
            net = create_student(arm, dim, **kw)
            meta = {"preprocessing": pp.to_dict(), "dim": dim, "teacher": {"fingerprint": "-", "dtype": "float16", "encoder": teacher}}
            student = PriorStudent(net, meta, Normalizer("standardize", torch.zeros(dim), torch.ones(dim), 1.0))
        params = sum(p.numel() for p in student.net.parameters())

        def prior(img):
            return student.priors_for(None, img)[0]

    times = []
    for rep in range(repeats + 1):
        for img in images:
            t0 = time.perf_counter()
            g = prior(img)
            dt = time.perf_counter() - t0
            if rep:
                times.append(dt)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return {"arm": arm, "teacher": teacher, "params": params, "dim": int(g.shape[-1]), "n": len(times),
            "median_ms": 1000 * q(0.5), "p10_ms": 1000 * q(0.1), "p90_ms": 1000 * q(0.9),
            "peak_mib": (peak - rss0 - img_kib) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=512, help="longer side of the photos")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dist", nargs="*", default=[], help="TEACHER:STUDENT=DIST trained students to time instead")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    ap.add_argument("--worker", nargs=2, metavar=("ARM", "TEACHER"), help=argparse.SUPPRESS)
    ap.add_argument("--worker-dist", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(_worker(a.worker[0], a.worker[1], a.side, a.threads, a.repeats, a.worker_dist)))
        return
    dists = dict(d.split("=", 1) for d in a.dist)
    rows = []
    for arm, teacher in ARMS:
        cmd = [sys.executable, __file__, "--worker", arm, teacher, "--side", str(a.side), "--threads", str(a.threads),
               "--repeats", str(a.repeats)]
        if f"{teacher}:{arm}" in dists:
            cmd += ["--worker-dist", dists[f"{teacher}:{arm}"]]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{arm}/{teacher} failed:\n{proc.stderr[-2000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{teacher:12s} {arm:20s} {r['params']:>10,} params  {r['median_ms']:8.1f} ms "
              f"[{r['p10_ms']:.1f}-{r['p90_ms']:.1f}]  {r['peak_mib']:7.1f} MiB", flush=True)
    if a.out:
        lines = [
            "# Prior computation: teacher vs distilled student", "",
            f"{datetime.date.today()}, {platform.processor() or platform.machine()}, torch threads {a.threads}; "
            f"9 scikit-image photos, longer side {a.side}, σ = 25 noise; {a.repeats} passes after a warm-up.",
            f"Command: `python benchmarks/bench_distill.py --side {a.side} --threads {a.threads} --repeats {a.repeats}`", "",
            "Time per image = pinned preprocessing + forward (batch 1); median and 10th–90th percentile over "
            f"{rows[0]['n']} timings. Peak memory = peak resident set minus the resident set after `import torch` "
            "(and minus the decoded photos): weights, libraries (timm for the imagenet teacher and the Lite0 "
            "student), activations. Shared 2-core machine: times vary ±30 % with other jobs.", "",
            "| prior | model | params | ms / image (median) | p10–p90 | peak memory | vs teacher (time) |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        base = {r["teacher"]: r for r in rows if r["arm"] == "teacher"}
        for r in rows:
            t = base[r["teacher"]]
            name = "teacher (" + ("EfficientNet-Lite0" if r["teacher"] == "imagenet" else "FFDNet") + ")" if r["arm"] == "teacher" else f"student `{r['arm']}`"
            lines.append(f"| {r['teacher']} ({r['dim']}-d) | {name} | {r['params']:,} | {r['median_ms']:.1f} ms | "
                         f"{r['p10_ms']:.1f}–{r['p90_ms']:.1f} | {r['peak_mib']:.0f} MiB | {r['median_ms'] / t['median_ms']:.2f}× |")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
