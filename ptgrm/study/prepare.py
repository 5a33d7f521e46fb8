"""Everything the runs share, made once per study folder and reused by every run and rerun.

`build_plan` reads the stores' metadata and the manifest (no pixel) to choose the arms; `prepare`
then writes, under the study folder, what is missing: the manifest with its validation rows, F's
cached outputs, the oracle store, the wrong-prior stores and the probes. Each step is resumable
(the stores compute only missing rows; a probe is redone only when its store or manifest changed).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ptg.pipeline.core.errors import PtgError

from .levels import level_of, wrong_maps
from .plan import ORACLE, Arm, Budget, StudyConfig, StudyPlan, arms_for

Say = Callable[[str], None]


@dataclass
class Prepared:
    """Paths the runs read, all under the study folder except the user's stores and manifest."""

    manifest: str  # the manifest with its val rows (the study's copy when val was drawn)
    root: str | None  # the folder the manifest's paths are relative to (the user's manifest's)
    f_outputs: str  # F's cached outputs of every row and view
    stores: dict[str, str]  # name -> path of every store an arm reads (the oracle's included)
    wrong: dict[str, dict[str, str]]  # kind (other-level | other-image) -> store name -> wrong-prior store
    levels: dict[str, str]  # test row id -> its degradation level ("all" when none is recorded)
    probes: dict[str, Any] = field(default_factory=dict)  # store name -> probe report (paths removed)


def local_or_url(p: str | None) -> str | None:
    """A local path made absolute (runs on other workers and reruns from another folder find it); URLs as given."""
    return p if p is None or "://" in p else str(Path(p).resolve())


def _store_meta(path: str) -> dict[str, Any]:
    from ptg.pipeline.storage.store import open_priors

    return dict(open_priors(path).metadata)


def store_names(paths: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, path, metadata) per store: the encoder's name, made unique with the folder's name."""
    out, seen = [], set()
    for p in paths:
        meta = _store_meta(p)
        name = str((meta.get("encoder") or {}).get("name") or Path(p.rstrip("/")).name)
        if name in seen or name == ORACLE:
            name = f"{name}-{Path(p.rstrip('/')).name}"
        if name in seen:
            raise PtgError(f"--priors {p} is given twice; give each store once")
        seen.add(name)
        out.append((name, p, meta))
    return out


def view_set(views: list[str]) -> str:
    """The `--views` / `data.augment` name of a store's cached views (identity if no set matches)."""
    from ptg.pipeline.datasets.views import VIEW_SETS

    for name in ("d4", "flips"):
        if set(VIEW_SETS[name]) <= set(views):
            return name
    return "identity"


def refiner_args(sets: tuple[str, ...]) -> dict[str, Any]:
    """R's config overrides every run gets from ``--set model.refiner_args.K=V``."""
    from ptg.ptgrm.train.config import parse_set

    return dict((parse_set(list(sets)).get("model") or {}).get("refiner_args") or {})


def param_count(refiner: str, dims: tuple[int, ...], args: dict[str, Any]) -> int:
    from ptg.ptgrm.models import create_model

    return sum(p.numel() for p in create_model(refiner, prior_dims=dims, **args).parameters())


def large_width(dims: tuple[int, ...], args: dict[str, Any]) -> int:
    """Large R's width whose parameter count is the closest to R's on ``dims`` (ties: narrower)."""
    target = param_count("ptgrm", dims, args)
    large_args = {k: v for k, v in args.items() if k != "width"}
    best, width = None, 1
    while width <= 256:
        n = param_count("ptgrm-large", dims, {**large_args, "width": width})
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (width, n)
        if n > target:
            break
        width += 1
    return best[0]


def _has_val(manifest: str) -> tuple[bool, list]:
    from ptg.pipeline.datasets.manifest import load_manifest

    samples = load_manifest(manifest).samples
    return any(s.split == "val" for s in samples), samples


def _oracle(samples: list) -> tuple[bool, str]:
    """Whether the oracle arm is planned: the manifest records a degradation that varies by row."""
    from ptg.pipeline.encoders.degradation import fields_of

    if not all(isinstance(s.extra.get("degradation"), dict) for s in samples):
        return False, "no oracle arm: not every manifest row records its degradation"
    kinds = {json.dumps(fields_of(s.extra), sort_keys=True) for s in samples}
    if len(kinds) < 2:
        return False, "no oracle arm: every row records the same degradation (an oracle would be a constant prior)"
    return True, ""


