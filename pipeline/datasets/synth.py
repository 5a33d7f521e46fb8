"""Synthetic degradations: turn clean images into paired (degraded, clean) samples.

Every degradation draws its randomness from a generator seeded by (seed, image id), so the output
of one image does not depend on which other images are processed, in which order, or by how many
workers. Parameters that vary per image are returned so they can be recorded in the manifest row.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from scipy import ndimage

from ..core.errors import PtgError
from ..core.imageio import is_image_file, read_image, to_uint8, write_image
from .manifest import SPLITS, id_from_parts, write_manifest

Task = Literal["denoise", "lowlight", "blur", "jpeg", "allinone"]
TASKS = ("denoise", "lowlight", "blur", "jpeg", "allinone")


def rng_for(seed: int, sample_id: str) -> np.random.Generator:
    """A generator that depends only on the seed and the sample's id."""
    digest = int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


@dataclass(frozen=True)
class NoiseParams:
    sigma: float = 25.0  # standard deviation on the 0-255 scale, as in the denoising literature
    gray: bool = False  # convert to one channel first (Set12/BSD68-style gray denoising)


@dataclass(frozen=True)
class LowLightParams:
    # Each per-image value is drawn uniformly from its (low, high) range and recorded in the row.
    exposure: tuple[float, float] = (0.05, 0.2)  # linear scale on intensities after gamma
    gamma: tuple[float, float] = (1.8, 2.6)  # x**gamma darkens mid-tones like a low exposure
    photons: tuple[float, float] = (100.0, 400.0)  # full-well in photons: Poisson shot noise level
    read_sigma: tuple[float, float] = (0.002, 0.01)  # Gaussian read noise, on the [0, 1] scale


@dataclass(frozen=True)
class BlurParams:
    kind: Literal["motion", "defocus"] = "motion"
    length: tuple[int, int] = (9, 21)  # motion: kernel length in pixels
    radius: tuple[float, float] = (2.0, 5.0)  # defocus: disk radius in pixels
    noise_sigma: float = 1.0  # small Gaussian noise after blurring, 0-255 scale (0 disables)


@dataclass(frozen=True)
class JpegParams:
    quality: tuple[int, int] = (10, 40)  # JPEG quality (1-95), drawn uniformly per image, both ends included


ALLINONE_CHOICES = ("noise", "lowlight", "defocus", "motion", "jpeg")


@dataclass(frozen=True)
class AllInOneParams:
    """One model for several degradations: each image gets one, drawn uniformly from `choices`."""

    choices: tuple[str, ...] = ALLINONE_CHOICES  # degradations drawn from (a subset gives e.g. blind denoising)
    sigmas: tuple[float, ...] = (15.0, 25.0, 50.0)  # noise: sigma drawn uniformly from these (0-255 scale)
    lowlight: LowLightParams = LowLightParams()  # lowlight: its ranges
    motion: BlurParams = BlurParams("motion")  # motion blur: its ranges
    defocus: BlurParams = BlurParams("defocus")  # defocus blur: its ranges
    jpeg: JpegParams = JpegParams()  # jpeg: its quality range

    def __post_init__(self) -> None:
        bad = [c for c in self.choices if c not in ALLINONE_CHOICES]
        if bad or not self.choices:
            raise PtgError(f"all-in-one choices {list(self.choices)!r}: use a non-empty subset of {', '.join(ALLINONE_CHOICES)}")
        if "noise" in self.choices and (not self.sigmas or min(self.sigmas) <= 0):
            raise PtgError(f"all-in-one sigmas {list(self.sigmas)!r} must be positive numbers")


