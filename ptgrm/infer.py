"""Inference of a trained model: `Restorer` (F -> R with the run's prior transform), where its
priors come from (stores, the recorded encoder, distilled students), and `restore_image`, which
tiles an image automatically when it would exceed the memory budget.

Padding, tiling and the memory estimate live in `ptg.ptgrm.tiling` (re-exported here); its module
docstring says where tiling changes results.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ptg.pipeline.errors import PtgError

from .priors import PriorTransform
from .tiling import (RestoreFn, bytes_per_pixel, check_tiling, image_to_tensor, memory_budget,  # noqa: F401 (re-exported)
                     plan_tile, required_multiple, run_padded_tiled, tensor_to_image, tile_starts)

def restore_image(restorer: "Restorer", x: Tensor, raw_priors: Sequence[Tensor] | None, *, tile: int | None = None,
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
            restorer.bytes_per_pixel = bytes_per_pixel(fn, restorer.multiple, restorer, device)
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


def _store_entries(entries: Sequence[dict]) -> list[dict]:
    if not entries:
        raise PtgError("this checkpoint records no priors stores; it was trained without priors")
    return list(entries)


def prior_source(restorer: "Restorer", stores: Sequence[str | Path] | None = None,
                 students: Sequence[str | Path] | None = None, device: str | torch.device = "cpu"
                 ) -> tuple[Callable[[Path, Any], list[Tensor]] | None, str]:
    """Where a model's raw priors come from at inference, and a phrase saying so.

    In order: ``stores`` (``--priors``), ``students`` (``--prior-from``, `ptg distill` folders), the
    students inside an export folder, else the encoder recorded with the model (which needs its
    weights and the extract extra). None when the model takes no priors.
    """
    if not restorer.needs_priors:
        return None, "no priors"
    entries = restorer.info["priors"]
    if stores and students:
        raise PtgError("give either --priors (stores) or --prior-from (distilled students), not both")
    if stores:
        return StorePriors(entries, stores), "from --priors"
    students = list(students or restorer.info.get("students") or [])
    if students:
        from .distill import student_priors

        return student_priors(students, entries, device), f"computed by the distilled student(s) {', '.join(map(str, students))}"
    return EncoderPriors(entries, str(device)), "computed with the recorded encoder"


class StorePriors:
    """Priors read from stores, keyed by the SHA-256 of the degraded image file's bytes."""

    def __init__(self, entries: Sequence[dict], overrides: Sequence[str | Path] | None = None):
        """Open the stores a model was trained with.

        Args:
            entries: the checkpoint's ``priors`` list (path, dim, views, metadata per store).
            overrides: other store paths, one per entry, in the same order (``--priors``); each
                must hold priors of the same encoder weights (fingerprint) as the one trained on.

        Raises:
            PtgError: wrong number of overrides, a missing store, another encoder's store.
        """
        from ptg.pipeline.store import open_priors

        entries = _store_entries(entries)
        paths = [e["path"] for e in entries] if not overrides else list(overrides)
        if len(paths) != len(entries):
            raise PtgError(f"the model takes {len(entries)} prior(s) (stores {', '.join(str(e['path']) for e in entries)}); "
                           f"--priors gave {len(paths)}. Give one --priors per store, in the same order")
        self.readers = []
        for e, path in zip(entries, paths):
            reader = open_priors(path, expect_fingerprint=e["metadata"].get("fingerprint"))
            if reader.dim != int(e["dim"]):
                raise PtgError(f"the priors store {path} holds {reader.dim}-d priors; the model was trained on {e['dim']}-d ones from {e['path']}")
            self.readers.append(reader)

    def __call__(self, path: Path, img=None) -> list[Tensor]:
        """Priors ``[1, D_i]`` of the image file ``path`` (its pixels are not needed)."""
        from ptg.pipeline.fsio import file_sha256

        key = file_sha256(path)
        out = []
        for r in self.readers:
            if r.missing([key]):
                raise PtgError(f"no prior for {path} in the store {r.path} (key {key[:16]}...). Run `ptg extract-priors` "
                               f"on a manifest holding this image with --out {r.path}, or omit --priors so that "
                               "`ptg restore` computes it with the recorded encoder")
            out.append(torch.from_numpy(r.get([key], view="identity")))
        return out


