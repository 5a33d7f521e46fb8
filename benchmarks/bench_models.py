"""Parameters, MACs at 512², and forward+backward time and peak memory of every model on this CPU.

Every (model, size) runs in a fresh subprocess so that its peak memory is its own: the figure is
the growth of the process's peak resident set (``ru_maxrss``) over its resident set just before
the first forward pass, i.e. activations + gradients + autograd buffers (weights and inputs
excluded). Time is the second of two forward+backward passes (batch 1, float32), the first being
the warm-up. R is timed alone (Ihat = the input), at prior dim 512.

A second section measures the location-wise convolution by itself on a 1024² grid, with the
banded unfold (the default bound) against one unfold of the whole map.

    .venv/bin/python benchmarks/bench_models.py --threads 1 --out benchmarks/results/models.md
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


def _rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() // 1024


def _worker_model(name: str, size: int, threads: int) -> dict:
    import torch

    from ptg.ptgrm.models import create_model, get_model_spec
    from ptg.ptgrm.models.summary import summary_overrides

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kind = get_model_spec(name).kind
    model = create_model(name, **summary_overrides(name))
    x = torch.rand(1, 3, size, size)
    g = torch.randn(1, 512)

    def step() -> None:
        if kind == "restorer":
            y = model(x)
        elif kind == "refiner":
            y = model(x, x, g).out
        else:
            y = model(x, g)
        y.square().mean().backward()
        model.zero_grad(set_to_none=True)

    rss0 = _rss_kib()
    step()
    t0 = time.perf_counter()
    step()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_mib": (peak - rss0) / 1024}


def _worker_lwc(size: int, chunked: bool, train: bool, threads: int) -> dict:
    import torch

    from ptg.ptgrm.models import location_wise_conv

    torch.set_num_threads(threads)
    c, k = 16, 3
    x = torch.randn(1, c, size, size, requires_grad=train)
    ker = torch.randn(1, c * k * k, size, size, requires_grad=train)
    bound = 1 << 24 if chunked else 1 << 62
    rss0 = _rss_kib()
    t0 = time.perf_counter()
    with torch.set_grad_enabled(train):
        out = location_wise_conv(x, ker, k, max_chunk_elements=bound)
        if train:
            out.square().mean().backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_mib": (peak - rss0) / 1024}


def _spawn(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 while others share the CPU)")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="square input sizes")
    p.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    p.add_argument("--max-gmacs", type=float, default=300.0, help="skip timing a size whose forward exceeds this many GMACs")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        if a.worker[0] == "lwc":
            res = _worker_lwc(int(a.worker[1]), a.worker[2] == "1", a.worker[3] == "1", a.threads)
        else:
            res = _worker_model(a.worker[0], int(a.worker[1]), a.threads)
        print(json.dumps(res))
        return

    from ptg.ptgrm.models import get_model_spec, list_models
    from ptg.ptgrm.models.summary import summarize_model

    names = a.models or [n for n in list_models() if not get_model_spec(n).external]  # external: built from a file
    lines = [
        f"# Model cost on this CPU ({datetime.date.today().isoformat()})",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_models.py --threads {a.threads} --sizes {' '.join(map(str, a.sizes))}"
        f"{' --out ' + str(a.out) if a.out else ''}`  ",
        f"Machine: {platform.processor() or platform.machine()}, torch threads = {a.threads}, batch 1, float32; "
        "R models counted and run at prior dim 512 (R alone, Ihat = input).  ",
        "Time: the second of two forward+backward passes. Peak memory: growth of `ru_maxrss` in a fresh "
        "subprocess over the resident set before the first pass (activations, gradients, autograd buffers). "
        f"'skip': forward above {a.max_gmacs:g} GMACs at that size, not run.",
        "",
        "| model | kind | params | GMACs@512 | " + " | ".join(f"fwd+bwd s @{s}² | peak MiB @{s}²" for s in a.sizes) + " |",
        "|---|---|---:|---:|" + "---:|---:|" * len(a.sizes),
    ]
    for name in names:
        s = summarize_model(name)
        cells = [name, s.kind, f"{s.params:,}", f"{s.macs_512 / 1e9:.2f}"]
        for size in a.sizes:
            if s.macs_512 / 1e9 * (size / 512) ** 2 > a.max_gmacs:
                cells += ["skip", "skip"]
                continue
            r = _spawn([name, str(size), "--threads", str(a.threads)])
            if "error" in r:
                cells += ["error", r["error"][:60]]
            else:
                cells += [f"{r['seconds']:.2f}", f"{r['peak_mib']:.0f}"]
            print(name, size, r, file=sys.stderr, flush=True)
        lines.append("| " + " | ".join(cells) + " |")

    lines += [
        "",
        "## Location-wise convolution alone (C = 16, 3×3 kernels, on a 1024² grid)",
        "",
        "Inputs (x: 64 MiB, kernels Cp: 576 MiB) are allocated before the baseline, so they are not counted; "
        "training must still hold the gradient of Cp (576 MiB), which no banding can avoid.",
        "",
        "| pass | unfold | seconds | peak MiB |",
        "|---|---|---:|---:|",
    ]
    for train in (True, False):
        for chunked in (False, True):
            r = _spawn(["lwc", "1024", "1" if chunked else "0", "1" if train else "0", "--threads", str(a.threads)])
            label = "banded (default bound 2^24 elements)" if chunked else "whole map at once"
            pass_ = "forward+backward" if train else "forward (no grad)"
            if "error" in r:
                lines.append(f"| {pass_} | {label} | error | {r['error'][:60]} |")
            else:
                lines.append(f"| {pass_} | {label} | {r['seconds']:.2f} | {r['peak_mib']:.0f} |")
            print("lwc", train, chunked, r, file=sys.stderr, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)


if __name__ == "__main__":
    main()
