"""`ptg restore --onnx FILE`: run a `ptg export --format onnx` model through onnxruntime, with ptg's tiling.

Untiled, the whole graph runs on the image. When the image would exceed ``--max-memory`` (the
estimate recorded at export, ``ptg.bytes_per_pixel``, is the one `ptg restore` plans with), or a
``--tile`` is given, the graph is split at its prior tensors (``ptg.prior_tensors``): the prior
part runs once on the whole image, the restore part tile by tile through
`ptg.ptgrm.tiling.run_padded_tiled`, exactly as `ptg restore` gives every tile the whole image's
prior. A model that takes the prior vectors as inputs (``--prior input``) is refused here: its
priors come from the caller.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ptg.pipeline.core import fsio
from ptg.pipeline.core.errors import PtgError

from .tiling import check_tiling, memory_budget, plan_tile, run_padded_tiled

ONNX_FORMAT = "ptg-onnx/1"  # as `ptg.ptgrm.onnx_export` writes (not imported: restoring needs no exporter)
MAX_MODEL_BYTES = 4 << 30  # a larger "model" file is refused before it is read (bounded allocation)


def _session(model_bytes: bytes, threads: int | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


class OnnxRestorer:
    """An exported model opened for restoring photos (onnxruntime, CPU).

    Attributes:
        path: the .onnx file.
        metadata: its ``ptg.*`` metadata.
        multiple: the size multiple the graph pads to.
        prior_tensors: names joining the prior part and the restore part ([] without a prior source).
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnx

        self.path = fsio.no_symlink(Path(path), "the ONNX model")
        if not self.path.is_file():
            raise PtgError(f"--onnx {path} is not a file; write one with `ptg export RUN --format onnx --out DIR`")
        if self.path.stat().st_size > MAX_MODEL_BYTES:
            raise PtgError(f"--onnx {path} is over {MAX_MODEL_BYTES >> 30} GiB; not a model ptg exported")
        try:
            self.model = onnx.load_from_string(self.path.read_bytes())
        except Exception as exc:  # onnx raises its own DecodeError types
            raise PtgError(f"cannot read {path} as an ONNX model: {str(exc).splitlines()[0] if str(exc) else exc}") from None
        self.metadata = {p.key: p.value for p in self.model.metadata_props}
        if self.metadata.get("ptg.format") != ONNX_FORMAT:
            raise PtgError(f"{path} is not a ptg ONNX export (metadata ptg.format {ONNX_FORMAT}); write one with "
                           "`ptg export RUN --format onnx`")
        inputs = [i.name for i in self.model.graph.input]
        if inputs != ["image"]:
            raise PtgError(f"{path} takes the prior vectors as inputs ({', '.join(inputs[1:])}): feed them yourself "
                           "(onnxruntime), or export with a prior source inside (`--prior auto`)")
        self.multiple = int(self.metadata.get("ptg.multiple", "1"))
        self.bpp = float(self.metadata.get("ptg.bytes_per_pixel", "0"))
        self.prior_tensors = [n for n in self.metadata.get("ptg.prior_tensors", "").split(",") if n]
        self.threads = threads
        self.whole = _session(self.model.SerializeToString(), threads)
        self._parts: tuple[Any, Any] | None = None

    def describe(self) -> str:
        base = json.loads(self.metadata.get("ptg.baseline", "{}") or "{}")
        ref = json.loads(self.metadata.get("ptg.refiner", "null") or "null")
        prior = json.loads(self.metadata.get("ptg.prior", "{}") or "{}")
        return f"F {base.get('name')}" + (f" + R {ref['name']}" if ref else "") + f", prior {prior.get('kind')}"

    def _split(self) -> tuple[Any, Any]:
        """(prior part or None, restore part) sessions, made once on first tiled use."""
        if self._parts is None:
            from onnx.utils import Extractor

            if not self.prior_tensors:
                self._parts = (None, self.whole)
            else:
                ex = Extractor(self.model)
                prior = ex.extract_model(["image"], self.prior_tensors)
                rest = ex.extract_model(["image", *self.prior_tensors], ["restored"])
                self._parts = (_session(prior.SerializeToString(), self.threads), _session(rest.SerializeToString(), self.threads))
        return self._parts

    def restore(self, img: np.ndarray, *, tile: int | None = None, overlap: int = 32, budget: int | None = None,
                name: str = "the image") -> tuple[np.ndarray, int | None]:
        """An H×W×3 float image in [0, 1] -> (the restored H×W×3 float32 image, the tile side used or None)."""
        x = np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)  # [1, 3, H, W]
        h, w = x.shape[-2:]
        check_tiling(tile, overlap, self.multiple)
        if tile is None and budget is not None and self.bpp > 0:
            tile = plan_tile(self.bpp, h, w, self.multiple, overlap, budget)
            if tile is not None:
                warnings.warn(f"{name} ({w}x{h}) needs about {self.bpp * h * w / 2**30:.1f} GiB untiled, over the memory budget "
                              f"of {budget / 2**30:.1f} GiB (--max-memory): restoring it in {tile}-pixel tiles with overlap "
                              f"{overlap}", stacklevel=2)
        if tile is None:
            return self.whole.run(["restored"], {"image": x})[0][0].transpose(1, 2, 0), None
        prior_s, rest_s = self._split()
        feeds = {} if prior_s is None else dict(zip(self.prior_tensors, prior_s.run(self.prior_tensors, {"image": x})))

        def fn(t: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(rest_s.run(["restored"], {"image": t.numpy(), **feeds})[0])

        (out,) = run_padded_tiled(fn, torch.from_numpy(x), self.multiple, tile, overlap, "cpu")
        return out[0].permute(1, 2, 0).numpy(), tile


def restore_files_onnx(model: str | Path, paths: Sequence[Path], *, tile: int | None = None, overlap: int = 32,
                       max_memory: str | None = "auto", threads: int | None = None) -> Iterator[tuple[Path, np.ndarray]]:
    """`ptg restore --onnx`: each image file restored by the ONNX model (``(path, H×W×3 float32 in [0, 1])``)."""
    from ptg.pipeline.core.imageio import read_image

    restorer = OnnxRestorer(model, threads)
    check_tiling(tile, overlap, restorer.multiple)
    budget = memory_budget(max_memory, "cpu") if tile is None and max_memory is not None else None
    for path in paths:
        out, _ = restorer.restore(read_image(path), tile=tile, overlap=overlap, budget=budget, name=str(path))
        yield path, out
