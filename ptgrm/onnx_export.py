"""`ptg export RUN --format onnx --out DIR`: the boosted restorer as one ONNX file, DIR/model.onnx.

The graph (see `ptg.ptgrm.onnx_graph`): input ``image`` ``[1, 3, H, W]`` float32 RGB in [0, 1]
(H and W dynamic), output ``restored`` of the same shape, clamped to [0, 1]. Inside: the prior's
source, the run's prior transform, replicate padding to F's and R's size multiple, F, R, crop.
Where the prior comes from (``prior``):

- ``encoder``: the encoder recorded with the priors store, traced into the graph with its pinned
  preprocessing and the store's float16 rounding (the `restoration` prior: FFDNet features,
  852k parameters). ``auto`` takes it when it has at most `MAX_SHIPPED_ENCODER` parameters.
- ``student``: a `ptg distill` student per store (``--student``, or those an export folder carries).
- ``input``: the raw prior vectors as graph inputs ``prior0``, ``prior1``, ... ``[1, D_i]``, in the
  store's space (the transform is still inside), for teams that compute priors elsewhere.
- a run with the zero or constant control, or without priors, has no prior input at all.

With an encoder or a student, the graph is the merge of two traced parts joined at the tensors
``prior0``, ... (named in the metadata ``ptg.prior_tensors``), so `ptg restore --onnx` can compute
the prior once on the whole image and run the rest tile by tile, as `ptg restore` does.

Refused, each with one line: a black-box F (OIDN, Zero-DCE++: its network is a native library or a
package's model file, not a torch graph), a run on cached F outputs (no F network), the shuffle
control (each image would need another image's prior), a spandrel F that needs a minimum or square
input size (a traced graph cannot decide it per image).

The ONNX metadata (``metadata_props``, also written to DIR/model.json): F, R, the prior source,
ptg's version, the run's digest (SHA-256 of the checkpoint), test PSNR where the run recorded one,
the size multiple, and the memory estimate `ptg restore --onnx` tiles with.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ptg.pipeline.core import fsio
from ptg.pipeline.core.errors import PtgError

from .artifacts import RunInfo, is_export, load, load_student
from .onnx_graph import EncoderPrior, ShippedRestorer, StudentPrior
from .restorer import Restorer
from .tiling import bytes_per_pixel

ONNX_FORMAT = "ptg-onnx/1"
MODEL_FILE = "model.onnx"
PRIOR_CHOICES = ("auto", "encoder", "student", "input")
MAX_SHIPPED_ENCODER = 5_000_000  # parameters: the size of the students `ptg distill` trains; CLIP/BLIP-2 are far above
OPSET = 17  # LayerNormalization-free graphs run on every onnxruntime since 1.14; 17 keeps them loadable widely
TRACE_SIDE = 64  # side of the trace example (the graph is dynamic; small keeps R's location-wise conv unbanded)


@dataclass
class OnnxExport:
    """What `export_onnx` wrote.

    Attributes:
        path: DIR/model.onnx.
        metadata: the model's metadata (also DIR/model.json).
        prior_inputs: names of the raw prior inputs (``input`` mode), else empty.
    """

    path: Path
    metadata: dict[str, str]
    prior_inputs: list[str] = field(default_factory=list)


def refusal(info: RunInfo, restorer: Restorer) -> str | None:
    """Why this run cannot become one ONNX graph, in one line with what to do; None when it can."""
    base = info.baseline
    if base.kind == "black-box":
        return (f"F {base.name!r} is a black box (its network runs in its own library, not as torch operations), so no ONNX "
                "graph can hold it: train R on a torch F (a registry network or --baseline spandrel) to ship ONNX, "
                "or share the safetensors export (`ptg export RUN --out DIR`)")
    if base.kind == "cached-outputs" or not getattr(restorer.f, "runs_on_new_photos", True):
        return ("this run was trained on F's cached outputs: it holds no F network to put in the graph; train on the live F "
                f"(`ptg train --baseline {base.args.get('f') or 'NAME'}`) to ship ONNX, or restore with "
                "`ptg restore --baseline NAME`")
    if getattr(restorer.f, "minimum", 0) > 1 or getattr(restorer.f, "square", False):
        return (f"the spandrel F ({base.args.get('architecture')}) needs a minimum or square input size, which a traced graph "
                "cannot choose per image; share the safetensors export (`ptg export RUN --out DIR`) instead")
    if restorer.uses_priors and restorer.transform.control == "shuffle":
        return ("a shuffle-control run gives each image another image's prior, which a one-image graph cannot; it is a study "
                "control, not a model to ship: export the run with control real")
    return None


def _encoder_sources(info: RunInfo, forced: bool) -> list[nn.Module]:
    """The recorded encoders as graph parts (`EncoderPriors` builds and checks them)."""
    from .infer import EncoderPriors

    built = EncoderPriors(info.priors, "cpu", info.recorded_in).encoders
    parts = []
    for (enc, dtype), entry in zip(built, info.priors):
        if enc.module is None:
            raise PtgError(f"the {enc.name} encoder of {entry.path} has no torch module to trace: distil a student "
                           "(`ptg distill`) and pass --student, or export with --prior input")
        n = sum(p.numel() for p in enc.module.parameters())
        if n > MAX_SHIPPED_ENCODER and not forced:
            raise PtgError(f"the {enc.name} encoder has {n:,} parameters, over the {MAX_SHIPPED_ENCODER:,} a shipped graph "
                           "carries: distil a student (`ptg distill`) and pass --student DIR, or --prior input "
                           "(--prior encoder ships it anyway)")
        parts.append(EncoderPrior(enc, dtype).eval())
    return parts


def _prior_sources(restorer: Restorer, info: RunInfo, prior: str, students: Sequence[str | Path] | None
                   ) -> tuple[list[nn.Module] | None, dict[str, Any]]:
    """(graph prior sources or None, the metadata entry describing them)."""
    if prior not in PRIOR_CHOICES:
        raise PtgError(f"--prior {prior!r} is not one of {', '.join(PRIOR_CHOICES)}")
    t = restorer.transform
    described = {"dims": list(t.dims), "normalize": t.normalize, "control": t.control}
    if not restorer.uses_priors:
        return None, {"kind": "none"}
    if not t.needs_input:  # zero / constant: the same vectors for every image, constants of the graph
        return None, {"kind": f"control-{t.control}", **described}
    if prior == "input":
        return None, {"kind": "input", **described, "inputs": [f"prior{i}" for i in range(len(t.dims))]}
    dists = [Path(p) for p in students or []] or [Path(p) for p in info.students]
    if prior == "student" or (prior == "auto" and dists):
        if len(dists) != len(info.priors):
            raise PtgError(f"the model takes {len(info.priors)} prior(s); --student gave {len(dists)} `ptg distill` folder(s): "
                           "give one per store, in order")
        loaded = [load_student(d) for d in dists]
        for st, entry in zip(loaded, info.priors):
            st.check_matches(entry)
        return [StudentPrior(st).eval() for st in loaded], {
            "kind": "student", **described, "students": [{"student": st.metadata["student"], "teacher": st.metadata["teacher"]["encoder"],
                                                          "agreement": st.metadata.get("agreement")} for st in loaded]}
    parts = _encoder_sources(info, forced=prior == "encoder")
    return parts, {"kind": "encoder", **described,
                   "encoders": [e.metadata.get("encoder", {}).get("name") for e in info.priors]}


def _trace(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str], dynamic: dict) -> Any:
    """One traced part as an ONNX ModelProto (TorchScript exporter: dynamic shapes through Shape ops)."""
    import io
    import warnings

    import onnx

    buf = io.BytesIO()
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # nn.MultiheadAttention's fused kernel has no ONNX form; the plain path is the same maths
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings on Python ifs the padding already settles
            torch.onnx.export(module, args, buf, dynamo=False, opset_version=OPSET, input_names=inputs, output_names=outputs,
                              dynamic_axes=dynamic, do_constant_folding=True)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return onnx.load_from_string(buf.getvalue())


class _PriorPart(nn.Module):
    def __init__(self, shipped: ShippedRestorer):
        super().__init__()
        self.sources = shipped.sources

    def forward(self, x):
        return tuple(s(x) for s in self.sources)


def _merge(prior_m, restore_m, names: list[str]):
    """One graph: the prior part's outputs feed the restore part's prior inputs (same names, ``names``)."""
    import onnx
    from onnx import compose, helper

    p = compose.add_prefix(prior_m, "prior/")
    rename = {"prior/image": "image", **{f"prior/{n}": n for n in names}}
    for node in p.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    g, pg = restore_m.graph, p.graph
    joins = [i for i in g.input if i.name in names]  # typed join tensors: `onnx.utils.Extractor` splits the graph there
    graph = helper.make_graph(list(pg.node) + list(g.node), "ptg_restorer", [i for i in g.input if i.name == "image"],
                              list(g.output), list(pg.initializer) + list(g.initializer),
                              value_info=list(pg.value_info) + list(g.value_info) + joins)
    model = helper.make_model(graph, opset_imports=list(restore_m.opset_import), producer_name="ptg")
    model.ir_version = restore_m.ir_version
    onnx.checker.check_model(model)
    return model


def build_graph(shipped: ShippedRestorer, n_priors: int, has_sources: bool, dims: Sequence[int]):
    """The ONNX ModelProto of ``shipped`` and the prior tensor names it joins at (or takes as inputs)."""
    x = torch.rand(1, 3, TRACE_SIDE, TRACE_SIDE + shipped.multiple, generator=torch.Generator().manual_seed(0))
    hw = {2: "height", 3: "width"}
    names = [f"prior{i}" for i in range(n_priors)]
    raw = tuple(torch.zeros(1, d) for d in dims[:n_priors])
    restore_m = _trace(shipped, (x, *raw), ["image", *names], ["restored"], {"image": hw, "restored": hw})
    if not has_sources:
        return restore_m, names
    prior_m = _trace(_PriorPart(shipped), (x,), ["image"], names, {"image": hw})
    return _merge(prior_m, restore_m, names), names


CHECK_SIZE = (57, 83)  # an odd size unlike the trace's: a graph that baked its input size fails here
CHECK_TOL = 1e-4  # max |Δ| allowed against torch at CHECK_SIZE (the parity the tests hold the graph to)


def check_other_size(data: bytes, shipped: ShippedRestorer, n_inputs: int, dims: Sequence[int], source: Any) -> None:
    """Run the graph in onnxruntime at `CHECK_SIZE` against torch: some networks (e.g. ones that size
    a tensor with Python numbers while tracing) export, yet only run at the traced size."""
    import onnxruntime as ort

    x = torch.rand(1, 3, *CHECK_SIZE, generator=torch.Generator().manual_seed(1))
    raw = [torch.zeros(1, d) for d in dims[:n_inputs]]
    with torch.inference_mode():
        want = shipped(x, *raw).numpy()
    feeds = {"image": x.numpy(), **{f"prior{i}": t.numpy() for i, t in enumerate(raw)}}
    try:
        got = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(["restored"], feeds)[0]
        diff = float(abs(got - want).max())
    except Exception as exc:  # onnxruntime's own errors: the graph baked a size
        diff, why = float("inf"), f"onnxruntime fails at {CHECK_SIZE[0]}x{CHECK_SIZE[1]}: {str(exc).splitlines()[0][:160]}"
    else:
        why = f"at {CHECK_SIZE[0]}x{CHECK_SIZE[1]} it differs from torch by {diff:.2e}"
    if not diff <= CHECK_TOL:
        raise PtgError(f"cannot export {source} as ONNX: the traced graph only runs at the traced size ({why}); this "
                       "network sizes its tensors with Python numbers. Ship it with `ptg export` (safetensors) instead")


def _run_digest(info: RunInfo) -> str | None:
    """SHA-256 of the checkpoint the weights came from (an export records its source's)."""
    from ptg.pipeline.core.limits import read_json

    src = Path(info.source)
    if is_export(src):
        return ((read_json(src / "config.json", "export config").get("source") or {}).get("sha256"))
    return fsio.file_sha256(src) if src.is_file() else None


def _recorded_psnr(info: RunInfo, metrics: str | Path | None) -> dict[str, Any] | None:
    """Test PSNR of the run: a `ptg eval` metrics.json given by the user, else the run's own final
    validation when it validated on the test split; None when neither exists."""
    from ptg.pipeline.core.limits import read_json

    if metrics is not None:
        m = read_json(metrics, "ptg eval metrics")
        mean = (m.get("mean") or {}) if isinstance(m, dict) else {}
        out = {k: (mean.get(k) or {}).get("psnr") for k in ("baseline", "ptgrm")}
        return {"split": (m.get("info") or {}).get("split"), "source": str(metrics), "psnr_f": out["baseline"], "psnr": out["ptgrm"]}
    src = Path(info.source)
    final = src.parent.parent / "final.json" if src.is_file() and src.parent.name == "checkpoints" else None
    if final is None or not final.is_file():
        return None
    f = read_json(final, "run summary")
    if not isinstance(f, dict) or f.get("val_split") != "test" or not isinstance(f.get("val"), dict):
        return None
    return {"split": "test", "source": str(final), "psnr": f["val"].get("psnr"), "psnr_f": f["val"].get("psnr_f")}


def _ptg_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ptg")
    except PackageNotFoundError:
        return "unknown"


def _metadata(info: RunInfo, restorer: Restorer, prior_meta: dict, names: list[str], has_sources: bool,
              bpp: float, metrics: str | Path | None) -> dict[str, str]:
    psnr = _recorded_psnr(info, metrics)
    meta = {
        "ptg.format": ONNX_FORMAT, "ptg.version": _ptg_version(),
        "ptg.input": "image: [1, 3, H, W] float32 RGB in [0, 1], any H and W (padded inside to ptg.multiple)",
        "ptg.output": "restored: [1, 3, H, W] float32 RGB in [0, 1]",
        "ptg.baseline": json.dumps({"name": info.baseline.name, "kind": info.baseline.kind,
                                    "architecture": info.baseline.args.get("architecture"), "args": _plain(info.baseline.args)}),
        "ptg.refiner": json.dumps(None if info.refiner is None else {"name": info.refiner.name, "args": _plain(info.refiner.args)}),
        "ptg.mode": info.mode, "ptg.prior": json.dumps(prior_meta),
        "ptg.prior_tensors": ",".join(names if has_sources else []),
        "ptg.multiple": str(restorer.multiple), "ptg.bytes_per_pixel": f"{bpp:.1f}",
        "ptg.run_digest": _run_digest(info) or "", "ptg.step": str(info.step), "ptg.weights": str(info.weights),
        "ptg.test_psnr": json.dumps(psnr),
    }
    return meta


def _plain(args: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe constructor arguments (paths of local files dropped: they mean nothing to a user)."""
    return {k: v for k, v in args.items() if k not in ("weights", "pretrained_path") and isinstance(v, (int, float, str, bool, list, type(None)))}


def export_onnx(source: str | Path, out: str | Path, *, prior: str = "auto", students: Sequence[str | Path] | None = None,
                prefer: str = "best", use_ema: bool = True, force: bool = False, metrics: str | Path | None = None
                ) -> OnnxExport:
    """Write ``out/model.onnx`` (and ``out/model.json``, its metadata) from a run, checkpoint or export folder.

    Args:
        prior: auto | encoder | student | input (module docstring).
        students: `ptg distill` folders, one per priors store (``--student``).
        metrics: a `ptg eval` metrics.json of this run, whose test PSNR goes into the metadata.

    Raises:
        PtgError: the run cannot be shipped as one graph (`refusal`), or its prior source is unavailable.
    """
    import onnx

    restorer, info = load(source, prefer=prefer, use_ema=use_ema)
    why = refusal(info, restorer)
    if why:
        raise PtgError(f"cannot export {source} as ONNX: {why}")
    sources, prior_meta = _prior_sources(restorer, info, prior, students)
    n_in = len(restorer.transform.dims) if prior_meta["kind"] in ("input", "encoder", "student") else 0
    shipped = ShippedRestorer(restorer.f, restorer.r, restorer.transform, restorer.f_kind, sources, restorer.multiple,
                              restorer.uses_priors).eval()
    model, names = build_graph(shipped, n_in, sources is not None, restorer.transform.dims)
    check_other_size(model.SerializeToString(), shipped, n_in if sources is None else 0, restorer.transform.dims, source)
    raw = [torch.zeros(1, d) for d in restorer.transform.dims] if restorer.needs_priors else None
    bpp = bytes_per_pixel(lambda t: restorer.restore(t, raw), restorer.multiple, restorer, "cpu")  # `ptg restore`'s estimate
    meta = _metadata(info, restorer, prior_meta, names, sources is not None, bpp, metrics)
    onnx.helper.set_model_props(model, meta)
    model.doc_string = (f"ptg: F {info.baseline.name}" + (f" + R {info.refiner.name}" if info.refiner else "")
                        + f", prior {prior_meta['kind']}; input image [1,3,H,W] RGB [0,1] -> restored")
    folder = fsio.claim_out_dir(out, "onnx-export", force)
    fsio.atomic_write_bytes(folder / MODEL_FILE, model.SerializeToString())
    fsio.atomic_write_json(folder / "model.json", meta)
    return OnnxExport(folder / MODEL_FILE, meta, names if sources is None else [])


__all__ = ["MAX_SHIPPED_ENCODER", "MODEL_FILE", "ONNX_FORMAT", "OnnxExport", "PRIOR_CHOICES", "build_graph", "check_other_size", "export_onnx",
           "refusal"]
