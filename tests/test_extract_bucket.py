"""Cluster extraction straight into a bucket: dask workers upload whole shards, the coordinator commits
them under its lease; no stage folder, no shared filesystem (loopback S3 server, tests/s3_fixtures.py)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.priors.extract import extract_priors
from ptg.pipeline.storage.remote import RemoteStore
from ptg.pipeline.storage.shardstore import DamagedShardWarning
from ptg.pipeline.storage.store import COMMITS
from ptg.pipeline.storage.bucketwriter import BucketWriter

from .test_extract import _all, _images, _manifest, _tiny_clip_spec

torch.set_num_threads(1)
KW = dict(rows_per_shard=16, batch_size=4, views="flips", dtype="float32")


def _commits(url: str) -> list[str]:
    return sorted(k for k in RemoteStore(url).listing(f"{COMMITS}/") if "quarantine" not in k)


def test_dask_scheduler_writes_the_bucket_equal_to_a_local_run(tmp_path, s3, monkeypatch):
    from dask.distributed import LocalCluster

    imgs = _images(tmp_path / "img", 40, side=40)
    m = _manifest(tmp_path / "m.jsonl", imgs)
    spec = _tiny_clip_spec(tmp_path)
    one = extract_priors(m, spec, out=tmp_path / "one.zarr", loader_workers=0, **KW)
    url = s3.url("cluster/priors")
    # the workers start after the fixture set AWS_*: they reach the bucket with their own environment
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        two = extract_priors(m, spec, out=url, dask_scheduler=cluster.scheduler_address, **KW)
    assert (two.store, two.computed, two.reused) == (url, 40, 0)
    assert not (tmp_path / "ptg-cache" / "stage").exists()  # nothing went through a local stage
    assert _commits(url) == [f"{COMMITS}/shard-{i:06d}.json" for i in range(3)]
    k1, v1 = _all(one.store)
    k2, v2 = _all(url)  # read back through the verified mirror
    assert k1 == k2
    np.testing.assert_array_equal(v1, v2)
    bucket = RemoteStore(url)
    for i in range(3):  # the workers' shard objects are the local run's files, byte for byte
        assert bucket.get(f"priors/c/{i}/0/0", limit=1 << 30) == (one.store / f"priors/c/{i}/0/0").read_bytes()
    assert all(json.loads(bucket.get(k))["released"] for k in bucket.listing("lease/"))
    # shard 1 damaged inside the bucket (same size): the coordinator verifies what it reuses, and recomputes it
    data = bytearray(bucket.get("priors/c/1/0/0", limit=1 << 30))
    data[len(data) // 3] ^= 0xFF
    bucket.put("priors/c/1/0/0", bytes(data))
    with pytest.warns(DamagedShardWarning, match=rf"{url}: shard 1 "):
        again = extract_priors(m, spec, out=url, workers=1, **KW)
    assert (again.computed, again.reused) == (16, 24)
    assert [k for k in bucket.listing() if k.startswith(f"{COMMITS}/quarantine/shard-000001.json.")]
    assert bucket.get("priors/c/1/0/0", limit=1 << 30) == (one.store / "priors/c/1/0/0").read_bytes()
    # verified once, then reused without a download until the bucket's objects change
    downloads = []
    real = BucketWriter._problem
    monkeypatch.setattr(BucketWriter, "_problem", lambda self, shard, *a: downloads.append(shard) or real(self, shard, *a))
    assert extract_priors(m, spec, out=url, workers=1, **KW).reused == 40
    assert downloads == [1]  # only the shard recomputed by the last run; 0 and 2 were verified before


def test_worker_killed_mid_shard_then_rerun_completes_and_equals(tmp_path, s3):
    import dask
    import distributed  # noqa: F401  (its config defaults loaded before the override below, not erased by it)

    from ptg.pipeline.core.imageio import read_image

    imgs = _images(tmp_path / "img", 40, side=40)
    m = _manifest(tmp_path / "m.jsonl", imgs)
    spec = _tiny_clip_spec(tmp_path)
    url = s3.url("killed")
    victim = str(imgs[20])  # in shard 1 of 0..2

    def dies_on_victim(path):
        if str(path) == victim:
            os._exit(9)  # the worker process dies mid-shard, as under SIGKILL
        return read_image(path, channels=3)

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), pytest.raises(Exception, match="(?i)killed|died"):
        extract_priors(m, spec, out=url, workers=2, image_loader=dies_on_victim, **KW)
    done = _commits(url)
    assert f"{COMMITS}/shard-000001.json" not in done
    # a killed upload's leftover under the uncommitted id: the rerun overwrites it whole
    RemoteStore(url).put("priors/c/1/0/0", b"half an upload")
    summary = extract_priors(m, spec, out=url, workers=2, **KW)
    kept = sum(json.loads(RemoteStore(url).get(k))["n"] for k in done)  # shards the killed run committed stay
    assert (summary.computed, summary.reused) == (40 - kept, kept) and kept < 40
    one = extract_priors(m, spec, out=tmp_path / "one.zarr", loader_workers=0, **KW)
    k1, v1 = _all(one.store)
    k2, v2 = _all(url)
    assert k1 == k2
    np.testing.assert_array_equal(v1, v2)


def test_a_coordinator_whose_lease_was_taken_over_commits_nothing(tmp_path, s3):
    import time

    imgs = _images(tmp_path / "img", 20, side=40)
    m = _manifest(tmp_path / "m.jsonl", imgs)
    url = s3.url("fenced")

    def take_over(plan):  # another writer takes the lease after the metadata went up, before any commit
        RemoteStore(url).put_new("lease/00000099.json", json.dumps(
            {"gen": 99, "token": "other", "host": "elsewhere", "pid": 1, "expires": time.time() + 60, "ttl": 60}).encode())

    with pytest.raises(PtgError, match="lease .* was taken over by pid 1 on host elsewhere"):
        extract_priors(m, _tiny_clip_spec(tmp_path), out=url, workers=1, on_plan=take_over, **KW)
    assert _commits(url) == []  # shard objects may have arrived; no record makes them visible
    assert "zarr.json" in RemoteStore(url).listing()
