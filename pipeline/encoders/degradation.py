"""Degradation priors: vectors built from each manifest row's recorded degradation parameters.

Not a neural encoder: no weights, no image is decoded. For data made by `ptg data synth` (or any
manifest whose rows carry a ``degradation`` record) the prior is the ground truth of what happened
to the image, so it is the *positive control* of a study (an oracle prior: if R cannot use this, it
cannot use any) and a real feature for users whose training data is synthetic.

The vector has a fixed layout (`LAYOUT`, version `LAYOUT_VERSION`), fingerprinted so a store, a
run and a reader agree on what each dimension means. Numeric fields are scaled to roughly [0, 1];
each is followed by a presence bit, and a field a row does not record is 0 with presence 0. The
rows are written by the one extraction engine (`DegradationRows` is its row source) into an
ordinary priors store keyed like every other (SHA-256 of the degraded
file's bytes), with every requested view holding the same vector: a flip does not change the
degradation, so the trainer's augmentation finds a prior for every view it draws.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..core.errors import PtgError

LAYOUT_VERSION = 1
TASKS = ("denoise", "lowlight", "blur", "jpeg")  # task one-hot, in this order
BLUR_KINDS = ("motion", "defocus")  # blur kind one-hot, in this order


@dataclass(frozen=True)
class NumericField:
    """One scaled numeric field and its presence bit (two dimensions)."""

    name: str  # name in the layout and in the probe's reports
    sources: tuple[str, ...]  # degradation keys read, first present wins
    scale: Callable[[float], float]  # raw value -> roughly [0, 1]
    scale_doc: str  # the scaling, in words (part of the fingerprint)


NUMERIC = (
    # sigma: Gaussian noise std on 0-255 (denoise's sigma, or blur's additive noise_sigma)
    NumericField("sigma", ("sigma", "noise_sigma"), lambda v: v / 50.0, "sigma/50"),
    NumericField("exposure", ("exposure",), lambda v: v * 5.0, "exposure*5"),
    NumericField("gamma", ("gamma",), lambda v: v / 3.0, "gamma/3"),
    NumericField("photons", ("photons",), lambda v: math.log10(max(v, 1.0)) / 3.0, "log10(photons)/3"),
    NumericField("read_sigma", ("read_sigma",), lambda v: v * 100.0, "read_sigma*100"),
    # blur extent in pixels: motion kernel length, or defocus diameter (2 * radius)
    NumericField("blur_size", ("length", "radius"), lambda v: v / 20.0, "length/20 or 2*radius/20"),
    NumericField("jpeg_quality", ("quality",), lambda v: v / 100.0, "quality/100"),
)


def _layout() -> list[str]:
    names = [f"task={t}" for t in TASKS] + [f"blur_kind={k}" for k in BLUR_KINDS]
    for f in NUMERIC:
        names += [f.name, f"has_{f.name}"]
    return names


LAYOUT: tuple[str, ...] = tuple(_layout())  # name of every dimension
DIM = len(LAYOUT)


def layout_fingerprint() -> str:
    """SHA-256 of the layout (names, scalings, version): what makes two degradation stores comparable."""
    spec = {"version": LAYOUT_VERSION, "layout": LAYOUT, "tasks": TASKS, "blur_kinds": BLUR_KINDS,
            "scales": {f.name: [list(f.sources), f.scale_doc] for f in NUMERIC}}
    return "degradation-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def row_task(extra: Mapping[str, Any]) -> str | None:
    """The degradation task of a manifest row: the degradation record's own ``task`` (all-in-one rows
    record the task chosen for that image) or else the row's ``task``."""
    deg = extra.get("degradation")
    if isinstance(deg, Mapping) and isinstance(deg.get("task"), str):
        return deg["task"]
    task = extra.get("task")
    return task if isinstance(task, str) else None


MAX_SCALED = 1000.0  # scaled fields are ~[0, 1]; far beyond is a typo or a crafted row (float16 tops out at 65504)


def check_scaled(key: str, raw: float, scaled: float, doc: str) -> float:
    """``scaled`` if it is a sane prior value; a finite raw value can still scale to inf in float16."""
    if not math.isfinite(scaled) or abs(scaled) > MAX_SCALED:
        raise PtgError(f"degradation field {key!r} = {raw!r} scales ({doc}) to {scaled:g}, outside +-{MAX_SCALED:g}; "
                       "fix the manifest row (values are on the scales `ptg data synth` records)")
    return scaled


