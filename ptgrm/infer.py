"""Whole-image and tiled inference for F and F + R, with padding and bounded memory.

`run_padded_tiled(fn, x, ...)` runs a restoration callable on one image. ``fn`` takes a batch
``[1, 3, h, w]`` and returns one tensor or a tuple of tensors (or None entries) of the same
spatial size, e.g. ``(F(x), R(F(x), x, g))``; every returned image is stitched separately.

Padding. The image is first padded on the bottom/right (replicate, as the models themselves do)
to a multiple of ``multiple`` (the largest down-sampling factor of F and R), and the output is
cropped back. Padding the whole image once, before tiling, makes every tile see the same pixels
it would see in the untiled run.

Tiling (``tile=T, overlap=O``). Tiles of T×T are laid over the padded image with stride T − O;
the last tile in each direction is moved back to end exactly at the image border, so every tile
is full size. Each output pixel is taken from exactly one tile (no averaging): the one whose
inner edge is farthest away, i.e. the boundary between two tiles is the middle of their
overlap. Every kept pixel therefore lies at least ⌊O/2⌋ pixels from any edge of its tile that
is not an image border. Only one tile is on the device at a time; the stitched outputs live on
the CPU, so peak model memory is that of one T×T forward, whatever the image size.

Where tiling changes results:

- A purely local model (stacked convolutions, e.g. DnCNN) with receptive-field radius r gives
  bit-for-bit the untiled output when ⌊O/2⌋ ≥ r (tested with a 3×3 conv).
- F or R with anything global over the image differs, however large the overlap:
  * R's PTG-CSA channel attention pools ``fhat`` globally (O(fhat)); a tile pools only itself.
  * R's position embeddings Sm and Sc are a linspace grid over the tile, not over the image, so
    a pixel gets a different coordinate in every tile it falls in.
  * R's encoder InstanceNorm normalises with the tile's mean and variance; NAFNet's simplified
    channel attention (as F) pools the tile.
  * Restormer blocks (R's long-range branch, Restormer as F) attend across channels with
    covariances over all positions of the tile: global within the tile.
  * The prior g is computed once from the whole image and given to every tile.
  * Stride-2 encoders see a different phase when a tile's offset is not a multiple of their
    total stride; keep O a multiple of ``multiple`` (T already must be) to avoid it.
  Large tiles (≥ 512) and overlaps of 32 or more keep the difference small in practice; the
  reported paper numbers are for untiled inference, which stays the default.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ptg.pipeline.errors import PtgError

from .priors import PriorTransform

RestoreFn = Callable[[Tensor], "Tensor | Sequence[Tensor | None]"]


def required_multiple(*modules: object) -> int:
    """Least common multiple of the ``multiple`` attributes of the given models (1 if none).

    Args:
        *modules: models (or None); those with an int ``multiple`` attribute pad to it.
    """
    m = 1
    for mod in modules:
        k = getattr(mod, "multiple", None) if mod is not None else None
        if isinstance(k, int) and k > 0:
            m = math.lcm(m, k)
    return m


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of full-size tiles covering ``length`` with at least ``overlap`` overlap.

    The last tile ends exactly at ``length`` (it may overlap its neighbour by more than asked).
    """
    if tile >= length:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _owned_ranges(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """For each tile, the [lo, hi) range of output coordinates it supplies (middle-of-overlap cuts)."""
    if len(starts) == 1:
        return [(0, min(tile, length))]
    cuts = [0]
    for a, b in zip(starts[:-1], starts[1:]):
        cuts.append((b + a + tile) // 2)  # middle of the overlap [b, a + tile)
    cuts.append(length)
    return [(cuts[i], cuts[i + 1]) for i in range(len(starts))]


def _as_tuple(out: Tensor | Sequence[Tensor | None]) -> tuple[Tensor | None, ...]:
    return (out,) if isinstance(out, Tensor) else tuple(out)


def check_tiling(tile: int | None, overlap: int, multiple: int = 1) -> None:
    """Raise a PtgError for tile/overlap values that cannot work."""
    if tile is None:
        return
    if tile < 8:
        raise PtgError(f"--tile {tile} is too small; use at least 8 pixels (e.g. --tile 512)")
    if tile % multiple:
        raise PtgError(f"--tile {tile} must be a multiple of {multiple} (the models' down-sampling factor); try --tile {tile - tile % multiple or multiple}")
    if overlap < 0 or overlap >= tile:
        raise PtgError(f"--overlap {overlap} must be >= 0 and smaller than --tile {tile}")


@torch.inference_mode()
def run_padded_tiled(
    fn: RestoreFn,
    x: Tensor,
    multiple: int = 1,
    tile: int | None = None,
    overlap: int = 32,
    device: str | torch.device = "cpu",
) -> tuple[Tensor | None, ...]:
    """Restore one image, whole or tile by tile.

    Args:
        fn: ``fn([1, 3, h, w]) -> tensor or tuple of tensors/None``, each ``[1, C, h, w]``.
        x: the degraded image ``[1, 3, H, W]`` (any device; tiles are moved to ``device``).
        multiple: pad H and W (bottom/right, replicate) to a multiple of this first.
        tile: tile side T, or None for one whole-image forward.
        overlap: overlap O between neighbouring tiles (see the module docstring).
        device: where ``fn`` runs.

    Returns:
        The outputs of ``fn`` stitched to ``[1, C, H, W]`` on the CPU (float32), None where
        ``fn`` returned None.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise PtgError(f"run_padded_tiled takes one image [1, C, H, W], got {tuple(x.shape)}")
    check_tiling(tile, overlap, multiple)
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x
    hp, wp = xp.shape[-2:]

    if tile is None or (tile >= hp and tile >= wp):
        outs = _as_tuple(fn(xp.to(device)))
        return tuple(None if o is None else o[..., :h, :w].float().cpu() for o in outs)

    th, tw = min(tile, hp), min(tile, wp)
    ys, xs = tile_starts(hp, th, overlap), tile_starts(wp, tw, overlap)
    rows, cols = _owned_ranges(ys, th, hp), _owned_ranges(xs, tw, wp)
    canvases: list[Tensor | None] | None = None
    for y0, (r_lo, r_hi) in zip(ys, rows):
        for x0, (c_lo, c_hi) in zip(xs, cols):
            piece = xp[..., y0 : y0 + th, x0 : x0 + tw].to(device)
            outs = _as_tuple(fn(piece))
            if canvases is None:  # allocated once the number and channels of the outputs are known
                canvases = [None if o is None else torch.zeros(1, o.shape[1], hp, wp) for o in outs]
            for canvas, o in zip(canvases, outs):
                if canvas is None or o is None:
                    continue
                if o.shape[-2:] != piece.shape[-2:]:
                    raise PtgError(f"the model returned {tuple(o.shape)} for a tile of {tuple(piece.shape)}; tiling needs same-size outputs")
                canvas[..., r_lo:r_hi, c_lo:c_hi] = o[..., r_lo - y0 : r_hi - y0, c_lo - x0 : c_hi - x0].float().cpu()
    assert canvases is not None
    return tuple(None if c is None else c[..., :h, :w] for c in canvases)


# ---------------------------------------------------------------------------------------------
# Memory budget and automatic tiling

# Peak inference memory ≈ _SAFETY × (the largest input + output of any single layer), per pixel,
# measured by a 128² probe forward. Calibrated here (CPU, float32, UNet or NAFNet F + PTG-RM at
# 512² and 1024²): the real peak growth was 0.45–0.7 of this estimate (it varies by up to 20 %
# from run to run with the allocator); skip connections and allocator slack are what it covers.
_SAFETY = 6.0
_PROBE = 128
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def memory_budget(spec: str, device: str | torch.device = "cpu") -> int:
    """Bytes an image's inference may use: ``spec`` as "auto" or a size like "8GiB", "500MB".

    "auto" is 80 % of the free memory of a CUDA device, or half of the available RAM on the CPU
    (MemAvailable in /proc/meminfo, else the physical memory).
    """
    text = str(spec).strip().lower().replace(" ", "")
    if text != "auto":
        num = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(num):]
        try:
            value = float(num) * _UNITS[unit]
        except (ValueError, KeyError):
            raise PtgError(f"--max-memory {spec!r} is not a size; use auto or e.g. 8GiB, 500MiB, 2GB") from None
        if value <= 0:
            raise PtgError(f"--max-memory {spec!r} must be positive")
        return int(value)
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(0.8 * free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 // 2
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def bytes_per_pixel(fn: RestoreFn, multiple: int, modules: nn.Module, device: str | torch.device) -> float:
    """Estimated peak inference bytes per input pixel of ``fn`` (one probe forward, see `_SAFETY`)."""
    side = math.ceil(_PROBE / multiple) * multiple
    largest = [0]

    def hook(_m: nn.Module, inputs: tuple, output: Any) -> None:
        outs = output if isinstance(output, (tuple, list)) else (output,)
        n = sum(t.numel() * t.element_size() for t in (*inputs, *outs) if isinstance(t, Tensor))
        largest[0] = max(largest[0], n)

    handles = [m.register_forward_hook(hook) for m in modules.modules()]
    try:
        with torch.inference_mode():
            fn(torch.zeros(1, 3, side, side, device=device))
    finally:
        for h in handles:
            h.remove()
    return _SAFETY * largest[0] / (side * side)


def plan_tile(bpp: float, h: int, w: int, multiple: int, overlap: int, budget: int) -> int | None:
    """None when the whole (padded) image fits ``budget``, else the largest tile side that does.

    Raises:
        PtgError: not even a tile of ``2 × overlap`` pixels fits.
    """
    hp, wp = math.ceil(h / multiple) * multiple, math.ceil(w / multiple) * multiple
    if bpp * hp * wp <= budget:
        return None
    side = int(math.sqrt(budget / bpp)) // multiple * multiple
    smallest = max(2 * overlap + multiple, 8)
    if side < smallest:
        raise PtgError(f"an image of {w}x{h} needs about {bpp * hp * wp / 2**30:.1f} GiB and even a {smallest}-pixel "
                       f"tile exceeds the memory budget of {budget / 2**20:.0f} MiB; raise --max-memory or lower --overlap")
    return side


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
    import warnings

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
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, torch.OutOfMemoryError) and "alloc" not in str(exc) and "out of memory" not in str(exc):
            raise
        raise PtgError(f"out of memory restoring {name} ({w}x{h}){f' with --tile {tile}' if tile else ''}: "
                       "pass a smaller --tile or a lower --max-memory") from None


def image_to_tensor(img) -> Tensor:
    """H×W×3 float [0, 1] numpy image → ``[1, 3, H, W]`` float32 tensor."""
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous().float()


def tensor_to_image(t: Tensor):
    """``[1, 3, H, W]`` tensor → H×W×3 float32 numpy image clipped to [0, 1]."""
    return t[0].clamp(0, 1).permute(1, 2, 0).contiguous().numpy()


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

        self.encoders = []
        for e in _store_entries(entries):
            meta = e["metadata"]
            enc_meta = meta.get("encoder") or {}
            spec_d = enc_meta.get("spec")
            if not spec_d:
                raise PtgError(f"the store {e['path']} records no encoder spec; pass --priors STORE to read priors instead")
            spec = replace(EncoderSpec(**spec_d), device=device)
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
