"""Inference of a trained model: where its priors come from (stores, the recorded encoder,
distilled students), and `restore_image`, which tiles an image automatically when it would exceed
the memory budget. The model itself comes from `ptg.ptgrm.artifacts.load` (a `Restorer` and its
`RunInfo`). `restore_each` is the one restore loop (`ptg eval`, `ptg restore`, training's
validation); `restore_files` feeds it image files.

Padding, tiling and the memory estimate live in `ptg.ptgrm.tiling` (re-exported here); its module
docstring says where tiling changes results.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor

from ptg.pipeline.core.errors import PtgError

from .artifacts import PriorStoreInfo, RunInfo, student_priors
from .restorer import Restorer  # noqa: F401 (re-exported: the model inference runs)
from .tiling import (RestoreFn, bytes_per_pixel, check_tiling, image_to_tensor, memory_budget,  # noqa: F401 (re-exported)
                     plan_tile, required_multiple, run_padded_tiled, tensor_to_image, tile_starts)


def restore_image(restorer: Restorer, x: Tensor, raw_priors: Sequence[Tensor] | None, *, tile: int | None = None,
                  overlap: int = 32, device: str | torch.device = "cpu", budget: int | None = None,
                  name: str = "the image") -> tuple[tuple[Tensor | None, ...], int | None]:
    """`run_padded_tiled` with `restorer`, tiling automatically when the image would exceed ``budget``.

    Args:
        restorer: F (+ R).
        x: ``[1, 3, H, W]`` degraded image.
        raw_priors: the image's raw prior vectors (see `Restorer.restore`).
        tile: a tile side chosen by the user (used as given), or None.
        overlap: overlap between tiles.
        device: where the networks run.
        budget: bytes the inference may use (`memory_budget`); None: never tile automatically.
        name: how messages name the image.

    Returns:
        (the outputs of `Restorer.restore`, stitched; the tile side used or None).

    Raises:
        PtgError: out of memory (names the image and the flags that help), or not even a small tile fits.
    """
    fn = lambda t: restorer.restore(t, raw_priors)  # noqa: E731
    h, w = x.shape[-2:]
    if tile is None and budget is not None:
        if restorer.bytes_per_pixel is None:
            # a cached F takes Id ⊕ Ihat: probe with six channels
            cached = getattr(getattr(restorer, "f", None), "input_channels", 3) == 6
            probe = (lambda t: fn(torch.cat([t, t], 1))) if cached else fn  # noqa: E731
            restorer.bytes_per_pixel = bytes_per_pixel(probe, restorer.multiple, restorer, device)
        tile = plan_tile(restorer.bytes_per_pixel, h, w, restorer.multiple, overlap, budget)
        if tile is not None:
            warnings.warn(f"{name} ({w}x{h}) needs about {restorer.bytes_per_pixel * h * w / 2**30:.1f} GiB untiled, over the "
                          f"memory budget of {budget / 2**30:.1f} GiB (--max-memory): restoring it in {tile}-pixel tiles "
                          f"with overlap {overlap} (R's output differs slightly from untiled inference)", stacklevel=2)
    try:
        return run_padded_tiled(fn, x, restorer.multiple, tile, overlap, device), tile
    except RuntimeError as exc:  # torch.OutOfMemoryError (CUDA) is one; the CPU allocator raises a plain one
        if not isinstance(exc, torch.OutOfMemoryError) and "alloc" not in str(exc) and "out of memory" not in str(exc):
            raise
        raise PtgError(f"out of memory restoring {name} ({w}x{h}){f' with --tile {tile}' if tile else ''}: "
                       "pass a smaller --tile or a lower --max-memory") from None


# ---------------------------------------------------------------------------------------------
# Where the priors g come from at inference. Both return raw vectors as the store holds them;
# `Restorer.restore` applies the run's own prior transform (normalisation, controls).


def _store_entries(entries: Sequence[PriorStoreInfo]) -> list[PriorStoreInfo]:
    if not entries:
        raise PtgError("this checkpoint records no priors stores; it was trained without priors")
    return list(entries)


def chosen_students(info: RunInfo, stores: Sequence[str | Path] | None, students: Sequence[str | Path] | None
                    ) -> list[Path]:
    """The distilled students that compute the priors: ``--prior-from``, else those an export
    carries unless ``--priors`` names stores; [] when stores or the encoder give them."""
    if students:
        return [Path(p) for p in students]
    return [] if stores else [Path(p) for p in info.students]


def prior_source(restorer: Restorer, info: RunInfo, stores: Sequence[str | Path] | None = None,
                 students: Sequence[str | Path] | None = None, device: str | torch.device = "cpu"
                 ) -> tuple[Callable[[Path, Any], list[Tensor]] | None, str]:
    """Where a model's raw priors come from at inference, and a phrase saying so.

    In order: ``stores`` (``--priors``), the `chosen_students`, else the encoder recorded with
    the model (which needs its weights and the extract extra). None when the model takes no priors.
    """
    if not restorer.needs_priors:
        return None, "no priors"
    if stores and students:
        raise PtgError("give either --priors (stores) or --prior-from (distilled students), not both")
    if stores:
        return StorePriors(info.priors, stores), "from --priors"
    dists = chosen_students(info, stores, students)
    if dists:
        return student_priors(dists, info.priors, device), f"computed by the distilled student(s) {', '.join(map(str, dists))}"
    return EncoderPriors(info.priors, str(device), info.recorded_in), "computed with the recorded encoder"


class StorePriors:
    """Priors read from stores, keyed by the SHA-256 of the degraded image file's bytes."""

    def __init__(self, entries: Sequence[PriorStoreInfo], overrides: Sequence[str | Path] | None = None):
        """Open the stores a model was trained with.

        Args:
            entries: the stores the model was trained on (`RunInfo.priors`).
            overrides: other store paths, one per entry, in the same order (``--priors``); each
                must hold priors of the same encoder weights (fingerprint) as the one trained on.

        Raises:
            PtgError: wrong number of overrides, a missing store, another encoder's store.
        """
        from ptg.pipeline.storage.store import open_priors

        entries = _store_entries(entries)
        paths = [e.path for e in entries] if not overrides else list(overrides)
        if len(paths) != len(entries):
            raise PtgError(f"the model takes {len(entries)} prior(s) (stores {', '.join(e.path for e in entries)}); "
                           f"--priors gave {len(paths)}. Give one --priors per store, in the same order")
        self.readers = []
        for e, path in zip(entries, paths):
            reader = open_priors(path, expect_fingerprint=e.fingerprint)
            if reader.dim != e.dim:
                raise PtgError(f"the priors store {path} holds {reader.dim}-d priors; the model was trained on {e.dim}-d ones from {e.path}")
            self.readers.append(reader)

    def __call__(self, path: Path, img=None) -> list[Tensor]:
        """Priors ``[1, D_i]`` of the image file ``path`` (its pixels are not needed)."""
        from ptg.pipeline.core.fsio import file_sha256

        key = file_sha256(path)
        out = []
        for r in self.readers:
            if r.missing([key]):
                raise PtgError(f"no prior for {path} in the store {r.path} (key {key[:16]}...). Run `ptg extract-priors` "
                               f"on a manifest holding this image with --out {r.path}, or omit --priors so that "
                               "`ptg restore` computes it with the recorded encoder")
            out.append(torch.from_numpy(r.get([key], view="identity")))
        return out


