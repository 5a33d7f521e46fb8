"""`ptg demo`: the whole product on real sample data, in one command (the README's main job).

It runs the same commands a user would, in order, so what it shows is what they get:
samples → extract-priors (imagenet, real weights) → train F alone → train F + PTG-RM → eval both →
report. Re-running continues: the store reuses its rows, a finished run is kept, and a run with a
checkpoint resumes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ptg.pipeline.errors import PtgError

from .console import console


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for data, priors, runs and the report.")] = Path("ptg-demo"),
    task: Annotated[str, typer.Option(help="denoise | lowlight")] = "denoise",
    sigma: Annotated[float, typer.Option(help="denoise: noise level (0-255).")] = 25.0,
    steps: Annotated[int, typer.Option(help="Training steps of each run.")] = 300,
    max_side: Annotated[int, typer.Option(help="Downscale the sample photos to this longer side.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the data, the priors' order and both runs.")] = 0,
) -> None:
    """Build real sample data, extract imagenet priors, train F and F + PTG-RM, evaluate, report."""
    from .app import main

    if steps < 1:
        raise PtgError(f"--steps must be at least 1, got {steps}")
    data, store = out / "data", out / "priors" / "imagenet"
    manifest = data / "manifest.jsonl"
    stages: list[tuple[str, list[str]]] = [
        ("real sample data", ["data", "samples", "--out", str(data), "--task", task, "--sigma", str(sigma),
                              "--max-side", str(max_side), "--seed", str(seed)]),
        ("imagenet priors (EfficientNet-Lite0, real weights)",
         ["extract-priors", "--model", "imagenet", "--manifest", str(manifest), "--out", str(store), "--views", "flips"]),
    ]
    for mode in ("baseline", "joint"):
        run = out / "runs" / mode
        if (run / "final.json").is_file():
            console.print(f"[dim]run {run} is finished; kept[/]")
            continue
        argv = ["train", "--preset", "samples", "--manifest", str(manifest), "--mode", mode, "--steps", str(steps),
                "--seed", str(seed), "--out", str(run)]
        if mode == "joint":
            argv += ["--priors", str(store)]
        if (run / "checkpoints" / "last.pt").is_file():
            argv.append("--resume")
        stages.append((f"train {'F alone' if mode == 'baseline' else 'F + PTG-RM'}", argv))
    for mode in ("baseline", "joint"):
        stages.append((f"evaluate {mode}", ["eval", "--run", str(out / "runs" / mode), "--out", str(out / "eval" / mode)]))
    stages.append(("report", ["report", str(out / "eval" / "baseline"), str(out / "eval" / "joint"), "--out", str(out / "report")]))

    for i, (title, argv) in enumerate(stages, start=1):
        console.rule(f"[bold]{i}/{len(stages)} {title}")
        console.print(f"[dim]$ ptg {' '.join(argv)}[/]", highlight=False)
        code = main(argv)
        if code != 0:
            raise PtgError(f"demo stopped at stage {i} ({title}); fix the error above and run `ptg demo` again "
                           "to continue from there")
    console.rule("[bold]result")
    console.print((out / "report" / "report.md").read_text(encoding="utf-8"), highlight=False)
    console.print(f"everything is under {out}/ (grids: {out}/eval/joint/grids/)")
