"""Dataset manifests: JSONL, one sample per line.

    {"id": str, "input": path, "target": path or null, "split": "train"|"val"|"test", ...extra}

Paths are relative to the manifest's folder unless a root is given at run time. Every stage reads
manifests through `load_manifest`, which checks every row and reports every problem with its line
number at once, so a user fixes a manifest in one pass instead of one error per run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import PtgError
from .imageio import image_size

SPLITS = ("train", "val", "test")
_REQUIRED = ("id", "input", "split")


@dataclass(frozen=True)
class Sample:
    """One manifest row with its paths resolved against the root."""

    id: str
    input: Path
    target: Path | None
    split: str
    line: int  # 1-based line in the manifest file, for error messages
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    line: int
    id: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (id {self.id!r})" if self.id is not None else "")
        return f"{where}: {self.message}"


class ManifestError(PtgError):
    """A manifest failed validation; `problems` lists every bad row."""

    def __init__(self, path: Path, problems: list[Problem]):
        self.path = path
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"manifest {path} has {len(problems)} problem(s):\n{shown}{more}")


@dataclass
class Manifest:
    path: Path
    root: Path
    samples: list[Sample]

    def split(self, name: str) -> list[Sample]:
        """Samples of one split, in manifest order."""
        if name not in SPLITS:
            raise PtgError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return [s for s in self.samples if s.split == name]

    def __len__(self) -> int:
        return len(self.samples)


def _resolve(root: Path, value: Any, key: str, problems: list[Problem], line: int, sid: str | None) -> Path | None:
    if not isinstance(value, str) or not value:
        problems.append(Problem(line, sid, f"{key!r} must be a non-empty path string, got {value!r}"))
        return None
    p = Path(value)
    full = (p if p.is_absolute() else root / p).resolve()
    if not p.is_absolute() and not full.is_relative_to(root):
        problems.append(Problem(line, sid, f"{key} path {value!r} escapes the root {root}"))
        return None
    return full


def check_manifest(
    path: str | Path, root: str | Path | None = None, check_files: bool = True, check_sizes: bool = True
) -> tuple[list[Sample], list[Problem]]:
    """Parse and validate a manifest; return the good samples and every problem found."""
    path = Path(path)
    if not path.is_file():
        raise PtgError(f"manifest not found: {path}")
    root = (Path(root) if root is not None else path.parent).resolve()
    if not root.is_dir():
        raise PtgError(f"manifest root {root} is not a directory; pass --root DIR pointing at the dataset")
    samples: list[Sample] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(Problem(line_no, None, f"not valid JSON: {exc.msg}"))
                continue
            if not isinstance(row, dict):
                problems.append(Problem(line_no, None, "a row must be a JSON object"))
                continue
            sid = row.get("id")
            missing = [k for k in _REQUIRED if k not in row]
            if missing:
                problems.append(Problem(line_no, sid, f"missing required field(s): {', '.join(missing)}"))
                continue
            if not isinstance(sid, str) or not sid:
                problems.append(Problem(line_no, None, f"'id' must be a non-empty string, got {sid!r}"))
                continue
            n_before = len(problems)
            if sid in seen:
                problems.append(Problem(line_no, sid, f"duplicate id, first used on line {seen[sid]}"))
            else:
                seen[sid] = line_no
            if row["split"] not in SPLITS:
                problems.append(Problem(line_no, sid, f"unknown split {row['split']!r}; use one of {', '.join(SPLITS)}"))
            inp = _resolve(root, row["input"], "input", problems, line_no, sid)
            tgt = None
            if row.get("target") is not None:
                tgt = _resolve(root, row["target"], "target", problems, line_no, sid)
            if check_files:
                for key, p in (("input", inp), ("target", tgt)):
                    if p is not None and not p.is_file():
                        problems.append(Problem(line_no, sid, f"{key} file not found: {p}"))
            if check_sizes and len(problems) == n_before and inp is not None and tgt is not None:
                try:
                    si, st = image_size(inp), image_size(tgt)
                except PtgError as exc:
                    problems.append(Problem(line_no, sid, str(exc)))
                else:
                    if si != st:
                        problems.append(Problem(line_no, sid, f"input is {si[1]}x{si[0]} but target is {st[1]}x{st[0]} (WxH)"))
            if len(problems) == n_before:
                extra = {k: v for k, v in row.items() if k not in ("id", "input", "target", "split")}
                samples.append(Sample(sid, inp, tgt, row["split"], line_no, extra))
    return samples, problems


def load_manifest(
    path: str | Path, root: str | Path | None = None, check_files: bool = True, check_sizes: bool = False
) -> Manifest:
    """Load a manifest, raising `ManifestError` listing every bad row if any row is bad."""
    path = Path(path)
    samples, problems = check_manifest(path, root, check_files=check_files, check_sizes=check_sizes)
    if problems:
        raise ManifestError(path, problems)
    if not samples:
        raise PtgError(f"manifest {path} has no rows")
    return Manifest(path=path, root=(Path(root) if root is not None else path.parent).resolve(), samples=samples)


def write_manifest(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as JSONL; absolute paths under the manifest's folder are made relative to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            row = dict(row)
            for key in ("input", "target"):
                v = row.get(key)
                if v is not None:
                    v = Path(v)
                    if v.is_absolute() and v.resolve().is_relative_to(base):
                        v = v.resolve().relative_to(base)
                    row[key] = v.as_posix()
            f.write(json.dumps(row, sort_keys=False) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a manifest
    return path
