"""Dataset manifests: JSONL, one sample per line.

    {"id": str, "input": path, "target": path or null, "split": "train"|"val"|"test", ...extra}

Paths are relative to the manifest's folder unless a root is given at run time. Every stage reads
manifests through `load_manifest`, which checks every row and reports every problem with its line
number at once, so a user fixes a manifest in one pass instead of one error per run.

An id names the files written for its row (``<id>.png`` under an output folder), so it must be a
safe file name: no path separator, no ``..``, no control character (`id_problem`). Folder pairing
joins nested names with ``__`` (`id_from_parts`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from ..core.errors import PtgError
from ..core.fsio import atomic_write_text
from ..core.imageio import image_size, read_image
from ..core.limits import MAX_ID_BYTES

SPLITS = ("train", "val", "test")
_REQUIRED = ("id", "input", "split")
ID_SEP = "__"  # joins folder levels into one flat id: test/Rain100H/1 -> test__Rain100H__1
# Where paths may lead: "refuse" nothing outside the root; "absolute" absolute paths may point anywhere
# (relative ones must stay inside); "allow" anything.
Outside = Literal["refuse", "absolute", "allow"]


def id_problem(sid: object) -> str | None:
    """Why `sid` is not a safe manifest id (a file name on every OS), or None when it is."""
    if not isinstance(sid, str) or not sid.strip():
        return f"'id' must be a non-empty string, got {sid!r}"
    if "/" in sid or "\\" in sid:
        return f"id {sid!r} contains a path separator; ids name output files, use e.g. {id_from_parts(sid)!r}"
    if sid in (".", ".."):
        return f"id {sid!r} is '.' or '..'; give the row a name such as 'img001'"
    if len(sid.encode("utf-8")) > MAX_ID_BYTES:
        return (f"id {sid[:40]!r}... is {len(sid.encode('utf-8'))} bytes long; ids name output files, keep them under "
                f"{MAX_ID_BYTES} bytes")
    bad = [c for c in sid if ord(c) < 32 or ord(c) == 127]
    if bad:
        return f"id {sid!r} contains control character(s) {''.join(bad)!r}; remove them"
    return None


def id_from_parts(*parts: str) -> str:
    """One flat, safe id from path-like parts: every folder level joined with `ID_SEP`."""
    pieces = [p for part in parts for p in str(part).replace("\\", "/").split("/") if p not in ("", ".")]
    return ID_SEP.join(pieces)


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


def _resolve(root: Path, value: Any, key: str, problems: list[Problem], line: int, sid: str | None,
             outside: Outside) -> Path | None:
    if not isinstance(value, str) or not value:
        problems.append(Problem(line, sid, f"{key!r} must be a non-empty path string, got {value!r}"))
        return None
    p = Path(value)
    full = (p if p.is_absolute() else root / p).resolve()  # resolve(): a symlink counts where it leads
    if full.is_relative_to(root) or outside == "allow" or (outside == "absolute" and p.is_absolute()):
        return full
    how = "is an absolute path" if p.is_absolute() else "leads (through '..' or a symlink) to a file"
    problems.append(Problem(line, sid, f"{key} path {value!r} {how} outside the root {root}; move the file under "
                                       "the root, pass --root DIR above it, or allow it with --allow-outside"))
    return None


def _parse_row(text: str, line: int, problems: list[Problem]) -> dict[str, Any] | None:
    """One JSONL line as an object, or None (blank, or a problem recorded)."""
    if not text.strip():
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(Problem(line, None, f"not valid JSON: {exc.msg}"))
        return None
    except RecursionError:
        problems.append(Problem(line, None, "a row nested too deeply to parse (a crafted file?)"))
        return None
    if not isinstance(row, dict):
        problems.append(Problem(line, None, "a row must be a JSON object"))
        return None
    return row


def check_manifest(
    path: str | Path, root: str | Path | None = None, check_files: bool = True, check_sizes: bool = True,
    decode: bool = False, outside: Outside = "refuse", on_row: Callable[[int], None] | None = None,
) -> tuple[list[Sample], list[Problem]]:
    """Parse and validate a manifest; return the good samples and every problem found.

    Args:
        path: the JSONL manifest.
        root: folder relative paths are resolved against (default: the manifest's folder).
        check_files: the files must exist.
        check_sizes: input and target must have the same size (read from the headers).
        decode: decode every image in full (finds truncated or corrupt files a header read misses).
        outside: where paths may lead (see `Outside`); by default nowhere outside the root, so a shared
            manifest cannot make a command read (or hash into a store) any file the user can read.
        on_row: called with 1 after each row (progress).
    """
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
            row = _parse_row(text, line_no, problems)
            if row is None:
                continue
            sid = row.get("id")
            missing = [k for k in _REQUIRED if k not in row]
            if missing:
                problems.append(Problem(line_no, sid, f"missing required field(s): {', '.join(missing)}"))
                continue
            bad_id = id_problem(sid)
            if bad_id is not None:
                problems.append(Problem(line_no, None, bad_id))
                continue
            n_before = len(problems)
            if sid in seen:
                problems.append(Problem(line_no, sid, f"duplicate id, first used on line {seen[sid]}"))
            else:
                seen[sid] = line_no
            if row["split"] not in SPLITS:
                problems.append(Problem(line_no, sid, f"unknown split {row['split']!r}; use one of {', '.join(SPLITS)}"))
            inp = _resolve(root, row["input"], "input", problems, line_no, sid, outside)
            tgt = None
            if row.get("target") is not None:
                tgt = _resolve(root, row["target"], "target", problems, line_no, sid, outside)
            if check_files:
                for key, p in (("input", inp), ("target", tgt)):
                    if p is not None and not p.is_file():
                        problems.append(Problem(line_no, sid, f"{key} file not found: {p}"))
            if (check_sizes or decode) and len(problems) == n_before and inp is not None:
                _check_images(inp, tgt, decode, check_sizes, problems, line_no, sid)
            if on_row is not None:
                on_row(1)
            if len(problems) == n_before:
                extra = {k: v for k, v in row.items() if k not in ("id", "input", "target", "split")}
                samples.append(Sample(sid, inp, tgt, row["split"], line_no, extra))
    return samples, problems


def _check_images(inp: Path, tgt: Path | None, decode: bool, check_sizes: bool, problems: list[Problem],
                  line: int, sid: str) -> None:
    """Sizes from the headers, or (decode) from the decoded pixels, which also finds truncated files."""
    sizes = []
    for p in (inp, tgt):
        if p is None:
            continue
        try:
            sizes.append(read_image(p, channels=None).shape[:2] if decode else image_size(p))
        except PtgError as exc:
            problems.append(Problem(line, sid, str(exc)))
            return
    if check_sizes and len(sizes) == 2 and sizes[0] != sizes[1]:
        (hi, wi), (ht, wt) = sizes
        problems.append(Problem(line, sid, f"input is {wi}x{hi} but target is {wt}x{ht} (WxH)"))


def load_manifest(
    path: str | Path, root: str | Path | None = None, check_files: bool = True, check_sizes: bool = False,
    outside: Outside = "refuse",
) -> Manifest:
    """Load a manifest, raising `ManifestError` listing every bad row if any row is bad.

    Every id is checked to be a safe file name (`id_problem`) before any stage writes by it, and
    every path to stay inside the root (the manifest's folder or ``root``) unless ``outside`` allows
    it (the commands' ``--allow-outside``).
    """
    path = Path(path)
    samples, problems = check_manifest(path, root, check_files=check_files, check_sizes=check_sizes, outside=outside)
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
    lines = []
    for row in rows:
        row = dict(row)
        for key in ("input", "target"):
            v = row.get(key)
            if v is not None:
                v = Path(v)
                if v.is_absolute() and v.resolve().is_relative_to(base):
                    v = v.resolve().relative_to(base)
                row[key] = v.as_posix()
        lines.append(json.dumps(row, sort_keys=False) + "\n")
    # atomic and never through a link: the temporary file is created exclusively, then renamed
    return atomic_write_text(path, "".join(lines))