def degradation_vector(extra: Mapping[str, Any]) -> np.ndarray:
    """The prior [DIM] float32 of one manifest row's extra fields (``task``, ``degradation``).

    Raises:
        PtgError: no degradation record, an unknown task or blur kind, a non-numeric field.
    """
    deg = extra.get("degradation")
    if not isinstance(deg, Mapping):
        raise PtgError("the row has no 'degradation' record (made by `ptg data synth`/`samples`)")
    task = row_task(extra)
    if task not in TASKS:
        raise PtgError(f"unknown degradation task {task!r}; the layout knows {', '.join(TASKS)}")
    v = np.zeros(DIM, np.float32)
    v[TASKS.index(task)] = 1.0
    kind = deg.get("kind")
    if task == "blur":
        if kind not in BLUR_KINDS:
            raise PtgError(f"unknown blur kind {kind!r}; the layout knows {', '.join(BLUR_KINDS)}")
        v[len(TASKS) + BLUR_KINDS.index(kind)] = 1.0
    base = len(TASKS) + len(BLUR_KINDS)
    for i, f in enumerate(NUMERIC):
        key = next((k for k in f.sources if deg.get(k) is not None), None)
        if key is None:
            continue
        raw = deg[key]
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
            raise PtgError(f"degradation field {key!r} must be a finite number, got {raw!r}")
        raw = 2.0 * raw if key == "radius" else float(raw)  # defocus: diameter, comparable to a motion length
        v[base + 2 * i] = check_scaled(key, raw, f.scale(raw), f.scale_doc)
        v[base + 2 * i + 1] = 1.0
    return v


def encoder_metadata() -> dict[str, Any]:
    """The ``encoder`` record of a degradation store (same schema as the image encoders')."""
    return {"name": "degradation", "dim": DIM, "fingerprint": layout_fingerprint(), "random_init": False,
            "source": "manifest degradation records", "pooling": "one fixed-layout vector per row (see details.layout)",
            "preprocessing": {"kind": "none"}, "details": {"layout_version": LAYOUT_VERSION, "layout": list(LAYOUT)},
            "spec": None}  # no spec: `ptg restore` must read these priors from a store (--priors)


def default_degradation_store(views: str, dtype: str) -> Path:
    from ..storage.store import cache_root

    return cache_root() / "priors" / f"degradation-{layout_fingerprint()[12:28]}-{views.replace(':', '')}-{dtype}.zarr"


# How `ptg encoders` lists this source beside the registered encoders (columns of `EncoderInfo`).
LISTING = {"name": "degradation", "summary": "the manifest's recorded degradation parameters (task, sigma, exposure, "
           "gamma, photons, read noise, blur kind/size, JPEG quality; presence bits); an oracle prior",
           "dim": str(DIM), "preprocessing": "none: no image is decoded", "default_weights": "none (no weights)"}


class DegradationRows:
    """The extraction engine's row source for degradation priors: one vector per manifest row,
    from its recorded parameters; every view holds the same vector; no image is decoded."""

    name = "degradation"
    dim = DIM
    random_init = False

    def __init__(self) -> None:
        self.fingerprint = layout_fingerprint()
        self.vectors: dict[str, np.ndarray] = {}

    def encoder_metadata(self) -> dict[str, Any]:
        return encoder_metadata()

    def default_store(self, views_spec: str, dtype: str) -> Path:
        return default_degradation_store(views_spec, dtype)

    def check(self, samples: Sequence[Any], keys: Sequence[str], manifest: Path) -> None:
        """Every row needs a usable record, and rows of the same image bytes the same one.

        Raises:
            PtgError: rows without a usable degradation record (all listed with their lines), or two
                rows with the same image bytes but different records; nothing is written.
        """
        vectors, problems = [], []
        for s in samples:
            try:
                vectors.append(degradation_vector(s.extra))
            except PtgError as exc:
                problems.append(f"  line {s.line} (id {s.id!r}): {exc}")
        if problems:
            raise PtgError(f"{len(problems)} row(s) of {manifest} have no usable degradation record; nothing was written:\n"
                           + "\n".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else ""))
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            j = first.setdefault(k, i)
            if j != i and not np.array_equal(vectors[i], vectors[j]):
                raise PtgError(f"rows {samples[j].id!r} (line {samples[j].line}) and {samples[i].id!r} (line {samples[i].line}) "
                               "have the same image bytes but different degradation records; a store row cannot hold both")
        self.vectors = {k: vectors[i] for k, i in first.items()}

    def compute(self, store: Path, tasks: list, views: tuple[str, ...], skip_bad: bool,
                on_progress: Callable[[int], None] | None) -> list:
        from ..storage.store import write_shard

        for sid, keys, _ in tasks:
            block = np.stack([self.vectors[k] for k in keys])[:, None, :].repeat(len(views), axis=1)  # [n, V, D]
            write_shard(store, sid, keys, block)
            if on_progress:
                on_progress(len(keys))
        return []  # a row without a record was refused by `check`


def fields_of(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded degradation fields of a row, flattened for probes: task, blur kind, numerics (raw)."""
    deg = extra.get("degradation") if isinstance(extra.get("degradation"), Mapping) else {}
    out: dict[str, Any] = {"task": row_task(extra)}
    if deg.get("kind") is not None:
        out["blur_kind"] = deg["kind"]
    for f in NUMERIC:
        key = next((k for k in f.sources if deg.get(k) is not None), None)
        if key is not None and isinstance(deg[key], (int, float)) and not isinstance(deg[key], bool):
            out[f.name] = 2.0 * float(deg[key]) if key == "radius" else float(deg[key])
    return out


__all__ = ["DIM", "LAYOUT", "LAYOUT_VERSION", "TASKS", "BLUR_KINDS", "DegradationRows", "degradation_vector",
           "fields_of", "layout_fingerprint", "row_task"]