class EncoderPriors:
    """Priors computed on the fly with the encoder recorded in the checkpoint's store metadata.

    Rebuilds each encoder from its recorded `EncoderSpec`, checks that the weights fingerprint and
    the pinned preprocessing are the ones the model was trained with, and rounds each vector to
    the store's dtype (float16 by default), so the model sees the values it was trained on.
    Needs the ``extract`` extra (timm, open_clip, ...).
    """

    def __init__(self, entries: Sequence[dict], device: str = "cpu"):
        from dataclasses import replace

        from ptg.pipeline.encoders import EncoderSpec, build_encoder
        from ptg.pipeline.fsio import refuse_recorded_path

        self.encoders = []
        for e in _store_entries(entries):
            meta = e["metadata"]
            enc_meta = meta.get("encoder") or {}
            spec_d = enc_meta.get("spec")
            if not spec_d:
                raise PtgError(f"the store {e['path']} records no encoder spec; pass --priors STORE to read priors instead")
            spec = replace(EncoderSpec(**spec_d), device=device)
            refuse_recorded_path(spec.pretrained, f"the encoder weights recorded for the store {e['path']}")
            try:
                enc = build_encoder(spec)
            except ImportError as exc:
                raise PtgError(
                    f"computing {enc_meta.get('name', spec.name)!r} priors needs the library {exc.name or exc}, which is not "
                    "installed: install ptg's extract extra (open_clip_torch, timm, transformers, diffusers), "
                    "or pass --priors STORE with priors extracted elsewhere"
                ) from exc
            if enc.fingerprint != meta.get("fingerprint"):
                raise PtgError(f"the {spec.name} encoder built here has weights {enc.fingerprint[:16]}..., but the model was trained "
                               f"on priors from weights {str(meta.get('fingerprint'))[:16]}... ({enc_meta.get('source')}); "
                               "make those weights available or pass --priors STORE")
            if enc.preprocess.to_dict() != enc_meta.get("preprocessing"):
                raise PtgError(f"the {spec.name} encoder's preprocessing differs from the one recorded in {e['path']}; "
                               "the priors would not match training. Pass --priors STORE")
            self.encoders.append((enc, meta.get("dtype", "float32")))

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


# ---------------------------------------------------------------------------------------------
# F -> R with the prior transform: the one forward of training, validation, eval and restore


