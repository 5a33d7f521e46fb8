"""F's outputs computed by any tool: one image file per manifest id, read as ``Ihat`` for R.

``--f-outputs DIR`` is the bluntest black-box F: a folder where some other program (a released
model's own test script, a commercial denoiser, a MATLAB pipeline) wrote its restoration of every
input, as ``DIR/<id>.<ext>`` (any suffix of `ptg.pipeline.imageio`; 16-bit TIFF keeps the
most). A folder of outputs has no network to run: it cannot restore a new photo
(``runs_on_new_photos`` is False), and R is trained on it in refine mode only.

Validation happens once, at `open_f_outputs`, before any training: every requested id has exactly
one file, no file resolves outside ``DIR`` (a link out of the folder is refused), and every
file's header says the same height and width as its input — so decoding one later allocates
exactly an input's worth of pixels, and an output of another size (a crop, an upscale) is never
cropped against ``Id``. `FOutputs.read` decodes through `ptg.pipeline.imageio.read_image` and checks
the decoded size again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from ptg.pipeline.errors import PtgError
from ptg.pipeline.imageio import IMAGE_SUFFIXES, image_size, read_image
from ptg.pipeline.manifest import Sample

_SHOWN = 5  # ids named in an error


@dataclass(frozen=True)
class FOutputs:
    """A validated folder of F's outputs for a set of manifest rows.

    Attributes:
        folder: the folder the user named.
        files: manifest id -> the output file (inside ``folder``).
        sizes: manifest id -> (height, width), equal to the input's.
    """

    folder: Path
    files: dict[str, Path]
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    runs_on_new_photos: ClassVar[bool] = False  # outputs exist only for the manifest's own inputs

    def read(self, sample_id: str) -> np.ndarray:
        """``Ihat`` of one row: float32 H×W×3 in [0, 1], the size of its input.

        Raises:
            PtgError: an id this folder was not opened for, or a file changed since it was opened.
        """
        try:
            path = self.files[sample_id]
        except KeyError:
            raise PtgError(f"--f-outputs {self.folder} was not opened for manifest id {sample_id!r}") from None
        img = read_image(path)
        if img.shape[:2] != self.sizes[sample_id]:
            raise PtgError(f"--f-outputs file {path} decodes to {img.shape[1]}x{img.shape[0]}, not the "
                           f"{self.sizes[sample_id][1]}x{self.sizes[sample_id][0]} of its input (was it replaced?)")
        return img

    def describe(self) -> dict[str, object]:
        """Provenance for a run's record: the folder and how many outputs it served."""
        return {"kind": "f-outputs", "folder": str(self.folder), "images": len(self.files)}


def open_f_outputs(folder: str | Path, samples: Sequence[Sample]) -> FOutputs:
    """Index and validate ``folder`` against the manifest rows ``samples``.

    Args:
        folder: the folder of outputs, ``<id>.<ext>`` per row (named by the user).
        samples: the rows R trains or is scored on; each needs its output.

    Raises:
        PtgError: not a folder; an id with no file or several; a file that is a link out of the
            folder; a size different from the input's (naming the first few offenders).
    """
    root = Path(folder)
    if not root.is_dir():
        raise PtgError(f"--f-outputs {root}: not a folder; pass the folder holding one output <id>.png per manifest id")
    real_root = root.resolve()
    files: dict[str, Path] = {}
    missing, multiple, outside, wrong = [], [], [], []
    for s in samples:
        found = [root / f"{s.id}{sfx}" for sfx in IMAGE_SUFFIXES if (root / f"{s.id}{sfx}").is_file()]
        if not found:
            missing.append(s.id)
        elif len(found) > 1:
            multiple.append(f"{s.id} ({', '.join(p.name for p in found)})")
        elif not found[0].resolve().is_relative_to(real_root):
            outside.append(f"{found[0].name} -> {found[0].resolve()}")
        else:
            files[s.id] = found[0]
    _raise_if(missing, root, "no output for manifest id(s)", "write one <id>.png per input (or drop those rows)")
    _raise_if(multiple, root, "several outputs for id(s)", "keep one file per id")
    _raise_if(outside, root, "file(s) that lead outside the folder", "copy the outputs into the folder itself")
    sizes = {}
    for s in samples:
        out_hw, in_hw = image_size(files[s.id]), image_size(s.input)
        if out_hw != in_hw:
            wrong.append(f"{s.id} ({out_hw[1]}x{out_hw[0]}, input {in_hw[1]}x{in_hw[0]})")
        sizes[s.id] = in_hw
    _raise_if(wrong, root, "output(s) whose size differs from the input's",
              "outputs must be 1x restorations of the manifest's inputs, uncropped")
    return FOutputs(root, files, sizes)


def _raise_if(bad: list[str], root: Path, what: str, fix: str) -> None:
    if bad:
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise PtgError(f"--f-outputs {root}: {what} {', '.join(bad[:_SHOWN])}{more}; {fix}")