def _recorded_spec(spec_d: Any, store: str, device: str):
    """The `EncoderSpec` a store's metadata records, its fields type-checked (a shared file)."""
    from dataclasses import replace

    from ptg.pipeline.encoders import EncoderSpec
    from ptg.pipeline.core.limits import Optional_ as Opt
    from ptg.pipeline.core.limits import check_schema

    check_schema(spec_d, {"name": str, "arch": Opt(str), "pretrained": Opt(str), "random_init": Opt(bool), "seed": Opt(int),
                          "timestep": Opt(int), "size": Opt(int), "device": Opt(str)}, f"the encoder spec of the store {store}")
    try:
        return replace(EncoderSpec(**spec_d), device=device)
    except TypeError as exc:  # keys this version's EncoderSpec lacks: a damaged or crafted file
        raise PtgError(f"the encoder spec recorded for the store {store} is not one ptg wrote ({exc}); "
                       "pass --priors STORE to read priors instead") from None


class EncoderPriors:
    """Priors computed on the fly with the encoder recorded in the checkpoint's store metadata.

    Rebuilds each encoder from its recorded `EncoderSpec`, checks that the weights fingerprint and
    the pinned preprocessing are the ones the model was trained with, and rounds each vector to
    the store's dtype (float16 by default), so the model sees the values it was trained on.
    Needs the ``extract`` extra (timm, open_clip, ...).
    """

    def __init__(self, entries: Sequence[PriorStoreInfo], device: str = "cpu", recorded_in: str | Path | None = None):
        """``recorded_in``: the file the entries were read from; only when it is yours (`fsio.written_by_you`)
        are local weight or architecture files it names opened."""
        from ptg.pipeline.encoders import build_encoder
        from ptg.pipeline.core.fsio import refuse_recorded_path, written_by_you

        self.encoders = []
        for e in _store_entries(entries):
            enc_meta = e.encoder
            spec_d = enc_meta.get("spec")
            if not spec_d:
                raise PtgError(f"the store {e.path} records no encoder spec; pass --priors STORE to read priors instead")
            spec = _recorded_spec(spec_d, e.path, device)
            if not (recorded_in and written_by_you(recorded_in)):  # a teammate's file: no local path it names is opened
                refuse_recorded_path(spec.pretrained, f"the encoder weights recorded for the store {e.path}")
                refuse_recorded_path(spec.arch, f"the encoder architecture recorded for the store {e.path}")
            try:
                enc = build_encoder(spec)
            except ImportError as exc:
                raise PtgError(
                    f"computing {enc_meta.get('name', spec.name)!r} priors needs the library {exc.name or exc}, which is not "
                    "installed: install ptg's extract extra (open_clip_torch, timm, transformers, diffusers), "
                    "or pass --priors STORE with priors extracted elsewhere"
                ) from exc
            if enc.fingerprint != e.fingerprint:
                raise PtgError(f"the {spec.name} encoder built here has weights {enc.fingerprint[:16]}..., but the model was trained "
                               f"on priors from weights {str(e.fingerprint)[:16]}... ({enc_meta.get('source')}); "
                               "make those weights available or pass --priors STORE")
            if enc.preprocess.to_dict() != enc_meta.get("preprocessing"):
                raise PtgError(f"the {spec.name} encoder's preprocessing differs from the one recorded in {e.path}; "
                               "the priors would not match training. Pass --priors STORE")
            self.encoders.append((enc, e.dtype))

    def __call__(self, path: Path | None, img) -> list[Tensor]:
        """Priors ``[1, D_i]`` of an H×W×3 float image (the file path is not needed)."""
        from ptg.pipeline.encoders import apply_preprocess

        out = []
        with torch.inference_mode():
            for enc, dtype in self.encoders:
                x = apply_preprocess(img, enc.preprocess)[None].to(enc.spec.device)  # [1, 3, S, S]
                g = enc.forward(x).float().cpu()  # [1, D]
                out.append(g.to(getattr(torch, dtype)).float())  # the store's rounding
        return out





