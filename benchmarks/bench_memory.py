"""Training memory and step time: plain, gradient accumulation, activation checkpointing, both,
channels_last and torch.compile, for F + R joint at the ``derain`` preset (F = ptg's Restormer as the
preset builds it, R = PTG-RM, Charbonnier on both outputs, Eq. 8) and for R alone on a frozen
~26M F (Restormer at the paper's size: width 48, blocks 4/6/6/8, 4 refinement blocks).

Every arm runs in a fresh process on the same seeded batches (batch ``--batch``, crops ``--crop``,
a 512-d prior) through ptg's own micro-batch split and checkpointing (`ptg.ptgrm.train.memory`):
``--steps`` optimizer steps, the first a warm-up. Reported per arm:

- ``step memory``: the step's peak above what the process holds right before it (weights, Adam's
  state; gradients are freed at the start of every step as the trainer does): on CUDA
  ``max_memory_allocated - memory_allocated``, on the CPU the peak resident set (``VmHWM``, reset
  through ``/proc/self/clear_refs`` before each step) minus the resident set before it. The maximum
  over the timed steps.
- ``planner``: the same arm measured the way ``--max-memory`` does in-process (`memplan.Probe`):
  the check that the planner's CPU figure agrees with a fresh process's peak RSS.
- step time: median and spread (min-max) of the timed steps; ratios to ``plain`` in the same run.
- ``loss@3``: the loss of the step after 3 optimizer steps: accumulation and checkpointing must
  not change it (float tolerance).

    nice .venv/bin/python benchmarks/bench_memory.py --crop 32 --threads 2 --out benchmarks/results/memory.md
    python benchmarks/bench_memory.py --device cuda --crop 128 --out benchmarks/results/memory-cuda.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# arm -> (micro_batch, checkpointing, channels_last, compile)
JOINT = {"plain": (0, "none", False, False), "accum2": (4, "none", False, False), "accum4": (2, "none", False, False),
         "accum8": (1, "none", False, False), "ckpt": (0, "both", False, False), "accum4+ckpt": (2, "both", False, False),
         "channels_last": (0, "none", True, False), "compile": (0, "none", False, True)}
REFINE = {"plain": (0, "none", False, False), "accum2": (4, "none", False, False), "accum4": (2, "none", False, False),
          "accum8": (1, "none", False, False), "ckpt": (0, "r", False, False), "accum4+ckpt": (2, "r", False, False)}
PAPER_RESTORMER = {"width": 48, "blocks": [4, 6, 6, 8], "refinement_blocks": 4}
PRIOR_DIM = 512


def build(setup: str, device):
    import torch

    from ptg.ptgrm.models import create_model
    from ptg.ptgrm.train.config import preset

    torch.manual_seed(0)
    f_args = PAPER_RESTORMER if setup == "refine" else preset("derain")["model"].get("baseline_args", {})
    f = create_model("restormer", **f_args).to(device)
    r = create_model("ptgrm", prior_dims=(PRIOR_DIM,)).to(device)
    if setup == "refine":
        f.eval().requires_grad_(False)
    return f, r


def batch(step: int, n: int, crop: int, device):
    import torch

    g = torch.Generator().manual_seed(1000 + step)
    x, y = torch.rand(n, 3, crop, crop, generator=g), torch.rand(n, 3, crop, crop, generator=g)
    return x.to(device), y.to(device), torch.randn(n, PRIOR_DIM, generator=g).to(device)


def loss_of(f, r, x, y, g, refine: bool, channels_last: bool):
    import torch

    from ptg.ptgrm.train.losses import charbonnier

    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if refine:
        with torch.no_grad():
            ihat = f(x)
        return charbonnier(r(ihat, x, [g]).out, y)
    ihat = f(x)
    return charbonnier(ihat, y) + charbonnier(r(ihat, x, [g]).out, y)  # Eq. 8, λ1 = 1


def run_arm(args) -> dict:
    """One arm, in this (fresh) process."""
    import torch

    from ptg.ptgrm.train import memory
    from ptg.ptgrm.train.memplan import Probe, _trim_heap, peak_rss, reset_peak_rss

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_flush_denormal(True)  # as the trainer does
    micro, ckpt, nhwc, comp = (REFINE if args.setup == "refine" else JOINT)[args.arm]
    refine = args.setup == "refine"
    f, r = build(args.setup, dev)
    memory.set_checkpointing(f, r, ckpt)
    memory.speed_switches([f, r], nhwc, comp)
    params = [p for m in (f, r) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4, betas=(0.9, 0.99))
    times, mems, losses = [], [], []
    for step in range(args.steps):
        x, y, g = batch(step, args.batch, args.crop, dev)
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            _trim_heap()  # freed heap pages back to the system first, so memory the step reuses counts (as the planner does)
            base = reset_peak_rss()
        t0 = time.perf_counter()
        total = 0.0
        for part in memory.micro_slices(args.batch, micro):
            share = (part.stop - part.start) / args.batch
            loss = loss_of(f, r, x[part], y[part], g[part], refine, nhwc)
            (loss * share).backward()
            total += float(loss.detach()) * share
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        mems.append((torch.cuda.max_memory_allocated() if dev.type == "cuda" else peak_rss()) - base)
        losses.append(total)
    out = {"arm": args.arm, "setup": args.setup, "times": times[1:], "step_memory": max(mems[1:]), "losses": losses,
           "params_f": sum(p.numel() for p in f.parameters()), "params_r": sum(p.numel() for p in r.parameters())}
    if not comp and not nhwc:  # the planner's own in-process figure of the same setting, for agreement
        probe = Probe(f, r, lambda: torch.optim.Adam(params, lr=1e-4), lambda n, c: loss_of(f, r, *batch(0, n, c, dev),
                      refine, False), dev)
        m = probe.measure(min(micro or args.batch, args.batch), ckpt, args.crop)
        grads = sum(p.numel() * p.element_size() for p in params)  # the probe's step starts with them held
        out["planner_activations"] = m.activations + grads
    return out


def preset_plans(args) -> str:
    """Per preset (joint F + R, the preset's F, crop and batch): the plain step and the plan for 8/12/24 GiB.

    Measured with the planner's probe at ``--plan-crop`` (the CPU cannot step 384² crops of SNR in
    reasonable time) and scaled to the preset's crop: activations grow with the pixels, weights and
    optimizer state do not. So these are predictions from CPU measurements; on a GPU ``--max-memory``
    measures at the real crop.
    """
    import math

    import torch

    from ptg.ptgrm.models import create_model
    from ptg.ptgrm.train.config import PRESETS
    from ptg.ptgrm.train.memplan import Probe, micro_batch_sizes

    torch.set_num_threads(args.threads)
    dev, c0 = torch.device(args.device), args.plan_crop
    lines = ["| preset | F | crop × batch | plain peak GiB | 8 GiB | 12 GiB | 24 GiB |", "|---|---|---|---|---|---|---|"]
    measured: dict[str, dict] = {}  # F -> its measurements at c0 (presets sharing an F share them)
    for name, p in PRESETS.items():
        if name == "samples" or (args.paper and p["model"]["baseline"] != "restormer"):
            continue
        crop, b = p["data"]["crop"], p["data"]["batch_size"]
        f_args = PAPER_RESTORMER if args.paper else p["model"].get("baseline_args", {})
        key = f"{p['model']['baseline']} {f_args}"
        if key not in measured:
            torch.manual_seed(0)
            f = create_model(p["model"]["baseline"], **f_args).to(dev)
            r = create_model("ptgrm", prior_dims=(PRIOR_DIM,)).to(dev)
            params = [q for m in (f, r) for q in m.parameters()]
            probe = Probe(f, r, lambda: torch.optim.Adam(params, lr=1e-4),
                          lambda n, c: loss_of(f, r, *batch(0, n, c, dev), False, False), dev)
            measured[key] = {mode: (probe.measure(1, mode, c0), probe.measure(2, mode, c0)) for mode in ("none", "f", "both")}
        scale = (crop / c0) ** 2
        est, floor = {}, {}
        for mode in ("none", "f", "both"):  # as `memplan.plan_memory` predicts: linear in the micro-batch
            m1, m2 = measured[key][mode]
            for mb in micro_batch_sizes(b):
                act = (m1.activations + (m2.activations - m1.activations) * (mb - 1)) * scale
                secs = math.ceil(b / mb) * max(m1.seconds + (m2.seconds - m1.seconds) * (mb - 1), 1e-9) * scale
                floor[mb] = secs = max(secs, floor.get(mb, 0.0))  # recomputing more is never faster
                est[mb, mode] = (m1.static + act, secs)
        row = [name, p["model"]["baseline"] + (" (paper size, 26M)" if args.paper else ""), f"{crop}² × {b}", f"{est[b, 'none'][0] / 2**30:.1f}"]
        for budget in (8, 12, 24):
            fits = [(s, mb, mode, mem) for (mb, mode), (mem, s) in est.items() if mem <= budget * 2**30]
            if fits:
                _, mb, mode, mem = min(fits)
                row.append(f"{mb} × {math.ceil(b / mb)}, {mode}: {mem / 2**30:.1f}")
            else:
                row.append("does not fit")
        lines.append("| " + " | ".join(row) + " |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crop", type=int, default=128, help="training crop side (derain preset: 128)")
    ap.add_argument("--batch", type=int, default=8, help="global batch (derain preset: 8)")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per arm, the first a warm-up (>= 4: loss@3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--setups", default="joint,refine")
    ap.add_argument("--arms", default="", help="comma list (default: all of each setup)")
    ap.add_argument("--order", default="", help="setup:arm,... to run in this order (default: every arm of --setups)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per arm (compile may need it)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--arm", help=argparse.SUPPRESS)
    ap.add_argument("--setup", help=argparse.SUPPRESS)
    ap.add_argument("--presets", action="store_true", help="only the per-preset plan table (see preset_plans)")
    ap.add_argument("--paper", action="store_true", help="--presets with the paper-sized Restormer F (derain, defocus-deblur)")
    ap.add_argument("--plan-crop", type=int, default=48, help="crop the --presets measurements are made at")
    args = ap.parse_args()
    if args.presets:
        text = preset_plans(args)
        if args.out:
            args.out.write_text(text + "\n")
        return
    if args.arm:
        print("RESULT " + json.dumps(run_arm(args)), flush=True)
        return
    rows = []
    if args.order:  # "setup:arm,...": the most wanted arms first (the report is rewritten after each arm)
        plan = [tuple(item.split(":")) for item in args.order.split(",")]
    else:
        plan = [(setup, a) for setup in args.setups.split(",") for a in (REFINE if setup == "refine" else JOINT)
                if not args.arms or a in args.arms.split(",")]
    for setup, arm in plan:
        cmd = [sys.executable, __file__, "--arm", arm, "--setup", setup, "--crop", str(args.crop), "--batch",
               str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
            res = [json.loads(line[7:]) for line in p.stdout.splitlines() if line.startswith("RESULT ")]
            row = res[0] if res else {"arm": arm, "setup": setup, "error": p.stderr.strip().splitlines()[-1:]}
        except subprocess.TimeoutExpired:
            row = {"arm": arm, "setup": setup, "error": f"did not finish in {args.timeout} s"}
        row["wall"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(report(sorted(rows, key=lambda r: r["setup"]), args))
    print(report(sorted(rows, key=lambda r: r["setup"]), args))


def report(rows: list[dict], args) -> str:
    import torch

    card = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    lines = [f"# Training memory ({datetime.date.today()}, {card}, torch {torch.__version__})", "",
             f"batch {args.batch}, crop {args.crop}, {args.steps} steps per arm (first = warm-up), {args.threads} threads.",
             "step memory = peak above weights + optimizer state; planner = the --max-memory probe's figure of the same arm.", ""]
    for setup in dict.fromkeys(r["setup"] for r in rows):
        sub = [r for r in rows if r["setup"] == setup]
        plain = next((r for r in sub if r["arm"] == "plain" and "error" not in r), None)
        first = next((r for r in sub if "error" not in r), None)
        if first:
            lines.append(f"## {setup}: F {first['params_f'] / 1e6:.2f}M params, R {first['params_r'] / 1e6:.2f}M")
        lines += ["", "| arm | step memory MiB | × plain | planner MiB | step s (median) | spread s | × plain | loss@3 | wall s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in sub:
            if "error" in r:
                lines.append(f"| {r['arm']} | {r['error']} | | | | | | | {r['wall']:.0f} |")
                continue
            med = statistics.median(r["times"])
            mem_ratio = r["step_memory"] / plain["step_memory"] if plain else float("nan")
            t_ratio = med / statistics.median(plain["times"]) if plain else float("nan")
            planner = f"{r['planner_activations'] / 2**20:.1f}" if "planner_activations" in r else "-"
            loss3 = f"{r['losses'][3]:.6f}" if len(r["losses"]) > 3 else "-"
            lines.append(f"| {r['arm']} | {r['step_memory'] / 2**20:.1f} | {mem_ratio:.2f} | {planner} | {med:.2f} | "
                         f"{min(r['times']):.2f}-{max(r['times']):.2f} | {t_ratio:.2f} | {loss3} | {r['wall']:.0f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
