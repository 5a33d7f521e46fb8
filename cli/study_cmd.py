"""`ptg study`: does a prior help *your* F? The controlled experiment as one command.

Thin: parses the options into a `StudyConfig` and calls `ptg.ptgrm.study.run_study`; prints each
finished run and, at the end, the verdict table of ``OUT/report.md``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ptg.pipeline.core.errors import PtgError

from .options import ManifestArg, OutDir


def _numbers(text: str, flag: str, kind: type) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        raise PtgError(f"{flag} {text!r}: give positive numbers separated by commas, e.g. {flag} 48,64")
    return values


def study_command(
    manifest: ManifestArg,
    out: OutDir,
    priors: Annotated[list[str], typer.Option("--priors", help="A real priors store (repeat for several): each gets an arm, its constant/shuffled/zero controls, and with several, one arm on all of them.")],
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="The frozen F (registry name: ffdnet, oidn, zero-dce, spandrel, ...); its outputs are cached once under OUT.")] = None,
    baseline_weights: Annotated[Optional[Path], typer.Option("--baseline-weights", help="F's weights (a spandrel checkpoint, a `ptg train` run or state dict).")] = None,
    baseline_arg: Annotated[Optional[list[str]], typer.Option("--baseline-arg", help="F's constructor argument key=value (repeatable), e.g. pretrained=true.")] = None,
    f_outputs: Annotated[Optional[Path], typer.Option("--f-outputs", help="F's outputs already cached (`ptg extract-outputs`, every row and view) instead of --baseline.")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds 0..N-1 of every arm, paired across arms (at least 2).")] = 3,
    steps: Annotated[int, typer.Option("--steps", help="Steps of every run (--budget fixed), or the most a budget run trains (--budget val).")] = 1000,
    budget: Annotated[str, typer.Option("--budget", help="fixed: --steps, --set data.crop / optim.lr as given | val: crop, lr and steps chosen on validation by study v3's rule.")] = "fixed",
    crops: Annotated[str, typer.Option("--crops", help="--budget val: the crops tried, ascending, comma-separated (v3's grid).")] = "48,64,96",
    lrs: Annotated[str, typer.Option("--lrs", help="--budget val: the learning rates tried, comma-separated (v3's grid).")] = "3e-5,1e-4,3e-4",
    val_photos: Annotated[int, typer.Option("--val-photos", help="Training photos drawn into val when the manifest has no val rows (-1: about a quarter, at most 5).")] = -1,
    val_every: Annotated[int, typer.Option("--val-every", help="Validate every N steps (0: steps/10).")] = 0,
    no_combined: Annotated[bool, typer.Option("--no-combined", help="With several --priors, no arm on all of them together.")] = False,
    workers: Annotated[int, typer.Option("--workers", help="Runs side by side on a local dask cluster of N processes (0: one by one in this process).")] = 1,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="Address of a running dask scheduler (tcp://host:8786); OUT and the stores must be readable by its workers.")] = None,
    gpus_per_run: Annotated[int, typer.Option("--gpus-per-run", help="GPUs each run holds (dask resource GPU); 0: CPU runs.")] = 0,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="A `ptg train` override for every run, section.key=value (repeatable), e.g. data.crop=64.")] = None,
) -> None:
    """Does a prior help your F? Train R with each prior, its no-information controls, a
    parameter-matched Large R and the oracle prior over paired seeds; score test once per run and
    write the verdict (OUT/report.md, results.json, PNGs). Rerunning resumes."""
    from ptg.ptgrm.study import Budget, FSpec, StudyConfig, run_study
    from ptg.ptgrm.train.config import parse_set

    from .console import console

    if (baseline is None) == (f_outputs is None):
        raise PtgError("give exactly one of --baseline NAME (F's outputs are cached once) or --f-outputs OUTS")
    f_args = parse_set(list(baseline_arg or []), "--baseline-arg", "key=value (e.g. --baseline-arg pretrained=true)")
    sets = list(set_ or [])
    parsed = parse_set(sets)
    crop, lr = (parsed.get("data") or {}).get("crop"), (parsed.get("optim") or {}).get("lr")
    if budget == "val" and (crop or lr):
        raise PtgError("--budget val chooses the crop and lr on validation: drop --set data.crop / optim.lr, or use --budget fixed")
    grid = {"crops": tuple(sorted(_numbers(crops, "--crops", int))), "lrs": tuple(_numbers(lrs, "--lrs", float))}
    plan_budget = Budget(mode=budget, steps=steps, **({"crop": crop} if crop else {}), **({"lr": lr} if lr else {}), **grid)
    cfg = StudyConfig(manifest=str(manifest), priors=tuple(priors), out=str(out),
                      f=FSpec(baseline=baseline or "", weights=str(baseline_weights) if baseline_weights else None,
                              args=tuple(sorted(f_args.items())), outputs=str(f_outputs) if f_outputs else None),
                      seeds=seeds, budget=plan_budget, sets=tuple(sets), combined=not no_combined, n_val=val_photos,
                      val_every=val_every, workers=workers, scheduler=scheduler, gpus_per_run=gpus_per_run)
    res = run_study(cfg, say=lambda s: console.print(s, highlight=False, markup=False))
    text = (res.folder / "report.md").read_text(encoding="utf-8")
    console.print(text.split("\n## Every arm")[0], highlight=False, markup=False)
    console.print(f"wrote {res.folder}/results.json, report.md, curves.png, verdict.png", highlight=False)
    if res.failed:
        raise PtgError(f"{len(res.failed)} run(s) failed: " + "; ".join(f"{k}: {v}" for k, v in list(res.failed.items())[:3])
                       + ". Rerun the same command to retry them (finished runs are kept)")
