"""The plan of a study: which arms, seeds and budget; frozen in ``DIR/study.yaml``.

A study asks one question of one frozen F: does a cached prior help R refine F's outputs, beyond
R's capacity and beyond the same R fed no information? The arms (protocol: docs/RESULTS.md, v3):

- ``R:<prior>`` per real prior store (and ``R:<a>+<b>`` with every store when there are several);
- ``R:<prior>:constant|shuffled|zero`` on the same stores (`priors.control`): same mappings and
  parameter count, no per-image information;
- ``LargeR``: PTG-RM at 4× width without priors, its width chosen so that its parameter count is
  the closest to the largest R's;
- ``R:degradation``: the oracle prior (the manifest's recorded degradation), where it varies;
- F alone: the cached outputs every run is scored against (no run of its own).

The plan holds no derived state (no budget chosen, no result): changing any option a run depends
on changes the plan, and `freeze` refuses it, naming what changed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ptg.pipeline.core.errors import PtgError

PLAN_VERSION = 1
CONTROLS = {"constant": "constant", "shuffled": "shuffle", "zero": "zero"}  # arm suffix -> priors.control
ORACLE = "degradation"  # the oracle prior's store name (the manifest's recorded degradation)
BUDGETS = ("fixed", "val")


@dataclass(frozen=True)
class Arm:
    """One trained arm: R on some priors stores under one control."""

    name: str  # "R:imagenet", "R:imagenet:constant", "LargeR", "R:degradation"
    priors: tuple[str, ...]  # store names, in the order R reads them
    control: str = "real"  # priors.control: real | shuffle | constant | zero
    refiner: str = "ptgrm"  # R's registry name (ptgrm | ptgrm-large)
    refiner_args: tuple[tuple[str, Any], ...] = ()  # R config overrides of this arm (Large R's width)
    role: str = "real"  # real | control | large | oracle: what the report compares it as

    @property
    def folder(self) -> str:
        """The run folder's name: the arm's name with no ':' (a path separator on some systems)."""
        return self.name.replace(":", "-").replace("+", "_")

    @property
    def wrong_prior_test(self) -> bool:
        """Real-information arms are also scored with another level's / another image's prior."""
        return self.role in ("real", "oracle")


@dataclass(frozen=True)
class FSpec:
    """The frozen F: built from the registry once to cache its outputs, or outputs given."""

    baseline: str = ""  # registry name (see `ptg models`): ffdnet, oidn, zero-dce, spandrel, ...
    weights: str | None = None  # F's weights file (spandrel checkpoint, `ptg train` run or state dict)
    args: tuple[tuple[str, Any], ...] = ()  # F's constructor arguments (--baseline-arg key=value)
    outputs: str | None = None  # F's outputs already cached (`ptg extract-outputs` store): no F is built

    def describe(self) -> str:
        if self.outputs and not self.baseline:
            return "cached outputs"
        args = ", ".join(f"{k}={v}" for k, v in self.args)
        return self.baseline + (f" ({args})" if args else "")


@dataclass(frozen=True)
class Budget:
    """Crop, learning rate and steps of every main run."""

    mode: str = "fixed"  # fixed: crop/lr/steps as given | val: chosen on validation by the v3 rule
    steps: int = 1000  # fixed: the steps of every run; val: the most steps a budget run trains
    crop: int = 48  # fixed: training crop side (v3's chosen crop for FFDNet and OIDN)
    lr: float = 3e-4  # fixed: Adam lr (v3's chosen lr for every F)
    lrs: tuple[float, ...] = (3e-5, 1e-4, 3e-4)  # val: the learning rates tried (v3's grid)
    crops: tuple[int, ...] = (48, 64, 96)  # val: the crops tried, ascending (v3's grid)
    seed: int = 100  # val: the one seed budget runs use (never a reported seed)


@dataclass(frozen=True)
class StudyPlan:
    """Everything a study's runs depend on. ``study.yaml`` is this, saved."""

    manifest: str  # the manifest given (absolute)
    stores: tuple[tuple[str, str], ...]  # (name, path) of each real prior store, in --priors order
    fingerprints: tuple[tuple[str, str], ...]  # (name, encoder fingerprint): a replaced store is another plan
    f: FSpec  # the frozen F
    seeds: tuple[int, ...]  # the reported seeds
    budget: Budget  # crop, lr, steps
    arms: tuple[Arm, ...]  # every trained arm
    views: str = "flips"  # views of F's outputs and of the oracle store (= data.augment of every run)
    n_val: int = 0  # validation groups drawn from train when the manifest has no "val" rows (0: none drawn)
    val_seed: int = 1234  # seed of that draw (v3: random.Random(1234).sample(sorted(train), n))
    sets: tuple[str, ...] = ()  # --set overrides passed to every run, after the study's own
    val_every: int = 100  # validation every N steps (the curves; v3: 100)
    threads: int = 1  # torch threads per run: fixed, so that results do not depend on the machine
    device: str = "cpu"  # torch device of every run (cuda with --gpus-per-run)
    oracle_note: str = ""  # why there is no oracle arm, when there is none
    version: int = PLAN_VERSION

    def store_path(self, name: str) -> str:
        return dict(self.stores)[name]

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _plain(value: Any) -> Any:
    """Tuples as lists (YAML and JSON agree on lists), recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def arms_for(names: list[str], combined: bool, large_width: int | None, oracle: bool) -> tuple[Arm, ...]:
    """Every trained arm of the study, real arms first (the order of the report's rows)."""
    real = [(n, (n,)) for n in names]
    if combined and len(names) > 1:
        real.append(("+".join(names), tuple(names)))
    out = [Arm(f"R:{n}", p) for n, p in real]
    # each real arm's controls read its own stores: the same mappings and parameter count
    out += [Arm(f"R:{n}:{c}", p, control, role="control") for n, p in real for c, control in CONTROLS.items()]
    if large_width is not None:
        widest = max(real, key=lambda np_: len(np_[1]))[1]  # Large R reads no prior; trained on the widest stores
        out.append(Arm("LargeR", widest, refiner="ptgrm-large", refiner_args=(("width", large_width),), role="large"))
    if oracle:
        out.append(Arm(f"R:{ORACLE}", (ORACLE,), role="oracle"))
    return tuple(out)


def save(plan: StudyPlan, path: Path) -> None:
    from ptg.pipeline.core.fsio import atomic_write_text

    text = "# ptg study plan: frozen; a rerun with other options is refused (use another --out)\n"
    atomic_write_text(path, text + yaml.safe_dump(plan.to_dict(), sort_keys=False))


def _diff(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in dict.fromkeys([*old, *new]):
            out += _diff(old.get(k), new.get(k), f"{where}.{k}" if where else k)
        return out
    return [] if old == new else [f"{where} ({_short(old)} -> {_short(new)})"]


def _short(v: Any) -> str:
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."


def freeze(plan: StudyPlan, folder: Path) -> StudyPlan:
    """Write ``folder/study.yaml``, or check that the one there is this plan.

    Raises:
        PtgError: the folder holds another study's plan (names every field that differs).
    """
    path = folder / "study.yaml"
    if path.is_symlink():
        raise PtgError(f"{path} is a symbolic link; a study folder's plan must be a plain file")
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        save(plan, path)
        return plan
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PtgError(f"{path} is not a readable study plan ({exc}); use another --out") from None
    changed = _diff(old if isinstance(old, dict) else {}, plan.to_dict())
    if changed:
        raise PtgError(f"{folder} holds another study: its plan differs in {'; '.join(changed[:8])}"
                       f"{' ...' if len(changed) > 8 else ''}. Rerun with the same options to resume, or use another --out")
    return plan


def load_plan(folder: Path) -> dict[str, Any]:
    """The saved plan of a study folder, as plain data (reports need no torch)."""
    path = folder / "study.yaml"
    if not path.is_file():
        raise PtgError(f"{folder} holds no study (no study.yaml); run `ptg study ... --out {folder}` first")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class StudyConfig:
    """What the user asks (`ptg study`'s options); `build_plan` turns it into a `StudyPlan`."""

    manifest: str  # manifest of the data (rows: train, test, and val or a val drawn from train)
    priors: tuple[str, ...]  # real priors stores (folders or bucket URLs), one arm each
    out: str  # the study folder
    f: FSpec = field(default_factory=FSpec)  # the frozen F, or its cached outputs
    seeds: int = 3  # seeds 0..seeds-1 of every arm (paired across arms)
    budget: Budget = field(default_factory=Budget)  # fixed or chosen on validation
    sets: tuple[str, ...] = ()  # --set section.key=value for every run (e.g. data.batch_size=4)
    combined: bool = True  # with several priors, also R on all of them together (v3's R:both)
    n_val: int = -1  # validation groups drawn from train if the manifest has no val rows (-1: about a fifth, at most 5)
    val_every: int = 0  # validation every N steps (0: steps / 10, at least 1)
    workers: int = 1  # LocalCluster worker processes (0: the runs one by one in this process)
    scheduler: str | None = None  # address of a running dask scheduler instead of a LocalCluster
    gpus_per_run: int = 0  # GPUs each run holds (dask resource "GPU"); 0: CPU runs