def add_gaussian_noise(img: np.ndarray, p: NoiseParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """Returns (noisy, clean, recorded params). Noise is added in float; the caller's PNG write rounds."""
    clean = img.mean(axis=-1, keepdims=True) if p.gray else img
    noisy = clean + rng.normal(0.0, p.sigma / 255.0, size=clean.shape).astype(np.float32)
    return np.clip(noisy, 0, 1), clean, {"sigma": p.sigma, "gray": p.gray}


def low_light(img: np.ndarray, p: LowLightParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """Gamma + exposure darkening followed by Poisson-Gaussian sensor noise."""
    exposure, gamma = rng.uniform(*p.exposure), rng.uniform(*p.gamma)
    photons, read_sigma = rng.uniform(*p.photons), rng.uniform(*p.read_sigma)
    dark = exposure * np.power(img, gamma)
    shot = rng.poisson(dark * photons).astype(np.float32) / photons
    noisy = shot + rng.normal(0.0, read_sigma, size=img.shape).astype(np.float32)
    params = {"exposure": round(float(exposure), 6), "gamma": round(float(gamma), 6),
              "photons": round(float(photons), 3), "read_sigma": round(float(read_sigma), 6)}
    return np.clip(noisy, 0, 1).astype(np.float32), img, params


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised linear motion kernel of odd size `length`, rotated by `angle_deg`."""
    size = length if length % 2 else length + 1
    k = np.zeros((size, size), np.float64)
    c = size // 2
    t = np.linspace(-c, c, 4 * size)
    a = np.deg2rad(angle_deg)
    rows = np.clip(np.round(c - t * np.sin(a)).astype(int), 0, size - 1)
    cols = np.clip(np.round(c + t * np.cos(a)).astype(int), 0, size - 1)
    k[rows, cols] = 1.0
    return (k / k.sum()).astype(np.float32)


def disk_kernel(radius: float) -> np.ndarray:
    """A normalised defocus (pillbox) kernel."""
    r = int(np.ceil(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    k = (x**2 + y**2 <= radius**2).astype(np.float64)
    return (k / k.sum()).astype(np.float32)


def blur(img: np.ndarray, p: BlurParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    """Convolve with a random motion or defocus kernel (reflect borders); returns the kernel too."""
    if p.kind == "motion":
        length, angle = int(rng.integers(p.length[0], p.length[1] + 1)), float(rng.uniform(0, 180))
        kernel = motion_kernel(length, angle)
        params = {"kind": "motion", "length": length, "angle": round(angle, 4)}
    elif p.kind == "defocus":
        radius = float(rng.uniform(*p.radius))
        kernel = disk_kernel(radius)
        params = {"kind": "defocus", "radius": round(radius, 4)}
    else:
        raise PtgError(f"unknown blur kind {p.kind!r}; use motion or defocus")
    out = np.stack([ndimage.convolve(img[..., c], kernel, mode="reflect") for c in range(img.shape[-1])], -1)
    if p.noise_sigma > 0:
        out = out + rng.normal(0.0, p.noise_sigma / 255.0, size=out.shape).astype(np.float32)
    params["noise_sigma"] = p.noise_sigma
    return np.clip(out, 0, 1).astype(np.float32), img, params, kernel


def jpeg(img: np.ndarray, p: JpegParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """JPEG compression artefacts at a random quality (libjpeg via Pillow, 4:2:0 chroma subsampling).

    The decoded result is what gets stored (as PNG, losslessly), so the artefacts are exactly those
    of one JPEG round trip.
    """
    import io

    from PIL import Image

    lo, hi = p.quality
    if not 1 <= lo <= hi <= 95:
        raise PtgError(f"JPEG quality range {lo},{hi}: use 1 <= LOW <= HIGH <= 95")
    q = int(rng.integers(lo, hi + 1))
    buf = io.BytesIO()
    Image.fromarray(to_uint8(img[..., 0] if img.shape[-1] == 1 else img)).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB" if img.shape[-1] == 3 else "L"), dtype=np.float32) / 255.0
    return out.reshape(img.shape), img, {"quality": q}


def all_in_one(img: np.ndarray, p: AllInOneParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray | None]:
    """One degradation drawn per image; the record names it (``task``) with its parameters."""
    choice = p.choices[int(rng.integers(len(p.choices)))]
    kernel = None
    if choice == "noise":
        sigma = float(p.sigmas[int(rng.integers(len(p.sigmas)))])
        out, clean, rec = add_gaussian_noise(img, NoiseParams(sigma=sigma), rng)
        rec = {"task": "denoise", **rec}
    elif choice == "lowlight":
        out, clean, rec = low_light(img, p.lowlight, rng)
        rec = {"task": "lowlight", **rec}
    elif choice in ("motion", "defocus"):
        out, clean, rec, kernel = blur(img, p.motion if choice == "motion" else p.defocus, rng)
        rec = {"task": "blur", **rec}
    else:
        out, clean, rec = jpeg(img, p.jpeg, rng)
        rec = {"task": "jpeg", **rec}
    return out, clean, rec, kernel


def list_images(src: Path) -> list[Path]:
    src = Path(src)
    if not src.is_dir():
        raise PtgError(f"source folder not found: {src}")
    files = sorted(p for p in src.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise PtgError(f"no images found under {src} (looked for {', '.join(sorted({'.png', '.jpg', '.tif'}))}, ...)")
    return files


def synthesize(
    src: str | Path,
    out: str | Path,
    task: Task,
    params: NoiseParams | LowLightParams | BlurParams | JpegParams | AllInOneParams | None = None,
    seed: int = 0,
    split: str | Callable[[str], str] = "test",
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Degrade every image under `src` and write `out/{input,target}/<id>.png` + `out/manifest.jsonl`.

    Args:
        src: folder of clean images (searched recursively; the id is the relative path without suffix).
        out: output folder.
        task: denoise, lowlight, blur, jpeg or allinone (one of several degradations per image; the
            row's ``degradation.task`` names the one drawn).
        params: the task's parameter dataclass (defaults when None).
        seed: base seed; each image's randomness comes from (seed, id).
        split: a split name for every row, or a function id -> split.

    Returns:
        The manifest path.
    """
    if task not in TASKS:
        raise PtgError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    params = params or {"denoise": NoiseParams, "lowlight": LowLightParams, "blur": BlurParams, "jpeg": JpegParams,
                        "allinone": AllInOneParams}[task]()
    src, out = Path(src).resolve(), Path(out).resolve()
    split_of = split if callable(split) else (lambda _id, s=split: s)
    files = list_images(src)
    rows = []
    for path in files:
        sid = id_from_parts(path.relative_to(src).with_suffix("").as_posix())
        sp = split_of(sid)
        if sp not in SPLITS:
            raise PtgError(f"split {sp!r} for {sid} is not one of {', '.join(SPLITS)}")
        rng = rng_for(seed, sid)
        img = read_image(path)
        row: dict = {"id": sid, "split": sp, "task": task, "seed": seed}
        kernel = None
        if task == "denoise":
            degraded, clean, rec = add_gaussian_noise(img, params, rng)
        elif task == "lowlight":
            degraded, clean, rec = low_light(img, params, rng)
        elif task == "jpeg":
            degraded, clean, rec = jpeg(img, params, rng)
        elif task == "allinone":
            degraded, clean, rec, kernel = all_in_one(img, params, rng)
        else:
            degraded, clean, rec, kernel = blur(img, params, rng)
        if kernel is not None:
            kpath = out / "kernels" / f"{sid}.npy"
            kpath.parent.mkdir(parents=True, exist_ok=True)
            np.save(kpath, kernel)
            rec["kernel"] = kpath.relative_to(out).as_posix()
        row["degradation"] = rec
        row["input"] = write_image(out / "input" / f"{sid}.png", degraded)
        row["target"] = write_image(out / "target" / f"{sid}.png", clean)
        rows.append(row)
        if on_progress:
            on_progress(1)
    return write_manifest(out / "manifest.jsonl", rows)
