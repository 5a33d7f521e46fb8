"""Pixels of a training batch: the float32 values `read_image` gives, from any stored block.

`to_tensor`/`write_float` turn a decoded or stored H×W×C block into float32 C×H×W with the very
cast and division of `ptg.pipeline.core.imageio.read_image`, so the image store and the files give the
same bits. `to_float` does the same on the device for a raw uint8 batch, turning each crop into its
drawn dihedral view there (`VIEW_CODES`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ptg.pipeline.storage import imagestore


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """float32 CHW of an HWC block: a float32 decoded image, or a stored integer block (or view of one)."""
    out = np.empty((img.shape[2], img.shape[0], img.shape[1]), np.float32)
    write_float(out, img)
    return torch.from_numpy(out)


def write_float(out: np.ndarray, img: np.ndarray) -> None:
    """Write `to_tensor`'s float32 C×H×W values of the H×W×C block `img` into `out` (a batch slot's row).

    A 1-channel stored block (a gray file) fills every channel of a 3-channel `out`, as `read_image`
    replicates gray."""
    scale = imagestore.SCALE.get(img.dtype.name)
    if scale is None:  # a float decoded image (or float16 F output): the values, cast exactly
        np.copyto(out, img.transpose(2, 0, 1))
    else:  # integers cast to float32 (exact), then read_image's own float32 division: the bits of decoding the file
        np.divide(img.transpose(2, 0, 1), np.float32(scale), out=out, dtype=np.float32)


_LUT8 = np.arange(256, dtype=np.float32) / np.float32(255)  # read_image's values of the 256 uint8 levels
_LUT_ON: dict[torch.device, torch.Tensor] = {}


# The dihedral views of a [C, H, W] tensor, each equal to `ptg.pipeline.datasets.views`'s numpy view of the
# H×W×C array (torch.rot90 turns from the first dim towards the second, as numpy.rot90 does).
_TORCH_VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda t: t,
    "hflip": lambda t: t.flip(-1),
    "vflip": lambda t: t.flip(-2),
    "hvflip": lambda t: t.flip(-2, -1),
    "rot90": lambda t: torch.rot90(t, 1, dims=(-2, -1)),
    "rot180": lambda t: torch.rot90(t, 2, dims=(-2, -1)),
    "rot270": lambda t: torch.rot90(t, 3, dims=(-2, -1)),
    "transpose": lambda t: t.transpose(-2, -1),
    "antitranspose": lambda t: torch.rot90(t, 2, dims=(-2, -1)).transpose(-2, -1),
}
VIEW_CODES = tuple(_TORCH_VIEWS)  # a raw batch names each crop's view by its index here


def to_float(t: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
    """float32 [B, C, H, W] of a batch: a uint8 batch (`TrainDataset` with ``raw``: B×H×W×C crops, each
    still to be turned into its drawn view, ``views`` = indices into `VIEW_CODES`) through a lookup
    table of `read_image`'s own values (so on any device the bits are those of decoding the file);
    a float batch unchanged. Call it after the copy to the device: a uint8 batch is a quarter of the
    bytes, and the view and layout change cost nothing there (on the CPU, copying a flipped or
    transposed uint8 crop costs 10x a plain one)."""
    if t.dtype != torch.uint8:
        return t
    if t.device.type == "cpu":
        f = torch.from_numpy(_LUT8[t.numpy()])
    else:
        lut = _LUT_ON.get(t.device)
        if lut is None:
            lut = _LUT_ON[t.device] = torch.from_numpy(_LUT8).to(t.device)
        f = lut[t.long()]
    f = f.permute(0, 3, 1, 2)  # B×H×W×C -> B×C×H×W
    if views is not None:
        f = torch.stack([_TORCH_VIEWS[VIEW_CODES[int(v)]](img) for img, v in zip(f, views.tolist())])
    return f.contiguous()