def priors_by_index(restorer: Restorer, priors_for: Callable[[Path, Any], list[Tensor]] | None,
                    paths: Sequence[Path], read: Callable[[Path], Any]) -> Callable[[int, Any], list[Tensor] | None]:
    """``get(i, pixels_i)``: the raw priors image i of an evaluated set receives under the run's control.

    Under ``shuffle`` image i gets image ``d[i]``'s prior (the seeded derangement over this set,
    the same as in validation); under zero/constant nothing is read.

    Args:
        restorer: the model (its transform decides).
        priors_for: ``(file, pixels) -> raw priors`` (`StorePriors`, `EncoderPriors`) or None.
        paths: the set's degraded image files, in order.
        read: reads a file's pixels (only called for another image's prior under shuffle).
    """
    if not restorer.needs_priors:
        return lambda i, img: None
    if priors_for is None:
        raise PtgError("this model needs the images' priors: pass --priors STORE")
    order = restorer.transform.order(len(paths))

    def get(i: int, img: Any) -> list[Tensor]:
        j = int(order[i])
        return priors_for(paths[j], img if j == i else read(paths[j]))

    return get


def restore_each(restorer: Restorer, items: Iterable[tuple[Tensor, Sequence[Tensor] | None, str]], *,
                 tile: int | None = None, overlap: int = 32, device: str | torch.device = "cpu",
                 budget: int | None = None) -> Iterator[tuple[Tensor, Tensor | None, float]]:
    """The one restore loop (`ptg eval`, `ptg restore` and training's validation): each
    ``(x [1, 3, H, W], raw priors, name)`` through `restore_image`, in order.

    Yields:
        (F's output, R's output or None, seconds of the forward) per item.
    """
    for x, g, name in items:
        t0 = time.perf_counter()
        (f_out, r_out), _ = restore_image(restorer, x, g, tile=tile, overlap=overlap, device=device, budget=budget,
                                          name=name)
        yield f_out, r_out, time.perf_counter() - t0


