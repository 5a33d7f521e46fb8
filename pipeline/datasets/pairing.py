"""Build manifests from folders: paired trees in the common layouts, and the benchmark templates.

Pairs are matched by a key: the file stem by default, or the first group of a regular expression
(LOL-real names its pairs ``low00001.png`` / ``normal00001.png``). Files without a partner are
reported, never silently dropped. Ids are flat file names: folder levels are joined with ``__``
(`ptg.pipeline.datasets.manifest.id_from_parts`).

A pair whose path names no split (a flat ``input/`` + ``target/`` folder) is drawn into train or
test by a seeded, image-level ratio (`assign_splits`), so a flat folder never becomes all-test.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import PtgError
from ..core.imageio import is_image_file
from .manifest import SPLITS, id_from_parts, load_manifest
from .synth import NoiseParams, synthesize

# (degraded, clean) folder-name pairs seen in public restoration datasets, compared lower-case.
PAIR_NAMES = (("input", "target"), ("lq", "gt"), ("low", "high"), ("low", "normal"), ("blur", "sharp"),
              ("noisy", "clean"), ("rain", "norain"), ("inputc", "target"), ("degraded", "clean"))
TRAIN_WORDS = {"train", "training", "our485", "trainset"}
TEST_WORDS = {"test", "testing", "eval15", "testset"}
VAL_WORDS = {"val", "valid", "validation"}


@dataclass
class PairReport:
    """The outcome of pairing: rows for the manifest and everything that did not pair."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # files with no partner, relative to the root
    missing: list[str] = field(default_factory=list)  # expected folders/files absent, human sentences
    outside: list[str] = field(default_factory=list)  # links leading out of the root, left out (relative to it)
    drawn: int = 0  # rows whose split was drawn by `assign_splits` (their path named none)

    def counts(self) -> dict[str, int]:
        """Rows per split, in SPLITS order, splits with no rows left out."""
        return {s: n for s in SPLITS if (n := sum(1 for r in self.rows if r["split"] == s))}


def _images(folder: Path, recursive: bool) -> list[Path]:
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and is_image_file(p))


def _inside(paths: list[Path], root: Path, report: PairReport) -> list[Path]:
    """The paths whose real file lies under ``root``; a symlink leading out is left out and reported
    (a manifest built from a shared tree must not make later commands read the victim's files)."""
    real_root = root.resolve()
    keep = []
    for p in paths:
        if p.resolve().is_relative_to(real_root):
            keep.append(p)
        else:
            report.outside.append(p.relative_to(root).as_posix())
    return keep


def _key(path: Path, base: Path, pattern: re.Pattern | None) -> str | None:
    rel = path.relative_to(base).with_suffix("")
    if pattern is None:
        return rel.as_posix()
    m = pattern.fullmatch(rel.name)
    return (rel.parent / m.group(1)).as_posix() if m else None


def pair_folders(
    root: Path, inp: Path, tgt: Path, split: str, id_prefix: str, report: PairReport,
    input_key: str | None = None, target_key: str | None = None, recursive: bool = False,
    target_per_folder: bool = False, folder_filter: str | None = None, extra: dict[str, Any] | None = None,
) -> None:
    """Match files of `inp` with files of `tgt` by key and append rows/unmatched to `report`.

    When `inp` and `tgt` are one folder (SIDD keeps NOISY_ and GT_ files side by side), a file that
    fits neither key belongs to the other side and is not reported.
    """
    pi = re.compile(input_key) if input_key else None
    pt = re.compile(target_key) if target_key else None
    keep = re.compile(folder_filter) if folder_filter else None
    inputs = _inside(_images(inp, recursive), root, report)
    targets = _inside(_images(tgt, recursive), root, report)
    if keep is not None:  # scene folders of one split (SID: scene ids starting with 1 are test)
        inputs = [i for i in inputs if keep.fullmatch(i.relative_to(inp).parts[0])]
        targets = [t for t in targets if keep.fullmatch(t.relative_to(tgt).parts[0])]
    shared = inp.resolve() == tgt.resolve()
    if shared:
        inputs = [i for i in inputs if _key(i, inp, pi) is not None]
        targets = [t for t in targets if _key(t, tgt, pt) is not None]
    if target_per_folder:
        # SID-style: many short exposures per scene folder share the scene's one long exposure.
        by_folder: dict[str, Path] = {}
        for t in targets:
            by_folder.setdefault(t.parent.relative_to(tgt).as_posix(), t)
        for i in inputs:
            folder = i.parent.relative_to(inp).as_posix()
            t = by_folder.get(folder)
            if t is None:
                report.unmatched.append(i.relative_to(root).as_posix())
                continue
            sid = id_from_parts(id_prefix, i.relative_to(inp).with_suffix("").as_posix())
            report.rows.append({"id": sid, "input": i, "target": t, "split": split, **(extra or {})})
        return
    tmap: dict[str, Path] = {}
    for t in targets:
        k = _key(t, tgt, pt)
        if k is None:
            report.unmatched.append(t.relative_to(root).as_posix())
        else:
            tmap[k] = t
    used = set()
    for i in inputs:
        k = _key(i, inp, pi)
        if k is None or k not in tmap:
            report.unmatched.append(i.relative_to(root).as_posix())
            continue
        used.add(k)
        report.rows.append({"id": id_from_parts(id_prefix, k), "input": i, "target": tmap[k], "split": split, **(extra or {})})
    report.unmatched += [tmap[k].relative_to(root).as_posix() for k in sorted(set(tmap) - used)]


def _split_from_path(parts: tuple[str, ...], default: str | None) -> str | None:
    for part in parts:
        low = part.lower()
        if low in TRAIN_WORDS:
            return "train"
        if low in TEST_WORDS:
            return "test"
        if low in VAL_WORDS:
            return "val"
    return default


