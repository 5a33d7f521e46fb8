"""`ptg data samples|synth|cache|info`: paired datasets from real photos or folders of clean images, and
the image store that serves their decoded pixels at memory speed."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ptg.pipeline.core.errors import PtgError

from .console import console, human_bytes, progress_bar
from .options import ManifestArg, OutDir, RootOpt, SeedOpt

app = typer.Typer(help="Make paired datasets (real sample photos, synthetic degradations); cache decoded images.",
                  no_args_is_help=True)

TaskOpt = Annotated[str, typer.Option("--task", help="denoise | lowlight | blur")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Write into an existing --out that is not a ptg dataset (nothing in it is deleted).")]
ImageStoreOpt = Annotated[Optional[str], typer.Option(
    "--store", help="The image store, a folder or s3://bucket/prefix (default: $PTG_CACHE/images, where the trainer looks: data.image_store).")]


@app.command("samples")
def samples(
    out: OutDir,
    task: TaskOpt = "denoise",
    sigma: Annotated[float, typer.Option(help="Gaussian noise level on the 0-255 scale (denoise).")] = 25.0,
    seed: SeedOpt = 0,
    max_side: Annotated[int, typer.Option(help="Downscale photos so the longer side is at most this.")] = 512,
    opencv: Annotated[bool, typer.Option(help="Also use opencv-doc's photos when that Debian package is installed.")] = True,
    force: ForceOpt = False,
) -> None:
    """Build a paired dataset from real photos shipped in installed packages (no network)."""
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.pipeline.datasets.samples import build_samples, count_photos

    with progress_bar(count_photos(opencv), f"samples ({task})", unit="img") as advance:
        path = build_samples(out, task=task, sigma=sigma, seed=seed, max_side=max_side, use_opencv=opencv,
                             on_progress=advance, force=force)
    m = load_manifest(path)
    n_train, n_test = len(m.split("train")), len(m.split("test"))
    console.print(f"wrote {path}: {len(m)} pairs ({n_train} train, {n_test} test)")


@app.command("synth")
def synth(
    src: Annotated[Path, typer.Option("--src", help="Folder of clean images (searched recursively).")],
    out: OutDir,
    task: Annotated[str, typer.Option("--task", help="denoise | lowlight | blur | jpeg | allinone (one drawn per image)")] = "denoise",
    sigma: Annotated[float, typer.Option(help="denoise: noise level on the 0-255 scale.")] = 25.0,
    gray: Annotated[bool, typer.Option(help="denoise: convert to gray first.")] = False,
    exposure: Annotated[str, typer.Option(help="lowlight: exposure range LOW,HIGH.")] = "0.05,0.2",
    gamma: Annotated[str, typer.Option(help="lowlight: gamma range LOW,HIGH.")] = "1.8,2.6",
    photons: Annotated[str, typer.Option(help="lowlight: photon count range LOW,HIGH (shot noise).")] = "100,400",
    read_sigma: Annotated[str, typer.Option(help="lowlight: read-noise sigma range on [0,1], LOW,HIGH.")] = "0.002,0.01",
    blur_kind: Annotated[str, typer.Option("--blur-kind", help="blur: motion | defocus.")] = "motion",
    length: Annotated[str, typer.Option(help="blur: motion kernel length range LOW,HIGH (pixels).")] = "9,21",
    radius: Annotated[str, typer.Option(help="blur: defocus radius range LOW,HIGH (pixels).")] = "2,5",
    quality: Annotated[str, typer.Option(help="jpeg/allinone: JPEG quality Q or range LOW,HIGH (1-95), drawn per image.")] = "10,40",
    choices: Annotated[str, typer.Option(help="allinone: degradations drawn per image, from noise,lowlight,defocus,motion,jpeg.")] = "noise,lowlight,defocus,motion,jpeg",
    sigmas: Annotated[str, typer.Option(help="allinone: noise levels drawn per image (0-255 scale), e.g. 10,30,50.")] = "15,25,50",
    split: Annotated[str, typer.Option(help="Split of every row: train | val | test.")] = "test",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Degrade every image of a folder deterministically and write a paired manifest."""
    from ptg.pipeline.datasets.samples import claim_dataset_dir
    from ptg.pipeline.datasets.synth import AllInOneParams, BlurParams, NoiseParams, list_images, synthesize

    if task == "denoise":
        if sigma <= 0:
            raise PtgError(f"--sigma must be positive, got {sigma}")
        params = NoiseParams(sigma=sigma, gray=gray)
    elif task == "lowlight":
        params = _lowlight(exposure, gamma, photons, read_sigma)
    elif task == "blur":
        if blur_kind not in ("motion", "defocus"):
            raise PtgError(f"--blur-kind must be motion or defocus, got {blur_kind!r}")
        params = BlurParams(blur_kind, _range(length, "length", int), _range(radius, "radius"))
    elif task == "jpeg":
        params = _quality(quality)
    elif task == "allinone":
        try:
            levels = tuple(float(v) for v in sigmas.split(","))
        except ValueError:
            raise PtgError(f"--sigmas must be numbers separated by commas, got {sigmas!r}") from None
        params = AllInOneParams(tuple(c.strip() for c in choices.split(",")), levels,
                                _lowlight(exposure, gamma, photons, read_sigma),
                                BlurParams("motion", length=_range(length, "length", int)),
                                BlurParams("defocus", radius=_range(radius, "radius")), _quality(quality))
    else:
        raise PtgError(f"unknown --task {task!r}; use denoise, lowlight, blur, jpeg or allinone")
    n = len(list_images(src))
    claim_dataset_dir(out, force)
    with progress_bar(n, f"synth ({task})", unit="img") as advance:
        path = synthesize(src, out, task, params, seed=seed, split=split, on_progress=advance)
    console.print(f"wrote {path}: {n} pairs")


