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

from ptg.pipeline.errors import PtgError
from ptg.pipeline.store import (
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

VIEWS = ["identity", "hflip"]


def _meta(fingerprint: str = "f" * 64, random_init: bool = False, dtype: str = "float16", dim: int = 8) -> dict:
    enc = {"name": "toy", "preprocessing": {"size": 32}, "pooling": "mean", "details": {}}
    return {"encoder": enc, "fingerprint": fingerprint, "random_init": random_init, "dim": dim,
            "views": VIEWS, "views_spec": "custom", "dtype": dtype}


def _key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _store(tmp_path, n: int, rows: int = 16, **meta):
    path = tmp_path / "s.zarr"
    rng = np.random.default_rng(0)
    values = rng.standard_normal((n, len(VIEWS), 8)).astype(np.float32)
    keys = [_key(i) for i in range(n)]
    with writer_lock(path):
        create_or_open_store(path, _meta(**meta), rows_per_shard=rows)
        groups = [range(i, min(i + rows, n)) for i in range(0, n, rows)]
        for sid, g in zip(allocate_shards(path, len(groups)), groups):
            write_shard(path, sid, [keys[i] for i in g], values[list(g)])
    return path, keys, values


def test_roundtrip_values_views_and_dtype(tmp_path):
    path, keys, values = _store(tmp_path, 40)
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
    zarr_meta = json.loads((path / ARRAY / "zarr.json").read_text())
    assert zarr_meta["zarr_format"] == 3 and zarr_meta["codecs"][0]["name"] == "sharding_indexed"


def test_float32_store_keeps_exact_values(tmp_path):
    path, keys, values = _store(tmp_path, 5, dtype="float32")
    np.testing.assert_array_equal(open_priors(path).get(keys), values[:, 0])


def test_reader_errors_name_missing_keys_views_and_fingerprints(tmp_path):
    path, keys, _ = _store(tmp_path, 3)
    r = open_priors(path)
    with pytest.raises(PtgError, match=r"1 of 2 keys are not in the priors store .*extract-priors"):
        r.get([keys[0], "ab" * 32])
    with pytest.raises(PtgError, match="view 'vflip' is not in the priors store"):
        r.get(keys, view="vflip")
    with pytest.raises(PtgError, match="not the expected"):
        open_priors(path, expect_fingerprint="e" * 64)
    assert open_priors(path, expect_fingerprint="f" * 64).fingerprint == "f" * 64
    with pytest.raises(PtgError, match="not a priors store"):
        open_priors(tmp_path)


def test_half_written_shard_is_invisible_and_its_id_reused(tmp_path):
    path, keys, values = _store(tmp_path, 20)  # shards 0 (16 rows) and 1 (4 rows) committed
    # a killed writer: shard 2's data on disk, its commit record never written
    with writer_lock(path):
        (sid,) = allocate_shards(path, 1)
        arr = zarr.open_array(path / ARRAY, mode="r+")
        arr[sid * 16 : sid * 16 + 16] = np.full((16, 2, 8), 7, np.float16)
    assert sid == 2 and set(read_commits(path)) == {0, 1}
    r = open_priors(path)
    assert len(r) == 20 and _key(99) not in r.keys()
    with writer_lock(path):
        assert allocate_shards(path, 2) == [2, 3]  # the uncommitted id comes back first
        new = np.ones((3, 2, 8), np.float32)
        write_shard(path, 2, [_key(100), _key(101), _key(102)], new)
    r = open_priors(path)
    np.testing.assert_array_equal(r.get([_key(101)]), new[:1, 0])
    np.testing.assert_array_equal(r.get(keys[:16]), values[:16, 0].astype(np.float16).astype(np.float32))


def test_incompatible_settings_are_refused(tmp_path):
    path, _, _ = _store(tmp_path, 2)
    with writer_lock(path), pytest.raises(PtgError, match="other settings .*fingerprint"):
        create_or_open_store(path, _meta(fingerprint="0" * 64))
    with writer_lock(path), pytest.raises(PtgError, match="dtype"):
        create_or_open_store(path, _meta(dtype="float32"))


def test_second_writer_refused_while_first_alive_and_dead_writers_lock_free(tmp_path):
    path = tmp_path / "s.zarr"
    with writer_lock(path):
        with pytest.raises(PtgError, match=r"in use by pid \d+ .*released automatically"):
            with writer_lock(path):
                pass
    # a lock file left by a process that no longer exists (e.g. killed with SIGKILL) holds no flock
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (path / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "earlier"}))
    (path / f".x.tmp-{dead.pid}").write_text("leftover")  # a dead writer's temp file: removed by the next writer
    with writer_lock(path):
        assert json.loads((path / LOCK).read_text())["pid"] == os.getpid()
    assert not (path / f".x.tmp-{dead.pid}").exists()


def test_random_init_store_warns_on_open(tmp_path):
    path, _, _ = _store(tmp_path, 2, fingerprint="random-init-0", random_init=True)
    with pytest.warns(RandomInitWarning, match="RANDOMLY INITIALISED"):
        r = open_priors(path)
    assert r.random_init


def test_hdf5_export_holds_the_same_values_and_reads_back(tmp_path):
    path, keys, values = _store(tmp_path, 35)
    out = export_hdf5(path, tmp_path / "p.h5")
    h = open_priors(out)
    z = open_priors(path)
    assert h.format == "hdf5" and h.keys() == z.keys() and h.metadata["fingerprint"] == z.fingerprint
    for view in VIEWS:
        np.testing.assert_array_equal(h.get(keys, view), z.get(keys, view))
    with pytest.raises(PtgError, match="not in the priors store"):
        h.get(["cd" * 32])
