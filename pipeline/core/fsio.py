"""Files the tool writes and the locks that guard them: one implementation for every stage.

- `atomic_write_bytes` / `atomic_write_text` / `atomic_save`: write to a temporary file in the
  same folder, fsync, rename over the target, fsync the folder. A process killed at any moment
  leaves either the old file or the new one, never half of either.
- `file_sha256`: the one file hash (store row keys, weight fingerprints, export digests).
- `exclusive_lock`: an ``fcntl.flock`` lock on a file. The kernel releases it when its process
  dies, however it dies, so there is no stale lock to take over and no check-then-act race: two
  processes can never both hold it. The file keeps the holder's pid, host and start time for the
  refusal message only.
- Writing never follows a link: lock files are opened with ``O_NOFOLLOW`` and must be regular
  files, temporary files are created exclusively (``O_EXCL | O_NOFOLLOW``) and renamed over the
  target, logs are opened with `open_nofollow`, and `remove_regular` deletes only regular files
  (a symlink's target is never touched). `claim_out_dir` refuses an output folder holding a
  symlink: a teammate's shared folder cannot redirect a write elsewhere.
- Reading a shared artifact stays inside it: `plain_member` accepts only a plain file name inside
  the folder (no absolute path, no ``..``, no symlink).
- Paths an artifact records (a run's manifest, root and priors stores) are followed only from an
  artifact you wrote (`written_by_you`), or when the user opts in (`check_recorded_paths`).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import stat
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


def _open_exclusive(tmp: Path) -> int:
    """Create ``tmp`` new (never through a link); a leftover entry of this pid is unlinked first."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(tmp, flags, 0o644)
    except FileExistsError:
        os.unlink(tmp)  # ours by name (same pid); unlinking a symlink leaves its target alone
        return os.open(tmp, flags, 0o644)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file and rename it over ``path`` when it returns.

    The temporary file is created exclusively, so a symlink planted at its name is never written
    through; the rename replaces a symlink at ``path`` itself, never the file it points to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with os.fdopen(_open_exclusive(tmp), "wb") as f:
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
    if folder.is_symlink():  # never delete through a link to someone else's folder
        return removed
    for p in folder.glob(f".*{TMP_MARK}*"):
        pid = p.name.rsplit(TMP_MARK, 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)) and remove_regular(p):
            removed.append(p)
    return removed


def remove_regular(path: str | Path) -> bool:
    """Unlink ``path`` only if it is a regular file (not a symlink, folder or device).

    Returns:
        Whether a file was removed. A symlink is left in place: deleting "through" it is what a
        crafted folder asks for.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    os.unlink(path)
    return True


def no_symlink(path: str | Path, what: str) -> Path:
    """``path`` if it is not a symlink, else a named error (ptg would write or read through it)."""
    path = Path(path)
    if path.is_symlink():
        raise PtgError(f"{what} {path} is a symbolic link (to {os.readlink(path)}); ptg never writes or reads "
                       "through a link inside its folders: replace it with a real file or folder, or remove it")
    return path


def plain_member(folder: str | Path, name: object, what: str = "file") -> Path:
    """The path of ``name`` inside ``folder``, refusing anything that could lead outside it.

    Args:
        folder: the artifact folder (an export, a student, a store).
        name: a file name recorded in one of its files.
        what: how the error names the entry, e.g. "weights file of export E".

    Raises:
        PtgError: ``name`` is not a plain string name (absolute, has a separator or ``..``), or
            the entry is a symlink.
    """
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise PtgError(f"{what} {name!r:.100} recorded in {folder} is not a plain file name inside that folder; "
                       "an artifact may only name its own files (the file is damaged or crafted)")
    return no_symlink(Path(folder) / name, what)


def member_path(folder: str | Path, rel: object, what: str = "entry") -> Path:
    """``folder/rel`` for a relative path recorded in an artifact (e.g. ``students/0``): every part a
    plain name (`plain_member`), no part a symlink."""
    if not isinstance(rel, str) or not rel:
        return plain_member(folder, rel, what)
    path = Path(folder)
    for part in rel.split("/"):
        path = plain_member(path, part, what)
    return path


def refuse_recorded_path(value: object, what: str, inside: str | Path | None = None) -> None:
    """Refuse a local file path recorded in a shared file (a hub id or tag passes), unless it lies
    inside the artifact ``inside``: ptg opens such a path only when the user names it."""
    if not isinstance(value, str) or not value:
        return
    p = Path(value).expanduser()
    local = p.is_absolute() or value.startswith((".", "~")) or p.exists()
    if not local:
        return
    if inside is not None and p.resolve().is_relative_to(Path(inside).resolve()) and not p.is_symlink():
        return
    raise PtgError(f"{what} is the local path {value!r}; ptg does not open a path a shared file names. Pass --priors "
                   "STORE (priors extracted elsewhere) or --prior-from a distilled student instead")


def written_by_you(path: str | Path) -> bool:
    """Whether the file ``path`` (not a symlink) belongs to the current user and no one else can
    rewrite it: owned by this uid, not writable by others, and group-writable only with the
    user's own primary group (a user-private group, ``umask 002``)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & stat.S_IWOTH:
        return False
    return not (st.st_mode & stat.S_IWGRP) or st.st_gid == os.getegid()


