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
                "--seed", str(seed), "--out", str(run), "--set", "data.augment=flips"]  # same views in both runs
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
    _explain_deltas(out)
    console.print(f"everything is under {out}/ (report: {out}/report/report.md, grids: {out}/eval/joint/grids/)",
                  highlight=False)


def _explain_deltas(out: Path) -> None:
    """The two deltas the demo shows, side by side, each named by what it compares.

    The report's delta compares F + PTG-RM with F trained alone (two separate runs: the paper's
    Table 1). The joint run's own eval table compares R's output with the F trained with it, in the
    same run (what R adds on top of its partner F). They differ, and both are true.
    """
    from ptg.ptgrm.report import load_summary

    alone, joint = load_summary(out / "eval" / "baseline"), load_summary(out / "eval" / "joint")
    if joint.refined is None:
        raise PtgError(f"{out}/eval/joint has no F + PTG-RM scores; run `ptg demo --out {out}` again")
    f_alone, f_joint, refined = alone.base["psnr"], joint.base["psnr"], joint.refined["psnr"]
    rows = [
        ("F trained alone (runs/baseline)", f_alone, ""),
        ("F trained jointly with R, R not applied", f_joint, ""),
        ("F + PTG-RM (runs/joint)", refined,
         f"{refined - f_alone:+.2f} dB vs F alone (the report's delta); "
         f"{refined - f_joint:+.2f} dB vs its own F (the joint eval's delta)"),
    ]
    width = max(len(r[0]) for r in rows)
    console.print(f"test PSNR on {joint.n} image(s):", highlight=False)
    for label, psnr, note in rows:
        console.print(f"  {label:<{width}}  {psnr:6.2f} dB  {note}".rstrip(), highlight=False, soft_wrap=True)
