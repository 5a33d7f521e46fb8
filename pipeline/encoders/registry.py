"""The encoder registry: name → factory building a frozen model G that maps images to 1-D priors.

Explicit and small, like timm's: `register_encoder` fills a dict and refuses duplicate names;
`build_encoder(spec)` looks a name up and never guesses another. This module is a leaf: it imports
no encoder; the package's ``__init__`` imports the built-in encoder modules by name (no folder
scan), and each registers itself. Factories import their heavy library (open_clip, transformers,
diffusers, timm) inside the function, so importing the package costs nothing. Hub downloads and
the offline handling are `ptg.pipeline.encoders.hub`'s.

Weights come from an explicit tag, hub id, file or directory. A randomly initialised encoder is
built only when `EncoderSpec.random_init` is set; its fingerprint is ``random-init-<seed>`` and
stores made with it say so in their metadata.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.errors import PtgError
from .preprocess import Preprocess


@dataclass(frozen=True)
class EncoderSpec:
    """What to build: picklable, so dask workers build the same encoder from it."""

    name: str  # registry name: clip | blip2 | sd | restoration | imagenet
    arch: str | None = None  # architecture within the family (open_clip model name); None = the family default
    pretrained: str | None = None  # tag, hub id, local file or local directory; None = the family default
    random_init: bool = False  # build with random weights (tests/benchmarks only; recorded loudly)
    seed: int = 0  # torch seed for random_init, so a random encoder is reproducible
    timestep: int | None = None  # sd only: also pool UNet mid-block features at this timestep; None = VAE only
    size: int | None = None  # override the model's input side (e.g. smaller SD inputs on CPU); None = model default
    device: str = "cpu"  # torch device the model runs on


@dataclass
class Encoder:
    """A built, frozen encoder.

    `forward` takes a preprocessed batch [B, 3, S, S] (float32, on `device`) and returns the
    priors [B, dim] (float32). It runs under `torch.inference_mode` in the extractor.
    """

    name: str  # registry name
    dim: int  # length of one prior vector
    preprocess: Preprocess  # the pinned transform applied before `forward`
    fingerprint: str  # SHA-256 of the weights (or random-init-<seed>)
    random_init: bool  # built without pre-trained weights
    source: str  # where the weights came from (file, directory, hub id) for the metadata
    pooling: str  # one sentence: what `forward` pools into the vector
    forward: Callable[[Any], Any]  # [B,3,S,S] -> [B,dim]
    module: Any = None  # the torch.nn.Module, for benchmarks and tests
    details: dict[str, Any] = field(default_factory=dict)  # family-specific facts (arch, sigma, timestep...)
    spec: EncoderSpec | None = None  # the spec it was built from

    def metadata(self) -> dict[str, Any]:
        """The provenance written into a store."""
        return {
            "name": self.name,
            "dim": self.dim,
            "fingerprint": self.fingerprint,
            "random_init": self.random_init,
            "source": self.source,
            "pooling": self.pooling,
            "preprocessing": self.preprocess.to_dict(),
            "details": self.details,
            "spec": asdict(self.spec) if self.spec is not None else None,
        }


@dataclass(frozen=True)
class EncoderInfo:
    """A registry entry, with what `ptg encoders` shows without building anything."""

    name: str  # registry name
    factory: Callable[[EncoderSpec], Encoder]  # builds the encoder
    summary: str  # one line: the model and what is pooled
    dim: str  # output dimension (a number, or how it depends on --arch)
    preprocessing: str  # the default pinned transform, in words
    default_weights: str  # what --pretrained defaults to


ENCODERS: dict[str, EncoderInfo] = {}


def register_encoder(name: str, *, summary: str, dim: str, preprocessing: str, default_weights: str):
    """Decorator adding a factory to `ENCODERS`; a second registration of a name is a bug."""

    def deco(fn: Callable[[EncoderSpec], Encoder]) -> Callable[[EncoderSpec], Encoder]:
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered")
        ENCODERS[name] = EncoderInfo(name, fn, summary, dim, preprocessing, default_weights)
        return fn

    return deco


def list_encoders() -> list[EncoderInfo]:
    return [ENCODERS[k] for k in sorted(ENCODERS)]


def build_encoder(spec: EncoderSpec) -> Encoder:
    """Build the encoder a spec names, frozen and in eval mode.

    Raises:
        PtgError: unknown name, weights that cannot be found or fetched, or a bad option.
    """
    info = ENCODERS.get(spec.name)
    if info is None:
        raise PtgError(f"unknown encoder {spec.name!r}; choose one of {', '.join(sorted(ENCODERS))} (see `ptg encoders`)")
    if spec.timestep is not None and spec.name != "sd":
        raise PtgError(f"--timestep applies to the sd encoder only, not {spec.name!r}")
    if spec.random_init:
        import torch

        torch.manual_seed(spec.seed)
    enc = info.factory(spec)
    enc.spec = spec
    if enc.module is not None:
        enc.module.eval().requires_grad_(False)
    return enc


# ---------------------------------------------------------------------------------------------
# Helpers shared by the factories.

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


def random_fingerprint(seed: int) -> str:
    return f"random-init-{seed}"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a weights file (`ptg.pipeline.core.fsio.file_sha256`)."""
    from ..core.fsio import file_sha256

    return file_sha256(path)


def fingerprint_dir(root: Path, subfolders: tuple[str, ...] = ("",)) -> str:
    """SHA-256 over the weight files under the given subfolders (names and bytes, sorted)."""
    h = hashlib.sha256()
    files = sorted(
        p for sub in subfolders for p in (root / sub).rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
    )
    if not files:
        raise PtgError(f"no weight files ({', '.join(_WEIGHT_SUFFIXES)}) under {root}; is this a saved model directory?")
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(bytes.fromhex(sha256_file(p)))
    return h.hexdigest()
