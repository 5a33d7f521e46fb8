"""Validation images while training: input | F | F + R | target panels of a few fixed validation crops.

At every validation the first ``run.val_images`` validation images, centre-cropped to at most
``run.val_image_side`` pixels (the same crops every time, so steps compare), are restored by the networks
validation uses (the EMA weights when kept) and written as one PNG strip per image to
``RUN/val_images/step_XXXXXX/`` and to TensorBoard's images tab (tag ``val_images/<k>_<id>``, by
step), and to wandb when a run logs there (`Logs.images`). Each caption holds the crop's PSNR
against the target, so a strip is readable on its own.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ptg.pipeline.core.fsio import no_symlink
from ptg.pipeline.core.imageio import to_uint8, write_image

from .logs import Logs

MAX_VAL_IMAGES = 16  # run.val_images above this is refused: the images are for looking at, not for scoring
_CAPTION_H = 26  # pixels of the caption strip above each panel: two lines (name, PSNR), so 64 px panels fit them
_GAP = 4  # pixels between panels


def centre_crop(t: torch.Tensor, side: int) -> torch.Tensor:
    """The centre ``side``×``side`` (or smaller) crop of a ``[C, H, W]`` tensor."""
    h, w = t.shape[-2:]
    ch, cw = min(side, h), min(side, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return t[..., top : top + ch, left : left + cw]


def safe_name(text: str, limit: int = 60) -> str:
    """A file-name-safe form of a manifest id (ids may hold '/', spaces or anything else)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:limit] or "image"


def panel_strip(cols: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """Images side by side (H×W×3 float in [0, 1], same size) under captions of up to two lines
    (``"F\n27.31 dB"``); H'×W'×3 uint8."""
    from PIL import Image, ImageDraw

    h, w = cols[0][1].shape[:2]
    canvas = Image.new("RGB", (len(cols) * (w + _GAP) - _GAP, h + _CAPTION_H), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (label, img) in enumerate(cols):
        x0 = c * (w + _GAP)
        for i, line in enumerate(label.split("\n")[:2]):
            draw.text((x0 + 2, 1 + 12 * i), line, fill="black")
        canvas.paste(Image.fromarray(to_uint8(img)), (x0, _CAPTION_H))
    return np.asarray(canvas)


class ValImages:
    """The fixed validation crops of a run and the writer of their panels (rank 0 only; a no-op
    when ``n`` is 0, on other ranks, or without validation images)."""

    def __init__(self, ds: Any, n: int, side: int, out: Path, logs: Logs, enabled: bool):
        self.ds, self.logs, self.side = ds, logs, side
        self.folder = out / "val_images"
        self.indices = list(range(min(n, len(ds)))) if enabled and ds is not None else []

    @torch.no_grad()
    def write(self, nets: Any, step: int, device: torch.device, amp_dtype: torch.dtype | None) -> list[Path]:
        """Restore the fixed crops with ``nets`` and write their strips for ``step``; the files written."""
        if not self.indices:
            return []
        from ptg.pipeline.core.metrics import psnr

        from ..infer import restore_each

        items = [self.ds[i] for i in self.indices]
        crops = [centre_crop(it["x"], self.side) for it in items]  # the F-outputs channels ride along, cropped alike
        inputs = ((x.unsqueeze(0), [p.unsqueeze(0) for p in it["priors"]] or None, f"validation image {i}")
                  for x, it, i in zip(crops, items, self.indices))
        was = nets.training
        nets.eval()
        strips: dict[str, np.ndarray] = {}
        try:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                for k, (it, x, (f_out, r_out, _)) in enumerate(zip(items, crops, restore_each(nets, inputs, device=device))):
                    as_img = lambda t: t[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()  # noqa: E731
                    y = centre_crop(it["y"], self.side).permute(1, 2, 0).numpy() if it["y"].numel() else None
                    score = (lambda img: f"\n{psnr(img, y):.2f} dB") if y is not None else (lambda img: "")
                    cols = [("input", x[:3].permute(1, 2, 0).numpy()), ("F" + score(as_img(f_out)), as_img(f_out))]
                    if r_out is not None:
                        cols.append(("F + R" + score(as_img(r_out)), as_img(r_out)))
                    if y is not None:
                        cols.append(("target", y))
                    sample_id = self.ds.samples[self.indices[k]].id
                    strips[f"{k:02d}_{safe_name(sample_id)}"] = panel_strip(cols)
        finally:
            nets.train(was)
        folder = no_symlink(self.folder, "the validation images folder") / f"step_{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = [write_image(no_symlink(folder / f"{name}.png", "a validation image"), img) for name, img in strips.items()]
        self.logs.images(step, {f"val_images/{name}": img for name, img in strips.items()})
        return paths