def _groups(samples: list) -> list[str]:
    """Training groups a validation draw takes whole: the row's photo where recorded, else its id."""
    return sorted({str(s.extra.get("photo", s.id)) for s in samples if s.split == "train"})


def build_plan(cfg: StudyConfig) -> StudyPlan:
    """The arms, seeds and budget of a study (reads store metadata and the manifest; no pixel)."""
    if not cfg.priors:
        raise PtgError("give at least one --priors STORE (the prior whose help the study measures)")
    if cfg.seeds < 2:
        raise PtgError(f"--seeds {cfg.seeds}: the paired statistics need at least 2 seeds")
    if not cfg.f.baseline and not cfg.f.outputs:
        raise PtgError("give F: --baseline NAME (its outputs are cached once), or --f-outputs OUTS")
    if cfg.budget.mode not in ("fixed", "val") or cfg.budget.steps < 1:
        raise PtgError(f"--budget {cfg.budget.mode} --steps {cfg.budget.steps}: use --budget fixed|val and --steps >= 1")
    manifest = str(Path(cfg.manifest).resolve())
    has_val, samples = _has_val(manifest)
    groups = _groups(samples)
    n_val = 0 if has_val else (cfg.n_val if cfg.n_val >= 0 else max(1, min(5, len(groups) // 4)))
    if not has_val and not 0 < n_val < len(groups):
        raise PtgError(f"the manifest has {len(groups)} training photo(s) and no val rows: cannot draw {n_val} for "
                       "validation; add rows with split val or pass another --val-photos")
    named = store_names([local_or_url(p) for p in cfg.priors])
    dims = tuple(int(m["dim"]) for _, _, m in named)
    oracle, note = _oracle(samples)
    views = view_set(list(named[0][2].get("views") or ["identity"]))
    val_every = cfg.val_every or max(1, cfg.budget.steps // 10)
    widest = dims if cfg.combined or len(dims) == 1 else (max(dims),)  # the largest R of the real arms
    width = large_width(widest, refiner_args(cfg.sets))
    return StudyPlan(
        manifest=manifest, stores=tuple((n, p) for n, p, _ in named),
        fingerprints=tuple((n, str(m.get("fingerprint"))) for n, _, m in named),
        f=dataclasses.replace(cfg.f, weights=local_or_url(cfg.f.weights), outputs=local_or_url(cfg.f.outputs)),
        seeds=tuple(range(cfg.seeds)), budget=cfg.budget,
        arms=arms_for([n for n, _, _ in named], cfg.combined, width, oracle), views=views, n_val=n_val,
        sets=tuple(cfg.sets), val_every=val_every, device="cuda" if cfg.gpus_per_run else "cpu", oracle_note=note)


def split_manifest(plan: StudyPlan, folder: Path) -> tuple[str, str | None]:
    """(manifest, root) the runs read: the user's when it has val rows, else the study's copy with
    ``plan.n_val`` training photos moved to val (``random.Random(val_seed).sample(sorted(photos), n)``)."""
    from ptg.pipeline.datasets.manifest import load_manifest, write_manifest

    if plan.n_val == 0:
        return plan.manifest, None
    m = load_manifest(plan.manifest)
    root = str(m.root)
    out = folder / "data" / "manifest.jsonl"
    val = set(random.Random(plan.val_seed).sample(_groups(m.samples), plan.n_val))
    rows = []
    for s in m.samples:
        extra = {k: v for k, v in s.extra.items() if k not in ("id", "input", "target", "split")}
        split = "val" if s.split == "train" and str(s.extra.get("photo", s.id)) in val else s.split
        rows.append({"id": s.id, "input": str(s.input), **({"target": str(s.target)} if s.target else {}),
                     "split": split, **extra})
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if not out.is_file() or out.read_text(encoding="utf-8") != text:
        write_manifest(out, rows)
    return str(out), root


def f_outputs(plan: StudyPlan, folder: Path, manifest: str, root: str | None, say: Say) -> str:
    """F's outputs of every row and view: the given cache, or computed once into ``folder/f-outputs``."""
    if plan.f.outputs:
        return plan.f.outputs
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.pipeline.datasets.views import parse_views
    from ptg.ptgrm.f_outputs import extract_outputs
    from ptg.ptgrm.frozen_f import build_frozen_f

    out = folder / "f-outputs"
    samples = load_manifest(manifest, root).samples
    f = build_frozen_f(plan.f.baseline, plan.f.weights, dict(plan.f.args)).to(plan.device)
    res = extract_outputs(f, plan.f.baseline, samples, parse_views(plan.views), out, device=plan.device)
    say(f"F's outputs: {res.written} computed, {res.reused} reused ({out})")
    return str(out)


def oracle_store(plan: StudyPlan, folder: Path, manifest: str, root: str | None) -> str:
    from ptg.pipeline.priors.extract import extract_priors

    out = folder / "priors" / ORACLE
    extract_priors(manifest, ORACLE, out=out, views=plan.views, root=root, loader_workers=0)
    return str(out)


def build_wrong_store(src: str, out: Path, mapping: dict[str, str]) -> str:
    """A store holding, for each mapped key, the (all-view) vectors of the key it maps to, with the
    source store's metadata (same fingerprint, so an evaluation accepts it in the source's place)."""
    import numpy as np

    from ptg.pipeline.storage.store import allocate_shards, create_or_open_store, open_priors, read_commits, write_shard, writer_lock

    if out.exists() and read_commits(out):
        return str(out)
    reader = open_priors(src)
    keys = sorted(mapping)
    values = reader.get_all_views([mapping[k] for k in keys])
    meta = {**reader.metadata, "wrong_prior_of": Path(str(src)).name}
    with writer_lock(out):
        rows = int(create_or_open_store(out, meta)["rows_per_shard"])
        groups = [list(range(i, min(i + rows, len(keys)))) for i in range(0, len(keys), rows)]
        for sid, g in zip(allocate_shards(out, len(groups)), groups):
            write_shard(out, sid, [keys[i] for i in g], np.asarray(values[g]))
    return str(out)


def cached_probe(folder: Path, name: str, store: str, manifest: str, root: str | None) -> dict[str, Any]:
    """`probe_store` of a store, kept under ``folder/probes`` (redone when the store's commits or the
    manifest change); a probe that cannot run (no recorded field, too few rows) is recorded as why."""
    from ptg.pipeline.core.fsio import atomic_write_json, file_sha256
    from ptg.pipeline.priors.probe import probe_store
    from ptg.pipeline.storage.store import read_commits

    key = hashlib.sha256(json.dumps([file_sha256(manifest), read_commits(store)], default=str).encode()).hexdigest()
    path = folder / "probes" / f"{name}.json"
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["report"]
    try:
        report = probe_store(store, manifest, root=root).to_dict()
        report = {k: v for k, v in report.items() if k not in ("store", "manifest")}  # no machine's paths in results
    except PtgError as exc:
        report = {"error": str(exc).replace(str(store), name).replace(str(manifest), "the manifest")}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"key": key, "report": report})
    return report


def prepare(plan: StudyPlan, folder: Path, say: Say = lambda s: None) -> Prepared:
    """Every shared input of the runs, computing only what is missing."""
    from ptg.pipeline.datasets.manifest import load_manifest

    manifest, root = split_manifest(plan, folder)
    outs = f_outputs(plan, folder, manifest, root, say)
    stores = dict(plan.stores)
    if any(a.role == "oracle" for a in plan.arms):
        stores[ORACLE] = oracle_store(plan, folder, manifest, root)
    test = load_manifest(manifest, root).split("test")
    if not test:
        raise PtgError(f"the manifest {plan.manifest} has no test rows: the study scores test once per run")
    levels = {s.id: level_of(s.extra) or "all" for s in test}
    wrong: dict[str, dict[str, str]] = {}
    for kind, mapping in wrong_maps(test).items():
        wrong[kind] = {n: build_wrong_store(p, folder / "priors" / "wrong" / f"{n}-{kind}", mapping)
                       for n, p in stores.items()}
    probes = {n: cached_probe(folder, n, p, manifest, root) for n, p in stores.items()}
    say(f"prepared: {len(stores)} store(s), {len(test)} test rows, wrong-prior kinds {', '.join(wrong) or 'none'}")
    return Prepared(manifest=manifest, root=root, f_outputs=outs, stores=stores, wrong=wrong, levels=levels, probes=probes)


__all__ = ["Arm", "Budget", "Prepared", "build_plan", "prepare"]
