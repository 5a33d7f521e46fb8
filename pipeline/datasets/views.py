"""Views of an image whose priors a store caches: dihedral transforms and tiles.

The paper's authors compute the prior on the *augmented* crop at every training step. A cache
cannot run G per step, so it stores the prior of each view a trainer may use, and the trainer
applies the very same `apply_view` to its input and target before reading the matching prior.

View sets (``--views``):

- ``identity``: the image as it is.
- ``flips``: identity, hflip (left-right), vflip (up-down), hvflip (both = a 180° rotation).
- ``d4``: the 8 symmetries of the square: identity, rot90, rot180, rot270 (counter-clockwise,
  as `numpy.rot90`), hflip, vflip, transpose (swap H and W, main diagonal) and antitranspose
  (mirror across the other diagonal).
- ``tiles:N``: identity plus an N×N grid of tiles named ``tileN_r{i}c{j}`` (row i, column j).
  Tile i spans rows ``[i*H//N, (i+1)*H//N)`` (same for columns), so tiles cover the image
  exactly. A trainer on crops reads the tile under its crop's centre (`tile_view_for`).
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from ..core.errors import PtgError

# Every dihedral view as a function of an H×W×C array. hvflip and rot180 are the same pixels;
# both names are accepted so that "flips" reads naturally.
_DIHEDRAL = {
    "identity": lambda a: a,
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1, :],
    "hvflip": lambda a: a[::-1, ::-1],
    "rot90": lambda a: np.rot90(a, 1, axes=(0, 1)),
    "rot180": lambda a: np.rot90(a, 2, axes=(0, 1)),
    "rot270": lambda a: np.rot90(a, 3, axes=(0, 1)),
    "transpose": lambda a: a.transpose(1, 0, *range(2, a.ndim)),
    "antitranspose": lambda a: np.rot90(a, 2, axes=(0, 1)).transpose(1, 0, *range(2, a.ndim)),
}

VIEW_SETS: dict[str, tuple[str, ...]] = {
    "identity": ("identity",),
    "flips": ("identity", "hflip", "vflip", "hvflip"),
    "d4": ("identity", "rot90", "rot180", "rot270", "hflip", "vflip", "transpose", "antitranspose"),
}

_TILE_SET = re.compile(r"^tiles:(\d+)$")
_TILE_VIEW = re.compile(r"^tile(\d+)_r(\d+)c(\d+)$")
MAX_TILES = 16  # a 16×16 grid already means 257 forward passes per image


def tile_view_name(n: int, row: int, col: int) -> str:
    """Name of tile (row, col) of an n×n grid."""
    return f"tile{n}_r{row}c{col}"


def parse_tile_view(name: str) -> tuple[int, int, int] | None:
    """(N, row, column) of a tile view name ``tileN_r{i}c{j}``, or None for any other name."""
    m = _TILE_VIEW.match(name)
    return None if m is None else (int(m.group(1)), int(m.group(2)), int(m.group(3)))


def tile_grid(views: Sequence[str]) -> int:
    """N of a ``tiles:N`` view set (0 when the views hold no tiles)."""
    for v in views:
        t = parse_tile_view(v)
        if t is not None:
            return t[0]
    return 0


def parse_views(spec: str) -> tuple[str, ...]:
    """View names of a ``--views`` value: identity | flips | d4 | tiles:N.

    Raises:
        PtgError: an unknown view set or a bad tile count.
    """
    spec = spec.strip()
    if spec in VIEW_SETS:
        return VIEW_SETS[spec]
    m = _TILE_SET.match(spec)
    if m:
        n = int(m.group(1))
        if not 1 <= n <= MAX_TILES:
            raise PtgError(f"--views {spec!r}: the tile grid must be 1..{MAX_TILES} per side")
        return ("identity",) + tuple(tile_view_name(n, i, j) for i in range(n) for j in range(n))
    raise PtgError(f"unknown --views {spec!r}; use one of {', '.join(VIEW_SETS)} or tiles:N (e.g. tiles:4)")


def tile_bounds(h: int, w: int, n: int, row: int, col: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) pixel bounds, end-exclusive, of tile (row, col) of an n×n grid."""
    return row * h // n, (row + 1) * h // n, col * w // n, (col + 1) * w // n


def _grid_index(pos: int, size: int, n: int) -> int:
    # The tile i with i*size//n <= pos < (i+1)*size//n; starts are non-decreasing, so scan.
    pos = min(max(pos, 0), size - 1)
    i = min(pos * n // size, n - 1)
    while i > 0 and i * size // n > pos:
        i -= 1
    while i < n - 1 and (i + 1) * size // n <= pos:
        i += 1
    return i


def tile_view_for(h: int, w: int, n: int, top: int, left: int, crop_h: int, crop_w: int) -> str:
    """Name of the tile of an n×n grid over an h×w image that holds the centre of a crop.

    The crop's centre is ``(top + crop_h // 2, left + crop_w // 2)``.
    """
    if h < n or w < n:
        raise PtgError(f"an image of {w}x{h} is too small for a {n}x{n} tile grid")
    return tile_view_name(n, _grid_index(top + crop_h // 2, h, n), _grid_index(left + crop_w // 2, w, n))


def apply_view(img: np.ndarray, name: str) -> np.ndarray:
    """The view `name` of an H×W×C (or H×W) image, as a contiguous array.

    Dihedral views return the transformed image; tile views return the tile's pixels.

    Raises:
        PtgError: an unknown view name, or an image too small for its tile grid.
    """
    fn = _DIHEDRAL.get(name)
    if fn is not None:
        return np.ascontiguousarray(fn(img))
    tile = parse_tile_view(name)
    if tile is not None:
        n, row, col = tile
        if not (row < n and col < n):
            raise PtgError(f"tile view {name!r} lies outside its {n}x{n} grid")
        h, w = img.shape[:2]
        if h < n or w < n:
            raise PtgError(f"an image of {w}x{h} is too small for a {n}x{n} tile grid (view {name!r})")
        t, b, l, r = tile_bounds(h, w, n, row, col)
        return np.ascontiguousarray(img[t:b, l:r])
    raise PtgError(f"unknown view {name!r}; dihedral views are {', '.join(_DIHEDRAL)}, tiles are named like tile4_r0c1")
