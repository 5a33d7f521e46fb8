"""The shared file primitives: atomic writes leave old-or-new, flock admits one holder."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

from ptg.pipeline.core import fsio
from ptg.pipeline.core.errors import Interrupted, PtgError


def test_atomic_write_replaces_and_leaves_no_tmp(tmp_path):
    p = tmp_path / "a.json"
    fsio.atomic_write_json(p, {"x": 1})
    fsio.atomic_write_text(p, "new")
    assert p.read_text() == "new"
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_failure_keeps_old(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fsio.atomic_write(p, boom)
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["a.txt"]


def _hold(path, ready):
    with fsio.exclusive_lock(path, "the test thing"):
        ready.set()
        time.sleep(60)


def test_lock_refuses_second_holder_and_frees_on_kill(tmp_path):
    lock = tmp_path / "writer.lock"
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_hold, args=(str(lock), ready))
    p.start()
    try:
        assert ready.wait(60)
        with pytest.raises(PtgError, match=rf"the test thing is in use by pid {p.pid}"):
            with fsio.exclusive_lock(lock, "the test thing"):
                pass
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join()
    with fsio.exclusive_lock(lock, "the test thing"):  # the kernel released the dead holder's lock
        pass


def test_remove_stale_tmp_only_dead_writers(tmp_path):
    dead = tmp_path / f".x.pt{fsio.TMP_MARK}999999999"
    live = tmp_path / f".y.pt{fsio.TMP_MARK}{os.getpid()}"
    dead.write_text("")
    live.write_text("")
    assert fsio.remove_stale_tmp(tmp_path) == [dead]
    assert live.exists()


def test_interrupted_exit_codes():
    assert Interrupted("x", signal.SIGINT).exit_code == 130
    assert Interrupted("x", signal.SIGTERM).exit_code == 143
    assert PtgError("x").exit_code == 1


def test_claim_out_dir(tmp_path):
    run = fsio.claim_out_dir(tmp_path / "run", "run")
    assert fsio.artifact_kind(run) == "run"
    (run / "log.csv").write_text("x")
    assert fsio.claim_out_dir(run, "run") == run  # its own kind: accepted again
    with pytest.raises(PtgError, match="holds a ptg run, not a priors-store"):
        fsio.claim_out_dir(run, "priors-store")
    other = tmp_path / "mine"
    other.mkdir()
    (other / "important.txt").write_text("keep")
    with pytest.raises(PtgError, match=r"not a ptg run \(it holds important.txt\).*--force"):
        fsio.claim_out_dir(other, "run")
    assert fsio.artifact_kind(other) is None
    fsio.claim_out_dir(other, "run", force=True)
    assert (other / "important.txt").read_text() == "keep"
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.yaml").write_text("")
    fsio.claim_out_dir(old, "run", legacy=lambda p: (p / "config.yaml").is_file())
    with pytest.raises(PtgError, match="is a file"):
        fsio.claim_out_dir(tmp_path / "run" / "log.csv", "run")
