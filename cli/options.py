"""Option aliases shared by several commands (typer `Annotated` style)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ManifestArg = Annotated[Path, typer.Option("--manifest", "-m", help="Manifest (JSONL) of the dataset.")]
RootOpt = Annotated[
    Optional[Path], typer.Option("--root", help="Folder the manifest's paths are relative to (default: its folder).")
]
AllowOutside = Annotated[bool, typer.Option(
    "--allow-outside", help="Accept manifest paths that lead outside the root (absolute, '..', or through a symlink).")]
TrustRecordedOpt = Annotated[bool, typer.Option(
    "--trust-recorded", help="Follow the manifest, root and priors-store paths recorded in a run or export that is not "
                             "yours (your own are followed anyway); without it, name them with --manifest/--root/--priors.")]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; same seed, same result.")]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="Torch device: auto (cuda if present, else cpu) | cpu | cuda | cuda:N.")
]  # use with the default "auto", so every command picks the same device by default
TrustOpt = Annotated[Optional[list[str]], typer.Option(
    "--trust-network", help="A user network (package.module:Class) the checkpoint names that you trust: only names "
                            "passed here are imported (a file alone never makes ptg run code). Repeatable.")]
MaxMemoryOpt = Annotated[str, typer.Option(
    "--max-memory", help="Memory budget per image: auto (half the free RAM, 80% of free GPU memory) or a size like "
                         "8GiB; larger images are tiled automatically.")]