def assign_splits(rows: list[dict[str, Any]], test_fraction: float, seed: int) -> None:
    """Set ``split`` of `rows` in place: a seeded draw of round(test_fraction * n) test rows, the rest train.

    Image-level and order-independent: rows are sorted by id before the seeded shuffle, so the same
    folder and seed give the same split on any machine. With two or more rows and 0 < fraction < 1,
    each side gets at least one row.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise PtgError(f"--test-fraction must be in [0, 1), got {test_fraction}; e.g. 0.2 keeps a fifth for testing")
    order = sorted(range(len(rows)), key=lambda i: rows[i]["id"])
    random.Random(seed).shuffle(order)
    n_test = round(test_fraction * len(rows))
    if test_fraction > 0 and len(rows) >= 2:
        n_test = min(max(n_test, 1), len(rows) - 1)
    for rank, i in enumerate(order):
        rows[i]["split"] = "test" if rank < n_test else "train"


def pair_tree(root: str | Path, default_split: str | None = None, test_fraction: float = 0.2,
              seed: int = 0) -> PairReport:
    """Find every folder holding a (degraded, clean) child pair under `root` and pair its files.

    The split comes from the path (train/test/val words, LOL's our485/eval15); pairs whose path
    names none get `default_split` when given, else a seeded draw with `test_fraction` of them in
    test (`assign_splits`; ``report.drawn`` counts them). Ids join the relative path of the pair's
    parent folder and the key with ``__``, so Rain13K-style trees with several test sets
    (test/Rain100H/input, test/Rain100L/input) get distinct, flat ids.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise PtgError(f"folder not found: {root}")
    if default_split is not None and default_split not in SPLITS:
        raise PtgError(f"--split {default_split!r} is not one of {', '.join(SPLITS)}")
    report = PairReport()
    for parent in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        children = {c.name.lower(): c for c in parent.iterdir() if c.is_dir()}
        for din, dtg in PAIR_NAMES:
            if din in children and dtg in children:
                rel = parent.relative_to(root)
                prefix = "" if rel == Path(".") else rel.as_posix()
                split = _split_from_path(rel.parts, default_split)
                pair_folders(root, children[din], children[dtg], split or "", prefix, report)
                break
    unsplit = [r for r in report.rows if not r["split"]]
    if unsplit:
        assign_splits(unsplit, test_fraction, seed)
        report.drawn = len(unsplit)
    if not report.rows and not report.unmatched:
        names = ", ".join(f"{a}/+{b}/" for a, b in PAIR_NAMES[:6])
        raise PtgError(f"no paired folders found under {root}; expected sibling folders like {names}")
    return report


# ---------------------------------------------------------------------------------------------
# Benchmark templates (data_manifests/*.yaml)


def template_dir() -> Path:
    from ptg.data_manifests import TEMPLATE_DIR

    return TEMPLATE_DIR


def list_datasets() -> list[str]:
    return sorted(p.stem for p in template_dir().glob("*.yaml"))


def load_template(name: str) -> dict[str, Any]:
    path = template_dir() / f"{name.lower()}.yaml"
    if not path.is_file():
        raise PtgError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    with open(path, encoding="utf-8") as f:
        tpl = yaml.safe_load(f)
    for key in ("name", "task", "sets"):
        if key not in tpl:
            raise PtgError(f"template {path} lacks the required key {key!r}")
    return tpl


def build_from_template(name: str, root: str | Path, out: str | Path | None = None,
                        sigma: float | None = None, seed: int = 0) -> PairReport:
    """Pair the files of a benchmark laid out as its template describes; report what is missing.

    Clean-only sets (the Gaussian-denoising test sets such as CBSD68) get their noisy inputs made
    here, deterministically from `seed`, at noise level `sigma`, under `out/<set>/`.
    """
    tpl = load_template(name)
    root = Path(root).resolve()
    if not root.is_dir():
        raise PtgError(f"dataset root not found: {root}; pass --root pointing at your copy of {tpl['name']}")
    report = PairReport()
    for s in tpl["sets"]:
        split, set_name = s["split"], s["name"]
        extra = {"task": tpl["task"], "set": set_name}
        if "clean" in s:
            folder = root / s["clean"]
            if not folder.is_dir():
                report.missing.append(f"{set_name}: folder {s['clean']}/ not found")
                continue
            if sigma is None or out is None:
                raise PtgError(f"{tpl['name']} is a clean-only set: pass --sigma (noise level, 0-255 scale) "
                               "and --out DIR, and its noisy inputs are synthesised there")
            gray = bool(s.get("gray", False))
            made = synthesize(folder, Path(out) / set_name, "denoise", NoiseParams(sigma=sigma, gray=gray),
                              seed=seed, split=split)
            rows = load_manifest(made).samples
            for r in rows:
                report.rows.append({"id": id_from_parts(set_name, r.id), "input": r.input, "target": r.target,
                                    "split": split, **extra, **r.extra})
            n = len(rows)
        else:
            inp, tgt = root / s["input"], root / s["target"]
            absent = [d for d in (s["input"], s["target"]) if not (root / d).is_dir()]
            if absent:
                report.missing.append(f"{set_name}: folder(s) {', '.join(a + '/' for a in absent)} not found")
                continue
            before = len(report.rows)
            pair_folders(root, inp, tgt, split, set_name, report, s.get("input_key"), s.get("target_key"),
                         s.get("recursive", False), s.get("target_per_folder", False), s.get("folder_filter"), extra)
            n = len(report.rows) - before
        expected = s.get("count")
        if expected is not None and n != expected:
            report.missing.append(f"{set_name}: expected {expected} pairs, found {n}")
    return report
