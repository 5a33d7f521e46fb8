"""The row cache (`ptg.pipeline.storage.priorcache`): lazy reads give the in-memory path's exact arrays,
stale copies are never read, and the in-memory/lazy decision follows `data.priors_in_memory`."""
from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.storage.priorcache import (LazyPriorRows, cache_dir_for, decide_in_memory, open_row_cache, prior_vectors)
from ptg.pipeline.storage.store import allocate_shards, create_or_open_store, open_priors, write_shard, writer_lock

VIEWS = ["identity", "hflip", "vflip"]


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PTG_CACHE", str(tmp_path / "cache"))


def _key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _write(path, keys, values, dtype, rows=16):
    meta = {"encoder": {"name": "toy", "preprocessing": {}, "pooling": "mean", "details": {}}, "fingerprint": "f" * 64,
            "random_init": False, "dim": values.shape[-1], "views": VIEWS, "views_spec": "custom", "dtype": dtype}
    with writer_lock(path):
        create_or_open_store(path, meta, rows_per_shard=rows)
        groups = [range(i, min(i + rows, len(keys))) for i in range(0, len(keys), rows)]
        for sid, g in zip(allocate_shards(path, len(groups)), groups):
            write_shard(path, sid, [keys[i] for i in g], values[list(g)])


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_lazy_and_in_memory_reads_are_identical(tmp_path, dtype):
    rng = np.random.default_rng(0)
    keys = [_key(i) for i in range(75)]  # 5 shards, the last one partial
    values = (rng.standard_normal((75, len(VIEWS), 24)) * 3).astype(np.float32)
    path = tmp_path / "s.zarr"
    _write(path, keys, values, dtype)
    ds_keys = [keys[i] for i in rng.permutation(75)[:50]] + [keys[3], keys[3]]  # dataset order, a duplicate
    eager = prior_vectors(open_priors(path), ds_keys, VIEWS, setting="true")
    lazy = prior_vectors(path, ds_keys, VIEWS, setting="false")
    batch = rng.integers(0, len(ds_keys), size=64)
    for v in VIEWS:
        assert isinstance(eager[v], np.ndarray) and isinstance(lazy[v], LazyPriorRows)
        assert len(lazy[v]) == len(ds_keys) and lazy[v].shape == eager[v].shape
        got = lazy[v][batch]
        assert got.dtype == np.float32 and np.array_equal(got, eager[v][batch])
        assert np.array_equal(lazy[v][7], eager[v][7]) and lazy[v][7].shape == (24,)
        assert np.array_equal(np.asarray(lazy[v]), eager[v])
        # the stored values themselves, rounded to the store's dtype
        vi = VIEWS.index(v)
        want = values[[keys.index(k) for k in ds_keys], vi].astype(dtype).astype(np.float32)
        assert np.array_equal(np.asarray(lazy[v]), want)
    # a spawned DataLoader worker gets a picklable reader that re-maps the files
    again = pickle.loads(pickle.dumps(lazy["hflip"]))
    assert np.array_equal(again[batch], eager["hflip"][batch])


def test_cache_follows_the_stores_commits(tmp_path):
    rng = np.random.default_rng(1)
    keys = [_key(i) for i in range(40)]
    values = rng.standard_normal((40, len(VIEWS), 8)).astype(np.float32)
    path = tmp_path / "s.zarr"
    _write(path, keys[:20], values[:20], "float32")
    first = open_row_cache(path)
    assert first.n == 20 and open_row_cache(path, build=False).folder == first.folder  # reused, not rebuilt
    with pytest.raises(PtgError, match="not in the priors store"):
        first.rows([keys[30]])
    _write(path, keys[20:], values[20:], "float32")  # new commits: a new state
    with pytest.raises(PtgError, match="no up-to-date row cache"):
        open_row_cache(path, build=False)
    second = open_row_cache(path)
    assert second.folder != first.folder and second.n == 40 and not first.folder.exists()
    lazy = LazyPriorRows(path, keys[::-1], "vflip")
    assert np.array_equal(np.asarray(lazy), values[::-1, 2])
    assert cache_dir_for(path) == second.folder.parent
    with pytest.raises(PtgError, match="view 'rot90' is not in the priors store"):
        LazyPriorRows(path, keys, "rot90")


def test_decide_in_memory():
    assert decide_in_memory("auto", 10, budget=100) and not decide_in_memory("auto", 1000, budget=100)
    assert decide_in_memory("true", 1 << 60) and not decide_in_memory(False, 0)
    with pytest.raises(PtgError, match="priors_in_memory='sometimes'"):
        decide_in_memory("sometimes", 0)
