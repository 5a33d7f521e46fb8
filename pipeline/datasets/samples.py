"""Real sample photos that ship inside installed packages, made into a paired dataset offline.

Sources: scikit-image's data module (in its wheel) and, when the Debian package `opencv-doc` is
installed, the natural photos in its examples folder. Train and test are split by image, never by
crop, and the stereo pair (two views of one scene) stays on one side so no scene leaks.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..core.errors import PtgError
from ..core.fsio import claim_out_dir
from ..core.imageio import is_image_file, read_image, to_uint8
from .synth import AllInOneParams, BlurParams, LowLightParams, NoiseParams, synthesize

# scikit-image RGB photos: name -> loader attribute (None for the stereo pair).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field",
                  "immunohistochemistry", "motorcycle_left", "motorcycle_right")
SKIMAGE_TEST = ("chelsea", "coffee")

OPENCV_DOC_DIRS = (Path("/usr/share/doc/opencv-doc/examples/data"),)
# Natural RGB photos of opencv-doc: logos, charts, renders, paintings, text and the second frame of
# stereo/sequence pairs are left out (a second frame would leak a scene across splits).
OPENCV_PHOTOS = ("baboon.jpg", "building.jpg", "butterfly.jpg", "fruits.jpg", "home.jpg", "messi5.jpg",
                 "orange.jpg", "apple.jpg", "smarties.png", "squirrel_cls.jpg", "graf1.png", "leuvenA.jpg",
                 "aloeL.jpg", "HappyFish.jpg", "stuff.jpg", "chicky_512.png", "aero1.jpg",
                 "rubberwhale1.png", "ela_original.jpg")
OPENCV_TEST = ("baboon.jpg", "butterfly.jpg", "home.jpg", "squirrel_cls.jpg")


def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data as data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(data, name)()


DATASET_ENTRIES = {"manifest.jsonl", "input", "target", "clean", "kernels"}  # what `ptg data` writes


def is_legacy_dataset(folder: Path) -> bool:
    """A dataset folder made by `ptg data` before folder markers existed."""
    names = {p.name for p in folder.iterdir()}
    return "manifest.jsonl" in names and names <= DATASET_ENTRIES | {".ptg-artifact.json"}


def claim_dataset_dir(out: str | Path, force: bool = False) -> Path:
    """Accept `out` for a paired dataset: new, empty, a ptg dataset, or ``force`` (nothing is deleted)."""
    return claim_out_dir(out, "dataset", force=force, legacy=is_legacy_dataset)


def _photo_ids(use_opencv: bool) -> list[str]:
    return list(SKIMAGE_PHOTOS) + (["cv_" + Path(f).stem for f in OPENCV_PHOTOS] if use_opencv else [])


def opencv_doc_dir() -> Path | None:
    return next((d for d in OPENCV_DOC_DIRS if d.is_dir()), None)


def collect_photos(out: Path, max_side: int = 512, use_opencv: bool = True) -> dict[str, str]:
    """Write the real photos as PNG under `out`, downscaled so the longer side is <= max_side.

    Returns:
        id -> split ("train" or "test").
    """
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, str] = {}

    def save(sid: str, arr: np.ndarray, split: str) -> None:
        im = Image.fromarray(arr)
        scale = max_side / max(im.size)
        if scale < 1:  # LANCZOS: the anti-aliased downscale, so no aliasing is baked into targets
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
        im.save(out / f"{sid}.png")
        splits[sid] = split

    for name in SKIMAGE_PHOTOS:
        save(name, _skimage_photo(name), "test" if name in SKIMAGE_TEST else "train")
    doc = opencv_doc_dir() if use_opencv else None
    if doc is not None:
        for fname in OPENCV_PHOTOS:
            path = doc / fname
            if not path.is_file():
                continue
            img = read_image(path, channels=None)
            if img.shape[-1] != 3 or min(img.shape[:2]) < 128:
                continue  # gray or tiny files are not natural RGB photos
            sid = "cv_" + Path(fname).stem
            save(sid, to_uint8(img), "test" if fname in OPENCV_TEST else "train")
    return splits


def build_samples(
    out: str | Path,
    task: str = "denoise",
    sigma: float = 25.0,
    seed: int = 0,
    max_side: int = 512,
    use_opencv: bool = True,
    on_progress: Callable[[int], None] | None = None,
    force: bool = False,
) -> Path:
    """Build a paired dataset from real photos: `out/manifest.jsonl`, `out/{clean,input,target}/`.

    Args:
        out: output folder: new, empty or a ptg dataset (else ``force``). In `clean/` only the photos
            this command writes are replaced; any other image there is refused, never deleted.
        task: denoise (Gaussian, `sigma` on 0-255), lowlight or blur.
        seed: seed of the synthetic degradation.
        max_side: photos are downscaled so their longer side is at most this (CPU-friendly).
        use_opencv: also use opencv-doc's photos when that Debian package is installed.
        force: write into an existing folder that is not a ptg dataset.

    Returns:
        The manifest path.
    """
    if sigma <= 0 and task == "denoise":
        raise PtgError(f"--sigma must be positive, got {sigma}")
    if max_side < 64:
        raise PtgError(f"--max-side must be at least 64 pixels, got {max_side}")
    params = {"denoise": NoiseParams(sigma=sigma), "lowlight": LowLightParams(), "blur": BlurParams(),
              "allinone": AllInOneParams()}.get(task)
    if params is None:
        raise PtgError(f"unknown task {task!r}; use denoise, lowlight, blur or allinone")
    out = claim_dataset_dir(out, force)
    clean = out / "clean"
    ours = {f"{sid}.png" for sid in _photo_ids(use_opencv=True)}
    if clean.is_dir():
        # every image in clean/ becomes a row: refuse images this command did not write
        foreign = sorted(p.name for p in clean.rglob("*") if p.is_file() and is_image_file(p) and p.name not in ours)
        if foreign:
            raise PtgError(f"{clean} holds images `ptg data samples` did not write ({', '.join(foreign[:5])}"
                           f"{', ...' if len(foreign) > 5 else ''}); they would become dataset rows. Move them out, "
                           "or choose another --out.")
        for name in ours:  # photos of an earlier run (another --max-side or photo set): ours to replace
            (clean / name).unlink(missing_ok=True)
    splits = collect_photos(clean, max_side=max_side, use_opencv=use_opencv)
    return synthesize(clean, out, task, params, seed=seed, split=lambda sid: splits[sid], on_progress=on_progress)


def count_photos(use_opencv: bool = True) -> int:
    n = len(SKIMAGE_PHOTOS)
    doc = opencv_doc_dir() if use_opencv else None
    if doc is not None:
        n += sum((doc / f).is_file() for f in OPENCV_PHOTOS)
    return n
