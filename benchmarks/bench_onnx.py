"""Which restoration networks export to ONNX through `ptg export --format onnx`, the file size, and
onnxruntime against torch on this CPU, per 512² image, measured side by side in one run.

Rows: ptg's registry networks (registry defaults, random weights) as F alone; F + each PTG-RM form
(prior as a graph input, dim 512); FFDNet + R with the `restoration` encoder inside the graph
(random-init FFDNet, 192-d prior); and every 1x restoration architecture of the spandrel zoo of
the tests (tests/spandrel_zoo.py, tiny random builds) as F alone. Each row is traced with the same
`ptg.ptgrm.onnx_export.build_graph` the command uses, checked against torch at 72×88 and 512²
(max |Δ|; at 512² the warm-up pair is compared), then timed: torch (eager, inference mode) and
onnxruntime (CPUExecutionProvider) alternate, ``--reps`` times each after one warm-up, both with
``--threads`` threads; the table gives the median and the spread (min-max) of each and the ratio
of the medians. A row that does not export gives the exporter's reason instead.

    nice .venv/bin/python benchmarks/bench_onnx.py --rows ptg --threads 1 --reps 3 --out benchmarks/results/onnx.md
    nice .venv/bin/python benchmarks/bench_onnx.py --rows zoo --threads 1 --reps 1 --out benchmarks/results/onnx_zoo.md

On a GPU (needs ``pip install onnxruntime-gpu`` in place of onnxruntime): ``--device cuda`` runs torch
on the card and onnxruntime with its CUDAExecutionProvider; both timings include copying the image
to the card and the result back (what a user's call costs), torch synchronised before the clock stops.

    pip uninstall -y onnxruntime && pip install onnxruntime-gpu
    .venv/bin/python benchmarks/bench_onnx.py --device cuda --reps 10 --out benchmarks/results/onnx_gpu.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.spandrel_zoo


def _shipped(f, r=None, dims=(), f_kind="restorer", sources=None):
    from ptg.ptgrm.onnx_graph import ShippedRestorer
    from ptg.ptgrm.priors import PriorTransform
    from ptg.ptgrm.tiling import required_multiple

    t = PriorTransform(tuple(dims), "l2", "real", 0)
    uses = bool(dims)
    return ShippedRestorer(f.eval(), None if r is None else r.eval(), t, f_kind, sources, required_multiple(f, r), uses).eval()


def _registry_rows():
    from ptg.ptgrm.models import create_model

    torch.manual_seed(0)
    for name in ("dncnn", "ffdnet", "nafnet", "restormer", "snr", "unet"):
        yield f"{name}", "ptg F", lambda n=name: (_shipped(create_model(n)), 0)
    for r in ("ptgrm", "ptgrm-large", "ptgrm-release"):
        dims = () if r == "ptgrm-large" else (512,)
        yield f"unet + {r}", "ptg F + R", lambda r=r, d=dims: (_shipped(create_model("unet"), create_model(r, **({"prior_dims": list(d)} if d else {})), d), len(d))
    for ff in ("unet-f", "nafnet-f", "restormer-f"):
        yield ff, "ptg -f F", lambda ff=ff: (_shipped(create_model(ff, prior_dims=[512]), None, (512,), "feature-refiner"), 1)
    yield "ffdnet + ptgrm + restoration encoder", "ptg F + R + encoder", _ffdnet_encoder


def _ffdnet_encoder():
    from ptg.pipeline.encoders import EncoderSpec, build_encoder
    from ptg.ptgrm.models import create_model
    from ptg.ptgrm.onnx_graph import EncoderPrior

    enc = build_encoder(EncoderSpec("restoration", random_init=True, seed=0))
    return _shipped(create_model("ffdnet"), create_model("ptgrm", prior_dims=[enc.dim]), (enc.dim,),
                    sources=[EncoderPrior(enc, "float16").eval()]), -1


def _zoo_rows():
    from tests.spandrel_zoo import RESTORATION, build, save

    from ptg.ptgrm.models.spandrel_f import SpandrelConfig, SpandrelF

    tmp = Path(tempfile.mkdtemp(prefix="ptg-bench-onnx-"))
    for key, (mod, cls, kw, arch, _) in RESTORATION.items():
        def make(key=key, mod=mod, cls=cls, kw=kw):
            path = save(build(mod, cls, kw), tmp / f"{key}.pth")
            f = SpandrelF(SpandrelConfig(weights=str(path)))
            if f.minimum > 1 or f.square:
                raise ValueError(f"needs a minimum ({f.minimum}) or square input: refused by ptg")
            return _shipped(f), 0
        yield f"{key} ({arch})", "spandrel zoo F", make


def _graph(shipped, n_prior: int):
    """(ModelProto bytes, extra feeds builder) with ptg's own exporter."""
    from ptg.ptgrm.onnx_export import build_graph

    dims = tuple(shipped.transform.dims)
    model, names = build_graph(shipped, len(dims) if n_prior else 0, len(shipped.sources) > 0, dims)
    return model.SerializeToString(), names