def check_recorded_paths(artifact: str | Path, recorded: dict[str, object], trust: bool, fixes: str,
                         flag: str = "--trust-recorded") -> None:
    """Refuse to follow local paths recorded in someone else's artifact (a run's manifest, root or store).

    A path an artifact records is opened when the user named it, when it lies inside the artifact's
    folder, when the artifact's file is `written_by_you` (your own run: the everyday flow), or when
    ``trust`` (the user's ``--trust-recorded``). Otherwise a teammate's run could make your command
    read, and write results of, any file you can read.

    Args:
        artifact: the file the paths were read from (a checkpoint, an export's config.json).
        recorded: what -> recorded value (None is skipped; a bucket URL is refused like a path: it
            would read, and mirror, with your credentials).
        trust: the user's opt-in.
        fixes: how to name the paths instead, e.g. "--manifest M / --priors STORE".
        flag: the opt-in flag the message names.

    Raises:
        PtgError: naming the first recorded path refused, the artifact, and both fixes.
    """
    artifact = Path(artifact)
    if trust or written_by_you(artifact):
        return
    folder = artifact.parent.parent if artifact.parent.name == "checkpoints" else artifact.parent  # RUN/checkpoints/x.pt
    inside = folder.resolve()
    for what, value in recorded.items():
        if not isinstance(value, (str, Path)) or not str(value):
            continue
        p = Path(value)
        if not p.is_absolute():
            p = Path.cwd() / p
        if "://" not in str(value) and p.resolve().is_relative_to(inside) and not p.is_symlink():
            continue
        raise PtgError(f"{artifact} records the {what} {str(value)!r:.200}, but that file is not yours (owner uid "
                       f"{_owner(artifact)}, or others can write it): ptg opens a path a shared run names only when you do. "
                       f"Name it yourself ({fixes}), or pass {flag} if you trust this run")


def _owner(path: Path) -> str:
    try:
        return str(os.lstat(path).st_uid)
    except OSError:
        return "unknown"


def open_nofollow(path: str | Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None) -> IO:
    """``open(path, mode)`` for writing that refuses a symlink or a non-regular file at ``path``.

    Args:
        path: the file (created if absent).
        mode: "w" (truncate), "a" (append), or their binary forms.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    flags |= os.O_APPEND if "a" in mode else 0
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if Path(path).is_symlink():
            no_symlink(path, "output file")
        raise PtgError(f"cannot open {path} for writing: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PtgError(f"output file {path} is not a regular file; remove it or choose another folder")
    if "w" in mode:
        os.ftruncate(fd, 0)  # only now: the file is known to be a regular file of this folder
    if "b" in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, encoding=encoding, newline=newline)


def find_symlink(folder: str | Path, limit: int = 200_000) -> Path | None:
    """The first symlink anywhere under ``folder`` (symlinked folders are not entered), or None."""
    seen = 0
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            seen += 1
            p = Path(top) / name
            if p.is_symlink():
                return p
        if seen > limit:  # a huge folder: the entries ptg writes are checked one by one instead
            return None
    return None


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
    try:  # O_NOFOLLOW: a lock file planted as a symlink must not truncate the file it points to
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        if path.is_symlink():
            no_symlink(path, f"the lock file of {what}")
        raise PtgError(f"cannot open the lock file {path} of {what}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PtgError(f"the lock file {path} of {what} is not a regular file; remove it and run again")
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
                  legacy: Callable[[Path], bool] | None = None, named: bool = True) -> Path:
    """Make ``folder`` ptg's output folder of ``kind``, refusing one that holds something else.

    A folder is accepted when it does not exist, is empty, already carries this kind's marker, or
    ``legacy(folder)`` recognises it as this kind made before markers existed; with ``force`` any
    folder is accepted (ptg still only ever deletes what it wrote itself). The marker is written on
    acceptance, so the next command knows the folder. A folder holding a symlink anywhere is
    refused, with or without ``force``; so is the folder itself being a symlink when the user did
    not name it (``named=False``: a default such as ``RUN/eval`` inside a shared run).

    Raises:
        PtgError: the folder is a file, holds another kind of ptg output, or holds files ptg did not make.
    """
    folder = Path(folder)
    if folder.is_symlink() and not named:
        no_symlink(folder, f"the default {flag} folder")
    if folder.exists() and not folder.is_dir():
        raise PtgError(f"{flag} {folder} is a file, not a folder; choose a folder path")
    link = find_symlink(folder) if folder.is_dir() else None
    if link is not None:  # the marker says nothing about the entries: a link inside redirects a write
        no_symlink(link, f"{flag} {folder} holds an entry that")
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
