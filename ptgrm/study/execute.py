"""Run a study: plan and freeze it, prepare the shared inputs, run every arm × seed (one by one, or
as dask.distributed tasks), and keep ``results.json`` and the report current as runs finish.

Every run is a task (``pure=False``; ``retries`` for failures); a worker lost mid-run is replaced
by dask's scheduler and the task starts again on another worker, where `run_one` resumes the run
from its ``last.pt``. Results are stored in plan order, never completion order, and hold no
timing and no path: the same study gives the same ``results.json`` with 1 or N workers.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ptg.pipeline.core.errors import PtgError

from . import report as rep
from .budget import choose_budget
from .plan import Arm, StudyConfig, StudyPlan, freeze
from .prepare import Prepared, build_plan, prepare
from .runs import RunSpec, run_one

Say = Callable[[str], None]
RETRIES = 2  # a run that raised (e.g. out of memory on a busy worker) is tried this many more times


@dataclass
class StudyResult:
    """What `run_study` returns: where the study is and what it found."""

    folder: Path  # the study folder
    results: dict[str, Any]  # results.json's content
    failed: dict[str, str] = field(default_factory=dict)  # run name -> why it failed (after retries)


@contextmanager
def executor(cfg: StudyConfig, client: Any = None) -> Iterator[Any]:
    """A dask client (the given one, the scheduler's, or a LocalCluster's), or None for one by one."""
    if client is not None or (cfg.workers == 0 and not cfg.scheduler):
        yield client
        return
    from dask.distributed import Client, LocalCluster

    if cfg.scheduler:
        with Client(cfg.scheduler) as c:
            yield c
        return
    resources = {"GPU": cfg.gpus_per_run} if cfg.gpus_per_run else None
    # processes, one thread each: a run's torch threads are fixed (plan.threads), and a lost worker is one run
    with LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      resources=resources) as cluster, Client(cluster) as c:
        yield c


def execute(specs: Sequence[RunSpec], client: Any, gpus: int, on_done: Callable[[RunSpec, dict[str, Any] | None, str], None]) -> None:
    """Run every spec; ``on_done(spec, record or None, error)`` as each finishes, in completion order."""
    if client is None:
        for s in specs:
            try:
                on_done(s, run_one(s), "")
            except PtgError as exc:
                on_done(s, None, str(exc))
        return
    from dask.distributed import as_completed

    extra = {"resources": {"GPU": gpus}} if gpus else {}
    futures = {client.submit(run_one, s, key=f"ptg-study-{s.name}-{id(s):x}", pure=False, retries=RETRIES, **extra): s
               for s in specs}
    for fut in as_completed(futures):
        s = futures[fut]
        try:
            on_done(s, fut.result(), "")
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded and the others go on
            on_done(s, None, f"{type(exc).__name__}: {exc}")


def spec_of(plan: StudyPlan, prep: Prepared, folder: Path, arm: Arm, seed: int, budget: dict[str, Any],
            name: str | None = None, score: bool = True) -> RunSpec:
    name = name or f"{arm.folder}/s{seed}"
    wrong = tuple((kind, tuple(stores[p] for p in arm.priors)) for kind, stores in prep.wrong.items()) \
        if arm.wrong_prior_test and score else ()
    return RunSpec(name=name, out=str(folder / "runs" / name), arm=arm, seed=seed, crop=int(budget["crop"]),
                   lr=float(budget["lr"]), steps=int(budget["steps"]), manifest=prep.manifest, root=prep.root,
                   f_outputs=prep.f_outputs, stores=tuple(prep.stores[p] for p in arm.priors), wrong=wrong,
                   levels=tuple(sorted(prep.levels.items())), views=plan.views, val_every=plan.val_every,
                   sets=plan.sets, threads=plan.threads, device=plan.device, score=score)


def main_specs(plan: StudyPlan, prep: Prepared, folder: Path, budget: dict[str, Any]) -> list[RunSpec]:
    """Every reported run, seed-major: a study stopped early has every arm at the seeds it reached."""
    return [spec_of(plan, prep, folder, arm, seed, budget) for seed in plan.seeds for arm in plan.arms]


def the_budget(plan: StudyPlan, prep: Prepared, folder: Path, client: Any, gpus: int, say: Say) -> dict[str, Any]:
    """crop, lr, steps of the main runs: as given, or chosen on validation (frozen in budget.json)."""
    b = plan.budget
    if b.mode == "fixed":
        return {"crop": b.crop, "lr": b.lr, "steps": b.steps}
    from ptg.pipeline.core.fsio import atomic_write_json

    path = folder / "budget.json"
    if path.is_file():
        return json.loads(path.read_text())
    main = next(a for a in plan.arms if a.role == "real")
    roles = {"main": main, "constant": next(a for a in plan.arms if a.name == f"{main.name}:constant")}

    def grid(crop: int) -> dict:
        specs = {(role, crop, lr): spec_of(plan, prep, folder, arm, b.seed, {"crop": crop, "lr": lr, "steps": b.steps},
                                          name=f"budget/{role}-c{crop}-lr{lr:g}", score=False)
                 for lr in b.lrs for role, arm in roles.items()}
        got, errors = {}, []
        execute(list(specs.values()), client, gpus, lambda s, r, e: got.update({s.name: r}) if r else errors.append(e))
        if errors:
            raise PtgError(f"budget runs failed: {'; '.join(list(dict.fromkeys(errors))[:3])}")
        return {k: got[s.name]["curve"] for k, s in specs.items()}

    say(f"choosing the budget on validation: {main.name} and its constant control, lr {list(b.lrs)}, crops {list(b.crops)}")
    chosen = choose_budget(b.crops, b.lrs, b.steps, grid)
    atomic_write_json(path, chosen)
    return chosen


def _summary(plan: StudyPlan) -> dict[str, Any]:
    """The plan without paths (results.json is the same on every machine)."""
    return {"f": plan.f.describe(), "priors": [n for n, _ in plan.stores], "seeds": list(plan.seeds),
            "arms": [a.name for a in plan.arms], "budget_mode": plan.budget.mode, "views": plan.views,
            "n_val": plan.n_val, "val_every": plan.val_every, "sets": list(plan.sets), "oracle_note": plan.oracle_note}


def write_outputs(folder: Path, results: dict[str, Any]) -> None:
    """results.json, report.md and the PNGs, each replaced atomically."""
    from ptg.pipeline.core.fsio import atomic_write_json, atomic_write_text

    atomic_write_json(folder / "results.json", results)
    atomic_write_text(folder / "report.md", rep.markdown(results))
    runs = results["runs"]
    if runs:
        rep.plot_curves(runs, folder / "curves.png", f"{results['plan']['f']}: validation PSNR, mean over seeds")
        rows = rep.verdicts(runs)
        if rows:
            rep.plot_verdict(rows, folder / "verdict.png")


def run_study(cfg: StudyConfig, say: Say = lambda s: None, client: Any = None) -> StudyResult:
    """Plan (or check the frozen plan), prepare, run and report a study in ``cfg.out``."""
    folder = Path(cfg.out)
    plan = freeze(build_plan(cfg), folder)
    prep = prepare(plan, folder, say)
    f_label = plan.f.baseline or "F"
    with executor(cfg, client) as c:
        budget = {k: v for k, v in the_budget(plan, prep, folder, c, cfg.gpus_per_run, say).items() if k != "curves"}
        specs = main_specs(plan, prep, folder, budget)
        done: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        results = {"version": 1, "plan": _summary(plan), "budget": budget, "planned_runs": len(specs),
                   "runs": [], "probes": prep.probes}

        def on_done(spec: RunSpec, record: dict[str, Any] | None, error: str) -> None:
            if record is None:
                failed[spec.name] = error
                say(f"FAILED {spec.name}: {error}")
                return
            done[spec.name] = {"f": f_label, **{k: v for k, v in record.items() if k != "spec"}}
            results["runs"] = [done[s.name] for s in specs if s.name in done]  # plan order, not completion order
            write_outputs(folder, results)
            say(f"done {spec.name} ({len(done)}/{len(specs)})")

        say(f"{len(specs)} runs ({len(plan.arms)} arms x {len(plan.seeds)} seeds), budget {budget}")
        execute(specs, c, cfg.gpus_per_run, on_done)
    write_outputs(folder, results)
    return StudyResult(folder=folder, results=results, failed=failed)