class Restorer(nn.Module):
    """F and R (or a "-f" F carrying R) with the run's `PriorTransform`.

    One module, so one DistributedDataParallel wrapper syncs both networks in training.
    `forward` takes transformed priors (training, where the dataset transforms them with its
    regularisers); `restore` takes raw store vectors and applies the transform (inference).

    Attributes:
        f: the restoration network F.
        r: R, or None (F alone, or a "-f" F).
        f_kind: "restorer" or "feature-refiner" (F takes the priors itself).
        transform: the prior transform (dims () when no priors are used).
        train_f: whether F is trained (False in refine mode: F runs under no_grad).
        info: provenance (source file, step, mode, config, priors stores, which weights).
    """

    def __init__(self, f: nn.Module, r: nn.Module | None, transform: PriorTransform, f_kind: str = "restorer",
                 train_f: bool = True, info: dict[str, Any] | None = None):
        super().__init__()
        self.f = f
        self.r = r
        self.f_kind = f_kind
        self.transform = transform
        self.train_f = train_f
        self.info = dict(info or {})
        self.bytes_per_pixel: float | None = None  # inference memory estimate, measured on first use (`restore_image`)

    @property
    def uses_priors(self) -> bool:
        """Whether F or R takes priors at all."""
        return bool(self.transform.dims) and (self.r is not None or self.f_kind == "feature-refiner")

    @property
    def needs_priors(self) -> bool:
        """Whether the images' own raw priors must be supplied (not for the zero/constant controls)."""
        return self.uses_priors and self.transform.needs_input

    @property
    def multiple(self) -> int:
        return required_multiple(self.f, self.r)

    def forward(self, x: Tensor, priors: Sequence[Tensor]) -> tuple[Tensor, Tensor | None]:
        # x: [B, 3, H, W]; priors: transformed, one [B, D_i] per store -> (Ihat, Ibar or None), [B, 3, H, W]
        if self.f_kind == "feature-refiner":
            return self.f(x, list(priors)), None
        if self.train_f:
            ihat = self.f(x)
        else:
            with torch.no_grad():  # refine mode: F is frozen, R learns on top of its output
                ihat = self.f(x)
        if self.r is None:
            return ihat, None
        return ihat, self.r(ihat, x, list(priors)).out

    @torch.no_grad()
    def restore(self, x: Tensor, raw_priors: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """Run F (and R) on a batch.

        Args:
            x: ``[B, 3, H, W]`` degraded images in [0, 1].
            raw_priors: raw store vectors, one ``[B, D_i]`` per store (None when unused or for the
                zero/constant controls); under shuffle, already the other images' priors (see
                `PriorTransform.order`).

        Returns:
            (F's output, R's output or None), both ``[B, 3, H, W]``.
        """
        device = next(self.f.parameters()).device
        x = x.to(device)
        g = self.transform(raw_priors, x.shape[0], device) if self.uses_priors else []
        return self(x, g)

    # -- loading

    @classmethod
    def load(cls, source: str | Path, device: str | torch.device = "cpu", prefer: str = "best",
             trusted: Sequence[str] = ()) -> "Restorer":
        """From an `ptg export` folder, a run folder (best.pt, else last.pt) or a checkpoint file."""
        from .export import EXPORT_CONFIG, load_export

        p = Path(source)
        if p.is_dir() and (p / EXPORT_CONFIG).is_file():
            return load_export(p, device)
        return cls.from_checkpoint(p, device, prefer, trusted)

    @classmethod
    def from_checkpoint(cls, source: str | Path, device: str | torch.device = "cpu", prefer: str = "best",
                        trusted: Sequence[str] = (), use_ema: bool = True) -> "Restorer":
        """F (and R) of a `ptg train` checkpoint file or run folder, EMA weights when kept."""
        from .train.checkpoint import build_network, load_checkpoint, resolve_checkpoint

        path = resolve_checkpoint(source, prefer)
        ck = load_checkpoint(path)
        ema = ck.get("ema") or {}
        f_sd, r_sd, weights = ck["baseline"]["state_dict"], (ck.get("refiner") or {}).get("state_dict"), "raw"
        if use_ema and ema.get("baseline") is not None and ck["mode"] != "refine":
            f_sd, weights = ema["baseline"], "ema"
        if use_ema and ema.get("refiner") is not None:
            r_sd, weights = ema["refiner"], "ema"
        f = build_network(ck["baseline"]["name"], ck["baseline"]["args"], f_sd, trusted)
        r = None if ck.get("refiner") is None else build_network(ck["refiner"]["name"], ck["refiner"]["args"], r_sd, trusted)
        transform = transform_of(ck)
        info = {"source": str(path), "step": int(ck["step"]), "mode": ck["mode"], "weights": weights,
                "config": ck.get("config") or {}, "priors": list(ck.get("priors") or []),
                "baseline": {k: ck["baseline"][k] for k in ("name", "args", "kind") if k in ck["baseline"]},
                "refiner": None if r is None else {k: ck["refiner"][k] for k in ("name", "args")}}
        kind = ck["baseline"].get("kind", "restorer")
        return cls(f, r, transform, kind, info=info).to(device).eval()


def transform_of(ck: dict[str, Any]) -> PriorTransform:
    """The checkpoint's prior transform (older checkpoints: from their config's priors section)."""
    if ck.get("prior_transform"):
        return PriorTransform.from_state_dict(ck["prior_transform"])
    pcfg = (ck.get("config") or {}).get("priors") or {}
    dims = tuple(int(p["dim"]) for p in ck.get("priors") or [])
    normalize = pcfg.get("normalize") or ("l2" if pcfg.get("l2_normalize", True) else "none")
    control = pcfg.get("control", "real")
    if control in ("constant",) or normalize == "standardize":
        raise PtgError("this checkpoint records no prior statistics; it cannot be used with its control/normalisation")
    return PriorTransform(dims, normalize, control, int((ck.get("config") or {}).get("seed", 0)))


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
