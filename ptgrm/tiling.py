"""Whole-image and tiled inference with padding, and the memory budget that decides tiling.

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

from ptg.pipeline.core.errors import PtgError

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
# measured by a 128² probe forward: skip connections and allocator slack are what the factor
# covers (its calibration: docs/RESULTS.md, "Numbers behind defaults in the code"; a test checks
# the estimate stays above the real peak).
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


def image_to_tensor(img) -> Tensor:
    """H×W×3 float [0, 1] numpy image → ``[1, 3, H, W]`` float32 tensor."""
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous().float()


def tensor_to_image(t: Tensor):
    """``[1, 3, H, W]`` tensor → H×W×3 float32 numpy image clipped to [0, 1]."""
    return t[0].clamp(0, 1).permute(1, 2, 0).contiguous().numpy()