def _measure(label: str, kind: str, make, reps: int, threads: int, side: int, device: str = "cpu") -> dict:
    import onnxruntime as ort

    row = {"name": label, "kind": kind}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shipped, n_prior = make()
            t0 = time.perf_counter()
            data, names = _graph(shipped, n_prior)
            row["export_s"] = round(time.perf_counter() - t0, 1)
            from ptg.ptgrm.onnx_export import check_other_size

            dims = tuple(shipped.transform.dims)  # the check `ptg export --format onnx` makes before writing
            check_other_size(data, shipped, len(dims) if n_prior and not len(shipped.sources) else 0, dims, label)
    except Exception as exc:  # the reason is the result
        row["exports"], row["reason"] = False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        return row
    row["exports"], row["mb"] = True, round(len(data) / 2**20, 2)
    row["params"] = sum(p.numel() for p in shipped.parameters())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    providers = ["CUDAExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(data, opts, providers=providers)
    if sess.get_providers()[0] != providers[0]:
        raise SystemExit(f"onnxruntime has no {providers[0]} here (install onnxruntime-gpu)")
    shipped = shipped.to(device)
    inputs = [i.name for i in sess.get_inputs()]
    dims = tuple(shipped.transform.dims)

    def feeds(x):
        g = [torch.linspace(-1, 1, d)[None] for d in dims] if len(inputs) > 1 else []
        return g, {"image": x.numpy(), **{n: t.numpy() for n, t in zip(inputs[1:], g)}}

    x = torch.rand(1, 3, 72, 88, generator=torch.Generator().manual_seed(0))
    g, fd = feeds(x)
    with torch.inference_mode():
        ref = shipped(x.to(device), *[t.to(device) for t in g]).cpu().numpy()
    worst = float(np.abs(sess.run(["restored"], fd)[0] - ref).max())
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    g, fd = feeds(x)
    t_torch, t_ort = [], []
    for i in range(reps + 1):  # alternate, so contention from other users hits both alike; the first is warm-up
        with torch.inference_mode():
            t0 = time.perf_counter()
            y_torch = shipped(x.to(device), *[t.to(device) for t in g]).cpu()
            sync()
            tt = time.perf_counter() - t0
        t0 = time.perf_counter()
        y_ort = sess.run(["restored"], fd)[0]
        to = time.perf_counter() - t0
        if i:
            t_torch.append(tt)
            t_ort.append(to)
        else:  # the warm-up pair is also the parity check at full size
            worst = max(worst, float(np.abs(y_ort - y_torch.numpy()).max()))
    row["max_abs_diff"] = worst
    if not reps:  # --reps 0: which export and their parity only
        return row
    for key, ts in (("torch", t_torch), ("ort", t_ort)):
        row[f"{key}_s"] = round(statistics.median(ts), 4)
        row[f"{key}_spread"] = [round(min(ts), 4), round(max(ts), 4)]
    row["ratio"] = round(row["ort_s"] / row["torch_s"], 3)
    return row


def _table(rows: list[dict], threads: int, reps: int, side: int) -> str:
    lines = [f"| F (and R) | kind | exports | file MB | max abs diff | torch s ({side}²) | onnxruntime s ({side}²) | ort / torch |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if not r["exports"]:
            lines.append(f"| {r['name']} | {r['kind']} | no: {r['reason']} | | | | | |")
            continue
        if "torch_s" not in r:
            lines.append(f"| {r['name']} | {r['kind']} | yes | {r['mb']:.2f} | {r['max_abs_diff']:.1e} | not timed | not timed | |")
            continue
        sp = lambda k: f"{r[k + '_s']:.3f} ({r[k + '_spread'][0]:.3f}-{r[k + '_spread'][1]:.3f})"  # noqa: E731
        lines.append(f"| {r['name']} | {r['kind']} | yes | {r['mb']:.2f} | {r['max_abs_diff']:.1e} | {sp('torch')} | {sp('ort')} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--only", default=None, help="comma-separated row names to run (default: all)")
    ap.add_argument("--rows", default="all", choices=("all", "ptg", "zoo"), help="ptg's networks, the spandrel zoo, or both")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here (and .json beside it)")
    args = ap.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    rows = []
    chosen = ([*_registry_rows()] if args.rows != "zoo" else []) + ([*_zoo_rows()] if args.rows != "ptg" else [])
    for label, kind, make in chosen:
        if args.only and label.split(" (")[0] not in args.only.split(","):
            continue
        rows.append(_measure(label, kind, make, args.reps, args.threads, args.side, args.device))
        print(json.dumps(rows[-1]), flush=True)
    where = torch.cuda.get_device_name() if args.device == "cuda" else (platform.processor() or platform.machine())
    head = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {where}, "
            f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} thread(s) each, "
            f"median of {args.reps} (min-max) after one warm-up, batch 1, float32")
    text = head + "\n\n" + _table(rows, args.threads, args.reps, args.side) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