def restore_files(model: Restorer | Callable[[Tensor, Any], Any], paths: Sequence[Path],
                  priors_for: Callable[[Path, Any], list[Tensor]] | None, *, tile: int | None = None, overlap: int = 32,
                  device: str | torch.device = "cpu", max_memory: str | None = "auto", multiple: int = 1,
                  read: Callable[[Path], Any] | None = None) -> Iterator[tuple[Any, Tensor, Tensor | None, float]]:
    """`restore_each` over image files, with each file's priors.

    A `Restorer` gets its prior control over the whole set (`priors_by_index`) and automatic
    tiling under ``max_memory``; any other ``model(x, priors) -> (F out, R out)`` is wrapped as
    an F with no R and no priors of its own (padded to ``multiple``), so it runs the same loop.

    Yields:
        (the degraded image H×W×3 float, F's output ``[1, 3, H, W]``, R's output or None, seconds).
    """
    from ptg.pipeline.core.imageio import read_image

    read = read or read_image
    if isinstance(model, Restorer):
        restorer, prior_of = model, priors_by_index(model, priors_for, paths, read)
        budget = memory_budget(max_memory, device) if tile is None and max_memory is not None else None
    else:
        restorer = _CallableModel(model, multiple)
        prior_of = lambda i, img: priors_for(paths[i], img) if priors_for else None  # noqa: E731
        budget = None
    images: list[Any] = []

    def items() -> Iterator[tuple[Tensor, Any, str]]:
        for i, path in enumerate(paths):
            img = read(path)
            images.append(img)
            yield image_to_tensor(img), prior_of(i, img), str(path)

    for f_out, r_out, seconds in restore_each(restorer, items(), tile=tile, overlap=overlap, device=device,
                                              budget=budget):
        yield images.pop(), f_out, r_out, seconds


class _CallableModel:
    """A plain ``model(x, priors) -> (F out, R out | None)`` with the interface `restore_image` uses."""

    def __init__(self, model: Callable[[Tensor, Any], Any], multiple: int):
        self.model, self.multiple, self.bytes_per_pixel = model, multiple, None

    def restore(self, x: Tensor, g: Any) -> Any:
        return self.model(x, g)
