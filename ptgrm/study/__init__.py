"""`ptg study`: the controlled experiment "does this prior help my F?" as a library.

    from ptg.ptgrm.study import StudyConfig, FSpec, Budget, run_study
    res = run_study(StudyConfig(manifest="data/manifest.jsonl", priors=("priors/restoration",),
                                out="study", f=FSpec("ffdnet", args=(("pretrained", True),)),
                                seeds=2, budget=Budget(steps=50)))
    print(res.folder / "report.md")

Modules: `plan` (arms, the frozen study.yaml), `prepare` (val split, F's cached outputs, oracle and
wrong-prior stores, probes), `runs` (one run: train, score test on last.pt, wrong priors),
`budget` (v3's rule on validation), `execute` (one by one or on dask.distributed), `report`
(paired statistics, verdict, markdown and PNG; no torch). Protocol: docs/RESULTS.md; usage: docs/study.md.
"""
from .execute import StudyResult, run_study
from .plan import Arm, Budget, FSpec, StudyConfig, StudyPlan, freeze, load_plan
from .prepare import build_plan, prepare
from .runs import RunSpec, run_one

__all__ = ["Arm", "Budget", "FSpec", "RunSpec", "StudyConfig", "StudyPlan", "StudyResult", "build_plan", "freeze",
           "load_plan", "prepare", "run_one", "run_study"]