def _range(text: str, name: str, cast=float) -> tuple:
    """``--NAME LOW,HIGH`` as two numbers, LOW <= HIGH."""
    try:
        lo, hi = (cast(v) for v in text.split(","))
    except ValueError:
        raise PtgError(f"--{name} must be two numbers LOW,HIGH, got {text!r}") from None
    if lo > hi:
        raise PtgError(f"--{name} range {text!r} has LOW > HIGH")
    return lo, hi


def _lowlight(exposure: str, gamma: str, photons: str, read_sigma: str):
    from ptg.pipeline.datasets.synth import LowLightParams

    return LowLightParams(_range(exposure, "exposure"), _range(gamma, "gamma"), _range(photons, "photons"),
                          _range(read_sigma, "read-sigma"))


def _quality(quality: str):
    """``--quality Q`` or ``LOW,HIGH`` in 1..95."""
    from ptg.pipeline.datasets.synth import JpegParams

    lo, hi = _range(quality if "," in quality else f"{quality},{quality}", "quality", int)
    if not 1 <= lo <= hi <= 95:
        raise PtgError(f"--quality {quality!r} must lie in 1..95")
    return JpegParams((lo, hi))


@app.command("cache")
def cache(
    manifest: ManifestArg,
    root: RootOpt = None,
    store: ImageStoreOpt = None,
    shard_mb: Annotated[float, typer.Option("--shard-mb", help="Target size of a shard file (MiB; a new store only).")] = 256,
    force: Annotated[bool, typer.Option("--force", help="Write into an existing --store that is not an image store (nothing in it is deleted).")] = False,
) -> None:
    """Decode every image of a manifest (inputs and targets) into the image store, once.

    Resumable: images already stored (same file bytes) are verified and kept, damaged shards are
    decoded again. Training (data.images=auto|store), validation and `ptg eval` then read pixels
    from memory maps instead of decoding files.
    """
    from ptg.pipeline.storage import imagestore
    from ptg.pipeline.datasets.manifest import load_manifest

    if not 0.01 <= shard_mb <= 65536:
        raise PtgError(f"--shard-mb {shard_mb} must lie in 0.01..65536 (MiB)")
    paths = imagestore.manifest_paths(load_manifest(manifest, root).samples)
    out = imagestore.store_arg(store)
    with progress_bar(len(paths), "image store", unit="img") as advance:
        res = imagestore.cache_images(paths, out, shard_bytes=int(shard_mb * 2**20), on_progress=advance, force=force)
    info = imagestore.store_info(out)
    console.print(f"{out}: wrote {res.written} image(s) in {res.shards} shard(s) ({human_bytes(res.bytes)}), kept "
                  f"{res.reused}; the store holds {info['images']} image(s), {human_bytes(info['bytes'])}")


@app.command("info")
def info(
    store: Annotated[Optional[str], typer.Argument(help="The image store, a folder or s3://bucket/prefix (default: $PTG_CACHE/images).")] = None,
    verify: Annotated[bool, typer.Option(help="Re-hash every shard against its commit record.")] = False,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", "-m", help="Also check the store's records of this manifest's images against the files (each record not known true is decoded once).")] = None,
    root: RootOpt = None,
) -> None:
    """Size and health of an image store (fast: file sizes; --verify re-hashes every shard)."""
    from ptg.pipeline.storage import imagestore

    rep = imagestore.store_info(imagestore.store_arg(store), verify=verify)
    if manifest is not None:  # the records tied to their sources: what digests alone cannot show
        from ptg.pipeline.datasets.manifest import load_manifest

        paths = imagestore.manifest_paths(load_manifest(manifest, root).samples)
        keys = imagestore.file_keys(paths)
        st = imagestore.ImageStore(imagestore.store_arg(store))
        decoded = st.vouch(paths, keys)
        held = sum(k in st for k in dict.fromkeys(keys))
        console.print(f"sources {held} of {len(set(keys))} manifest image(s) held, each matching its file "
                      f"({decoded} decoded to check)")
    dtypes = ", ".join(f"{n} {d}" for d, n in sorted(rep["dtypes"].items())) or "-"
    console.print(f"store   {rep['path']}\nimages  {rep['images']} ({dtypes})\nshards  {rep['shards']}, "
                  f"{human_bytes(rep['bytes'])}")
    if rep["problems"]:
        console.print("health  [red]PROBLEMS[/red]\n  " + "\n  ".join(rep["problems"]))
        raise PtgError(f"the image store {rep['path']} has {len(rep['problems'])} problem(s); run `ptg data cache "
                       f"--manifest M --store {rep['path']}` to repair damaged shards")
    console.print(f"health  ok ({'every shard re-hashed' if verify else 'sizes checked; --verify re-hashes'})")
