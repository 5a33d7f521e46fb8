"""One writer at a time on a bucket store, without ``flock``: a lease made of create-only puts.

A bucket has no kernel to release a lock when its holder dies, so the writer's claim is an object
with an expiry, renewed by a thread while the writer runs, and numbered by generation::

    STORE/lease/00000007.json   {"gen": 7, "token": "<uuid>", "host", "pid", "started", "expires"}

- Acquire: read the highest generation. A live (unexpired, unreleased) one refuses the new writer,
  naming its host, pid and expiry; one held by a process of this host that no longer exists (a
  killed writer) is taken over at once instead of waited out. Otherwise the writer creates generation + 1 with a create-only
  put: of two writers racing for the same number exactly one succeeds, the other is refused.
- Renew: the holder rewrites its own generation's object with a later expiry (every ttl/3).
- Release: the holder rewrites its object as released. Nothing is deleted, so a generation number
  is never reused: fencing below stays sound however many writers come and go.
- Fencing: before each commit record a writer calls `Lease.check`: its generation must still be
  the highest, carry its token and be unexpired by its own clock. A writer whose lease was taken
  over (it stalled past its expiry, or its renewals failed) therefore commits nothing more; the
  commit put itself is create-only too, so it never replaces a record another writer made.

Expiry compares wall clocks of different hosts: hosts must agree within a fraction of ``ttl``
(NTP does far better than the default 60 s). The window between `check` and the commit put is
shorter than a renewal period; a shard object a stale writer overwrote in that window fails its
commit digest and is never served (verified reads), and the next writer recomputes it.
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
import time
import uuid
import warnings
from typing import Any

from ..core.errors import PtgError
from .remote import RemoteStore

PREFIX = "lease/"
TTL = 60.0  # seconds a lease lives without renewal
MAX_TTL = 24 * 3600.0  # no ptg writer's lease runs further ahead; a record claiming more is not credible
MAX_GEN = 10 ** 9  # a generation per writer run: no store sees this many; a higher one is not ptg's
MAX_LEASE_BYTES = 64 << 10  # a lease record is ~200 bytes; a larger object is not ptg's and is not read
_GEN = re.compile(r"^([0-9]{1,30})\.json$")  # wider than any generation ptg writes: a foreign one is seen, then judged


class ForeignLeaseWarning(UserWarning):
    """A lease object ptg did not write (its generation is out of range) is ignored."""


def _key(gen: int) -> str:
    return f"{PREFIX}{gen:08d}.json"


def _parse(raw: bytes, top: int) -> dict[str, Any]:
    """A lease record read from the bucket, checked: one that is not JSON, not an object, or whose
    expiry is not a finite time within `MAX_TTL` counts as expired (nobody renews garbage, and a
    crafted record cannot lock the store forever)."""
    try:
        rec = json.loads(raw)
    except ValueError:
        rec = None
    if isinstance(rec, dict):
        exp, ttl = rec.get("expires"), rec.get("ttl", TTL)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (exp, ttl))
        if numbers and 0 < ttl <= MAX_TTL and exp - time.time() <= MAX_TTL:
            return rec
    return {"gen": top, "expires": 0, "damaged": True}


def _describe(rec: dict[str, Any]) -> str:
    left = float(rec.get("expires", 0)) - time.time()
    return (f"pid {rec.get('pid', '?')} on host {rec.get('host', '?')} (since {rec.get('started', '?')}, lease "
            f"generation {rec.get('gen', '?')}, expires in {left:.0f} s unless renewed)")


def _dead_here(rec: dict[str, Any]) -> bool:
    """The holder ran on this host and its process is gone (killed): its lease need not be waited out."""
    from ..core.fsio import pid_alive

    pid = rec.get("pid")
    return rec.get("host") == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() and not pid_alive(pid)


class Lease:
    """The writer lease of one bucket store (use as a context manager).

    Args:
        remote: the store.
        ttl: seconds the lease lives without renewal.
        renew: run the renewal thread (False only in tests that play a stalled writer).
    """

    def __init__(self, remote: RemoteStore, ttl: float = TTL, renew: bool = True):
        self.remote, self.ttl, self._renew = remote, float(ttl), renew
        self.gen: int | None = None
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None  # why the lease is no longer ours
        self.last_error: str | None = None  # the last failed renewal
        self._started = ""
        self._warned: set[str] = set()  # foreign lease keys already reported

    def _record(self, released: bool = False) -> dict[str, Any]:
        return {"gen": self.gen, "token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                "started": self._started, "expires": time.time() + self.ttl, "ttl": self.ttl, "released": released}

    def _current(self) -> tuple[int, dict[str, Any] | None]:
        """(highest generation, its record) — (0, None) when no writer ever held the store.

        Generations above `MAX_GEN` are ignored (with a warning naming the command that removes
        them): ptg never numbers one so high, and taking it as the top would leave the next writer a
        number it could not create or read back (a permanent lock-out). A top record larger than
        `MAX_LEASE_BYTES` is not read: it counts as expired, like any damaged record."""
        gens, sizes = [], {}
        for key, info in self.remote.listing(PREFIX).items():
            if m := _GEN.match(key[len(PREFIX):]):
                gen = int(m.group(1))
                if gen > MAX_GEN:
                    self._foreign(key)
                    continue
                gens.append(gen)
                sizes[gen] = info.get("size", 0)
        if not gens:
            return 0, None
        top = max(gens)
        if sizes[top] > MAX_LEASE_BYTES:
            return top, {"gen": top, "expires": 0, "damaged": True}
        raw = self.remote.get(_key(top), limit=MAX_LEASE_BYTES)
        return top, (_parse(raw, top) if raw is not None else None)

    def _foreign(self, key: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        warnings.warn(f"{self.remote.url}/{key} is not a lease ptg wrote (generation over {MAX_GEN}); it is ignored. "
                      f"Remove it when no writer runs: `aws s3 rm {self.remote.url}/{key}` (or your service's "
                      "delete command)", ForeignLeaseWarning, stacklevel=4)

    def acquire(self) -> "Lease":
        """Take the lease, or raise naming its live holder.

        Raises:
            PtgError: a live writer holds the store, or another writer won the race for it just now.
        """
        top, rec = self._current()
        if rec is not None and not rec.get("released") and float(rec.get("expires", 0)) > time.time() and not _dead_here(rec):
            raise PtgError(f"the store {self.remote.url} is being written by {_describe(rec)}; wait for it to finish, "
                           f"or, if that writer is dead, for its lease to expire (at most {rec.get('ttl', self.ttl)} s)")
        self.gen, self._started = top + 1, time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if not self.remote.put_new(_key(self.gen), json.dumps(self._record()).encode()):
            raise PtgError(f"another writer took the lease of {self.remote.url} at the same moment (generation "
                           f"{self.gen}); run again when it has finished")
        if self._renew:
            self._thread = threading.Thread(target=self._renewing, name="ptg-lease", daemon=True)
            self._thread.start()
        return self

    def _renewing(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                top, rec = self._current()
                if top != self.gen or (rec or {}).get("token") != self.token:
                    self.lost = f"taken over by {_describe(rec or {})}"
                    return
                self.remote.put(_key(self.gen), json.dumps(self._record()).encode())
            except PtgError as exc:  # the next check() decides: an unrenewed lease expires
                self.last_error = str(exc)

    def check(self) -> None:
        """Fencing: raise unless this writer still holds the lease (call before every commit put).

        Raises:
            PtgError: the lease was taken over, released, or expired without renewal.
        """
        if self.gen is None:
            raise PtgError(f"no lease held on {self.remote.url}")
        top, rec = self._current()
        why = self.lost
        if top != self.gen or rec is None or rec.get("token") != self.token:
            why = f"taken over by {_describe(rec or {})}"
        elif rec.get("released"):
            why = "released"
        elif float(rec.get("expires", 0)) <= time.time():
            why = "expired without renewal (the writer stalled, or the bucket could not be reached)"
        if why:
            self.lost = why
            raise PtgError(f"this writer's lease on {self.remote.url} was {why}; nothing more is committed by this "
                           "run (committed shards are kept); run again to finish")

    def release(self) -> None:
        """Stop renewing and mark the lease released, if it is still ours (nothing is deleted)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
        if self.gen is None:
            return
        try:
            top, rec = self._current()
            if top == self.gen and (rec or {}).get("token") == self.token:
                self.remote.put(_key(self.gen), json.dumps(self._record(released=True)).encode())
        except PtgError:
            pass  # unreachable bucket: the lease simply expires
        finally:
            self.gen = None

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
