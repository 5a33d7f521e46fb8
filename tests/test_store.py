"""The priors store: commits, crash-safety of half-written shards, locking, the reader's errors,
random-init warnings and the HDF5 export. No encoder needed: values are written directly."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import zarr

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.storage.store import (
    ARRAY,
    LOCK,
    RandomInitWarning,
    allocate_shards,
    create_or_open_store,
    export_hdf5,
    open_priors,
    read_commits,
    write_shard,
    writer_lock,
)

from .s3_fixtures import Where, where  # noqa: F401  (`where`: every test here runs on a folder and on a bucket)

VIEWS = ["identity", "hflip"]


def _meta(fingerprint: str = "f" * 64, random_init: bool = False, dtype: str = "float16", dim: int = 8) -> dict:
    enc = {"name": "toy", "preprocessing": {"size": 32}, "pooling": "mean", "details": {}}
    return {"encoder": enc, "fingerprint": fingerprint, "random_init": random_init, "dim": dim,
            "views": VIEWS, "views_spec": "custom", "dtype": dtype}


def _key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _store(tmp_path, n: int, rows: int = 16, **meta):
    """A store of n rows, written by the real writer; ``tmp_path`` is a folder or a `Where` (folder or bucket).

    Returns (what readers open: the folder or the bucket URL, keys, values)."""
    at = tmp_path if isinstance(tmp_path, Where) else Where("local", tmp_path)
    rng = np.random.default_rng(0)
    values = rng.standard_normal((n, len(VIEWS), 8)).astype(np.float32)
    keys = [_key(i) for i in range(n)]
    with at.writer() as path:
        create_or_open_store(path, _meta(**meta), rows_per_shard=rows)
        groups = [range(i, min(i + rows, n)) for i in range(0, n, rows)]
        for sid, g in zip(allocate_shards(path, len(groups)), groups):
            write_shard(path, sid, [keys[i] for i in g], values[list(g)])
    return at.url, keys, values


def test_roundtrip_values_views_and_dtype(where):
    path, keys, values = _store(where, 40)
    r = open_priors(path)
    assert len(r) == 40 and r.dim == 8 and r.views == tuple(VIEWS) and not r.random_init
    order = [7, 39, 0, 7, 16]
    got = r.get([keys[i] for i in order], view="hflip")
    assert got.dtype == np.float32 and got.shape == (5, 8)
    np.testing.assert_array_equal(got, values[order, 1].astype(np.float16).astype(np.float32))
    # the on-disk path (no RAM copy) returns the same values
    np.testing.assert_array_equal(open_priors(path, in_memory=False).get([keys[i] for i in order], "hflip"), got)
    assert r.missing([keys[0], "0" * 64]) == ["0" * 64]
    assert r.verify() == []
    zarr_meta = json.loads((r.path / ARRAY / "zarr.json").read_text())  # a bucket's: its mirror's copy
    assert zarr_meta["zarr_format"] == 3 and zarr_meta["codecs"][0]["name"] == "sharding_indexed"


def test_float32_store_keeps_exact_values(where):
    path, keys, values = _store(where, 5, dtype="float32")
    np.testing.assert_array_equal(open_priors(path).get(keys), values[:, 0])


def test_reader_errors_name_missing_keys_views_and_fingerprints(where):
    path, keys, _ = _store(where, 3)
    r = open_priors(path)
    with pytest.raises(PtgError, match=rf"1 of 2 keys are not in the priors store {path} .*extract-priors"):
        r.get([keys[0], "ab" * 32])
    with pytest.raises(PtgError, match=f"view 'vflip' is not in the priors store {path};"):
        r.get(keys, view="vflip")
    with pytest.raises(PtgError, match=f"the priors store {path} .*not the expected"):
        open_priors(path, expect_fingerprint="e" * 64)
    assert open_priors(path, expect_fingerprint="f" * 64).fingerprint == "f" * 64
    with pytest.raises(PtgError, match="not a priors store"):
        open_priors(Where(where.kind, where.tmp_path, where._s3, "empty").url)


def test_half_written_shard_is_invisible_and_its_id_reused(where):
    path, keys, values = _store(where, 20)  # shards 0 (16 rows) and 1 (4 rows) committed
    # a killed writer: shard 2's data written (a bucket: in the stage), its commit record never written
    with where.writer() as folder:
        (sid,) = allocate_shards(folder, 1)
        arr = zarr.open_array(folder / ARRAY, mode="r+")
        arr[sid * 16 : sid * 16 + 16] = np.full((16, 2, 8), 7, np.float16)
    assert sid == 2 and set(read_commits(folder)) == {0, 1}
    r = open_priors(path)
    assert len(r) == 20 and _key(99) not in r.keys() and set(read_commits(r.path)) == {0, 1}
    with where.writer() as folder:
        assert allocate_shards(folder, 2) == [2, 3]  # the uncommitted id comes back first
        new = np.ones((3, 2, 8), np.float32)
        write_shard(folder, 2, [_key(100), _key(101), _key(102)], new)
    r = open_priors(path)
    np.testing.assert_array_equal(r.get([_key(101)]), new[:1, 0])
    np.testing.assert_array_equal(r.get(keys[:16]), values[:16, 0].astype(np.float16).astype(np.float32))


def test_incompatible_settings_are_refused(where):
    path, keys, _ = _store(where, 2)
    with pytest.raises(PtgError, match="other settings .*fingerprint"), where.writer() as folder:
        create_or_open_store(folder, _meta(fingerprint="0" * 64))
    with pytest.raises(PtgError, match="dtype"), where.writer() as folder:
        create_or_open_store(folder, _meta(dtype="float32"))
    assert open_priors(path).keys() == set(keys)  # the refused writers changed nothing


def test_second_writer_refused_while_first_alive_and_dead_writers_lock_free(where):
    held = r"in use by pid \d+ .*released automatically" if not where.remote else r"being written by .*pid \d+"
    with where.writer():
        with pytest.raises(PtgError, match=held):
            with where.writer():
                pass
    if where.remote:
        return  # a dead writer's lease in a bucket: test_remote_store's expired-lease and fencing tests
    path = where.url
    # a lock file left by a process that no longer exists (e.g. killed with SIGKILL) holds no flock
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (path / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "earlier"}))
    (path / f".x.tmp-{dead.pid}").write_text("leftover")  # a dead writer's temp file: removed by the next writer
    with writer_lock(path):
        assert json.loads((path / LOCK).read_text())["pid"] == os.getpid()
    assert not (path / f".x.tmp-{dead.pid}").exists()


def test_random_init_store_warns_on_open(where):
    path, _, _ = _store(where, 2, fingerprint="random-init-0", random_init=True)
    with pytest.warns(RandomInitWarning, match=f"the priors store {path} was made with a RANDOMLY INITIALISED"):
        r = open_priors(path)
    assert r.random_init


def test_hdf5_export_holds_the_same_values_and_reads_back(where, tmp_path):
    path, keys, values = _store(where, 35)
    out = export_hdf5(path, tmp_path / "p.h5")
    h = open_priors(out)
    z = open_priors(path)
    assert h.format == "hdf5" and h.keys() == z.keys() and h.metadata["fingerprint"] == z.fingerprint
    for view in VIEWS:
        np.testing.assert_array_equal(h.get(keys, view), z.get(keys, view))
    with pytest.raises(PtgError, match="not in the priors store"):
        h.get(["cd" * 32])
