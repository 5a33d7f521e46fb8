"""Files the tool writes and the locks that guard them: one implementation for every stage.

- `atomic_write_bytes` / `atomic_write_text` / `atomic_save`: write to a temporary file in the
  same folder, fsync, rename over the target, fsync the folder. A process killed at any moment
  leaves either the old file or the new one, never half of either.
- `file_sha256`: the one file hash (store row keys, weight fingerprints, export digests).
- `exclusive_lock`: an ``fcntl.flock`` lock on a file. The kernel releases it when its process
  dies, however it dies, so there is no stale lock to take over and no check-then-act race: two
  processes can never both hold it. The file keeps the holder's pid, host and start time for the
  refusal message only.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

from .errors import PtgError

TMP_MARK = ".tmp-"  # temporary files are named ".<name>.tmp-<pid>"; `remove_stale_tmp` finds them by it


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (best effort on file systems that refuse it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file and rename it over ``path`` when it returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: object) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_save(obj: object, path: str | Path) -> Path:
    """``torch.save`` atomically (torch imported here only, so the module stays light)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Delete temporary files (``.<name>.tmp-<pid>``) in ``folder`` whose writer process is gone."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(f".*{TMP_MARK}*"):
        pid = p.name.rsplit(TMP_MARK, 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: it holds nothing
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@contextmanager
def exclusive_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the ``with`` block, or raise at once.

    Args:
        path: the lock file (created if absent; left in place afterwards: its existence means
            nothing, only the kernel lock does).
        what: how the refusal names the guarded thing, e.g. "the priors store S".

    Raises:
        PtgError: another live process holds the lock (names its pid, host and start time).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            other = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        except (OSError, ValueError):
            other = {}
        os.close(fd)
        raise PtgError(f"{what} is in use by pid {other.get('pid', '?')} on host {other.get('host', '?')} "
                       f"since {other.get('started', '?')}; wait for it to finish (the lock {path} is released "
                       "automatically when that process ends)") from None
    try:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
        yield
    finally:
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Output folders: never write into (or delete from) a folder that ptg did not make for this purpose

ARTIFACT_FILE = ".ptg-artifact.json"  # marks a folder as made by ptg, and for what


def artifact_kind(folder: str | Path) -> str | None:
    """The kind recorded in ``folder``'s marker (e.g. "run", "priors-store"), or None."""
    try:
        return json.loads((Path(folder) / ARTIFACT_FILE).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def claim_out_dir(folder: str | Path, kind: str, force: bool = False, flag: str = "--out",
                  legacy: Callable[[Path], bool] | None = None) -> Path:
    """Make ``folder`` ptg's output folder of ``kind``, refusing one that holds something else.

    A folder is accepted when it does not exist, is empty, already carries this kind's marker, or
    ``legacy(folder)`` recognises it as this kind made before markers existed; with ``force`` any
    folder is accepted (ptg still only ever deletes what it wrote itself). The marker is written on
    acceptance, so the next command knows the folder.

    Raises:
        PtgError: the folder is a file, holds another kind of ptg output, or holds files ptg did not make.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PtgError(f"{flag} {folder} is a file, not a folder; choose a folder path")
    have = artifact_kind(folder) if folder.is_dir() else None
    if folder.is_dir() and have != kind and not force:
        if have is not None:
            raise PtgError(f"{flag} {folder} holds a ptg {have}, not a {kind}; choose another {flag}")
        entries = sorted(p.name for p in folder.iterdir())
        if entries and not (legacy is not None and legacy(folder)):
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise PtgError(f"{flag} {folder} already exists and is not a ptg {kind} (it holds {shown}); "
                           f"choose a new or empty folder, or pass --force to write into it anyway "
                           f"(ptg never deletes files it did not make)")
    folder.mkdir(parents=True, exist_ok=True)
    if have != kind:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("ptg")
        except PackageNotFoundError:
            ver = "unknown"
        atomic_write_json(folder / ARTIFACT_FILE, {"kind": kind, "ptg_version": ver})
    return folder
