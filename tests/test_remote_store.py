"""Stores in a bucket: URL parsing, verified copies, mirrors, the writer lease and fencing, a dropped
connection, extraction into s3:// — against a real S3 API (moto's server on 127.0.0.1, tests/s3_fixtures.py)."""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.storage.location import local_only, parse_location
from ptg.pipeline.storage.store import allocate_shards, create_or_open_store, open_priors, write_shard, writer_lock
from .test_extract import _all  # the store's keys and every view's values

ROWS = 32  # rows per shard of the test stores


def _store(path: Path, n: int, seed: int = 0, start: int = 0) -> list[str]:
    """A priors store of n random rows (float16, 2 views x 8) in shards of ROWS, written by the real writer."""
    rng = np.random.default_rng(seed)
    keys = [f"{start + i:064x}" for i in range(n)]
    meta = {"encoder": {"name": "test"}, "fingerprint": "test-fp", "random_init": False, "dim": 8,
            "views": ["identity", "hflip"], "views_spec": "flips", "dtype": "float16"}
    with writer_lock(path):
        create_or_open_store(path, meta, ROWS)
        groups = [keys[i : i + ROWS] for i in range(0, n, ROWS)]
        for sid, k in zip(allocate_shards(path, len(groups)), groups):
            write_shard(path, sid, k, rng.standard_normal((len(k), 2, 8)).astype(np.float32))
    return keys


def _files(store: Path) -> dict[str, bytes]:
    """Every file of a store's layout (not the local lock and marker) -> bytes."""
    skip = {"writer.lock", ".ptg-artifact.json", "mirror.json"}
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file() and p.name not in skip and "quarantine" not in p.parts}


# ---------------------------------------------------------------------------------------------
# Locations


def test_location_parses_urls_and_refuses_lookalikes(tmp_path):
    loc = parse_location("s3://bucket/some/prefix/")
    assert (loc.remote, loc.scheme, loc.bucket, loc.prefix, loc.url) == (True, "s3", "bucket", "some/prefix", "s3://bucket/some/prefix")
    assert parse_location("gs://b/p").scheme == "gs" and parse_location("s3a://b/p").scheme == "s3"
    assert parse_location(f"file://{tmp_path}/x.zarr").path == tmp_path / "x.zarr"
    assert parse_location(tmp_path / "x.zarr").path == tmp_path / "x.zarr" and not parse_location("x.zarr").remote
    for bad, said in (("s3:/bucket/p", "slash missing"), (Path("s3://bucket/p"), "slash missing"),
                      ("ftp://host/p", "not supported"), ("s3://", "not a bucket URL"),
                      ("s3://KEY:SECRET@bucket/p", "credentials"), ("s3://b/a/../c", "'..'")):
        with pytest.raises(PtgError, match=said):
            parse_location(bad, "--out")
    with pytest.raises(PtgError, match="priors copy s3://b/p LOCAL.zarr"):
        local_only("s3://b/p", "--priors")


def test_extract_cli_refuses_a_collapsed_url_and_writes_no_folder(tmp_path, monkeypatch, capsys):
    from ptg.cli.app import main

    monkeypatch.chdir(tmp_path)
    assert main(["extract-priors", "--manifest", "m.jsonl", "--out", "s3:/bucket/priors"]) == 1
    assert "slash missing" in capsys.readouterr().err
    assert not (tmp_path / "s3:").exists()
    with pytest.raises(PtgError, match="only a local folder works here"):  # every local writer refuses a URL
        with writer_lock("s3://bucket/priors"):  # type: ignore[arg-type]
            pass
    assert not (tmp_path / "s3:").exists()


# ---------------------------------------------------------------------------------------------
# Copies and mirrors


def test_copy_round_trip_is_bit_identical_and_sends_only_missing_shards(tmp_path, s3):
    from ptg.pipeline.storage.storecopy import copy_store

    a = tmp_path / "a.zarr"
    _store(a, 3 * ROWS + 5)
    first = copy_store(a, s3.url("team/priors"))
    assert (first.copied, first.present) == (4, 0)
    assert copy_store(a, s3.url("team/priors")).copied == 0  # nothing DST lacks
    back = copy_store(s3.url("team/priors"), tmp_path / "b.zarr")
    assert back.copied == 4
    assert _files(tmp_path / "b.zarr") == _files(a)  # local -> bucket -> local, byte for byte
    assert copy_store(s3.url("team/priors"), s3.url("other")).copied == 4  # bucket -> bucket
    copy_store(s3.url("other"), tmp_path / "c.zarr")
    assert _files(tmp_path / "c.zarr") == _files(a)
    # a store that grew: only its new shard travels
    _store_more(a)
    assert copy_store(a, s3.url("team/priors")).copied == 1


def _store_more(path: Path) -> None:
    rng = np.random.default_rng(9)
    with writer_lock(path):
        sid = allocate_shards(path, 1)[0]
        write_shard(path, sid, [f"{10_000 + i:064x}" for i in range(3)], rng.standard_normal((3, 2, 8)).astype(np.float32))


def test_interrupted_copy_resumes_and_refuses_a_diverged_dst(tmp_path, s3, monkeypatch):
    from ptg.pipeline.storage import storecopy
    from ptg.pipeline.storage.storecopy import copy_store

    a = tmp_path / "a.zarr"
    _store(a, 3 * ROWS)
    real = storecopy._RemoteSide.write

    def stopped_at_shard_2(self, key, data):
        if key.startswith("priors/c/2/"):
            raise KeyboardInterrupt  # the user stops the copy while shard 2 is being sent
        real(self, key, data)

    monkeypatch.setattr(storecopy._RemoteSide, "write", stopped_at_shard_2)
    with pytest.raises(KeyboardInterrupt):
        copy_store(a, s3.url("p"))
    monkeypatch.setattr(storecopy._RemoteSide, "write", real)
    again = copy_store(a, s3.url("p"))
    assert (again.copied, again.present) == (1, 2)  # only the shard that never got its commit record
    other = tmp_path / "other.zarr"
    _store(other, ROWS, seed=5, start=500)  # same settings, other rows in shard 0
    with pytest.raises(PtgError, match="not a copy of it"):
        copy_store(other, s3.url("p"))


def test_bucket_reads_equal_local_through_a_mirror_reused_until_commits_change(tmp_path, s3, monkeypatch):
    from ptg.pipeline.storage import storecopy
    from ptg.pipeline.storage.storecopy import copy_store

    a = tmp_path / "a.zarr"
    _store(a, 2 * ROWS + 1)
    copy_store(a, s3.url("p"))
    assert _all(s3.url("p"))[0] == _all(a)[0]
    np.testing.assert_array_equal(_all(s3.url("p"))[1], _all(a)[1])
    calls = []
    real = storecopy.transfer
    monkeypatch.setattr(storecopy, "transfer", lambda *a, **k: calls.append(1) or real(*a, **k))
    _all(s3.url("p"))
    assert calls == []  # unchanged: the mirror is reused after one LIST
    _store_more(a)
    copy_store(a, s3.url("p"))
    keys, vals = _all(s3.url("p"))
    assert len(calls) == 2 and len(keys) == 2 * ROWS + 4  # the copy, then one pull of the new shard
    np.testing.assert_array_equal(vals, _all(a)[1])


def test_damaged_shard_in_the_bucket_is_never_served(tmp_path, s3):
    from ptg.pipeline.storage.remote import RemoteStore
    from ptg.pipeline.storage.storecopy import copy_store

    a = tmp_path / "a.zarr"
    _store(a, 2 * ROWS)
    copy_store(a, s3.url("p"))
    remote = RemoteStore(s3.url("p"))
    key = "priors/c/1/0/0"
    data = bytearray(remote.get(key, limit=1 << 30))
    data[len(data) // 3] ^= 0xFF
    remote.put(key, bytes(data))
    with pytest.raises(PtgError, match="shard 1"):
        copy_store(s3.url("p"), tmp_path / "b.zarr")
    assert not (tmp_path / "b.zarr" / "commits" / "shard-000001.json").exists()  # the good shard 0 is kept


# ---------------------------------------------------------------------------------------------
# The lease


def test_second_writer_refused_naming_the_holder(s3):
    from ptg.pipeline.storage.lease import Lease
    from ptg.pipeline.storage.remote import RemoteStore

    store = RemoteStore(s3.url("p"))
    with Lease(store, ttl=30):
        with pytest.raises(PtgError, match=r"being written by pid \d+ on host"):
            Lease(store).acquire()
    with Lease(store) as again:  # released: the next writer gets the next generation
        assert again.gen == 2


def test_expired_lease_taken_over_and_the_stale_writer_cannot_commit(tmp_path, s3):
    from ptg.pipeline.storage.lease import Lease
    from ptg.pipeline.storage.remote import RemoteStore
    from ptg.pipeline.storage.storecopy import _LocalSide, _RemoteSide, transfer

    a = tmp_path / "a.zarr"
    _store(a, 2 * ROWS)
    store = RemoteStore(s3.url("p"))
    stale = Lease(store, ttl=0.5, renew=False).acquire()  # a writer that stalls (or died) without renewing
    time.sleep(0.7)
    with pytest.raises(PtgError, match="expired without renewal"):
        stale.check()
    fresh = Lease(store, ttl=30).acquire()  # takes over the expired lease
    assert fresh.gen == stale.gen + 1
    with pytest.raises(PtgError, match="taken over by pid"):
        transfer(_LocalSide(a), _RemoteSide(store, stale))  # fenced before its first commit record
    assert not [k for k in store.listing("commits/")]
    transfer(_LocalSide(a), _RemoteSide(store, fresh))
    assert len(store.listing("commits/")) == 2
    before = {k: v["e_tag"] for k, v in store.listing().items() if not k.startswith("lease/")}
    import shutil

    shutil.copytree(a, tmp_path / "grown.zarr")
    _store_more(tmp_path / "grown.zarr")  # the stale writer has a new shard and a grown array to publish
    with pytest.raises(PtgError, match="taken over"):
        transfer(_LocalSide(tmp_path / "grown.zarr"), _RemoteSide(store, stale))
    assert {k: v["e_tag"] for k, v in store.listing().items() if not k.startswith("lease/")} == before
    fresh.release()


def test_lease_renewal_keeps_a_slow_writer_alive(s3):
    from ptg.pipeline.storage.lease import Lease
    from ptg.pipeline.storage.remote import RemoteStore

    store = RemoteStore(s3.url("p"))
    with Lease(store, ttl=0.9) as lease:
        time.sleep(1.5)  # longer than the ttl: only renewals keep it
        lease.check()
        with pytest.raises(PtgError, match="being written"):
            Lease(store).acquire()


def test_create_only_put_has_one_winner(s3):
    from concurrent.futures import ThreadPoolExecutor

    from ptg.pipeline.storage.remote import RemoteStore

    store = RemoteStore(s3.url("p"))
    with ThreadPoolExecutor(4) as pool:
        wins = list(pool.map(lambda i: store.put_new("lease/00000001.json", str(i).encode()), range(4)))
    assert wins.count(True) == 1


# ---------------------------------------------------------------------------------------------
# Faults


def test_dropped_connection_mid_upload_is_a_named_error_and_rerun_completes(tmp_path, s3, cut_proxy):
    from ptg.pipeline.storage.storecopy import copy_store

    a = tmp_path / "a.zarr"
    _store(a, 3 * ROWS)
    cut_proxy.cut_match = b"/priors/c/"  # every shard upload loses its connection 64 bytes into the shard
    with pytest.raises(PtgError, match=r"uploading s3://.*/priors/c/0/0/0 failed .*run the same command again"):
        copy_store(a, s3.url("p"))
    assert cut_proxy.cuts >= 1
    cut_proxy.cut_match = None  # the network is back
    assert copy_store(a, s3.url("p")).copied == 3
    copy_store(s3.url("p"), tmp_path / "b.zarr")
    assert _files(tmp_path / "b.zarr") == _files(a)


# ---------------------------------------------------------------------------------------------
# Extraction straight into a bucket


def test_extract_to_a_bucket_equals_the_local_run(tmp_path, s3):
    from ptg.pipeline.priors.extract import extract_priors
    from tests.test_extract import _images, _manifest, _tiny_clip_spec

    man = _manifest(tmp_path / "m.jsonl", _images(tmp_path / "img", 5))
    spec = _tiny_clip_spec(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = extract_priors(man, spec, out=f"file://{tmp_path}/local.zarr", batch_size=2, rows_per_shard=32)
        remote = extract_priors(man, spec, out=s3.url("priors"), batch_size=2, rows_per_shard=32)
        again = extract_priors(man, spec, out=s3.url("priors"), batch_size=2, rows_per_shard=32)
    assert local.store == tmp_path / "local.zarr" and remote.store == s3.url("priors") and remote.computed == 5 and (again.computed, again.reused) == (0, 5)
    lk, lv = _all(tmp_path / "local.zarr")
    rk, rv = _all(s3.url("priors"))
    assert lk == rk
    np.testing.assert_array_equal(lv, rv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mirrored = Path(open_priors(s3.url("priors")).path)
    meta = json.dumps(json.loads((mirrored / "zarr.json").read_text()))
    assert "testing" not in meta and "127.0.0.1" not in meta  # no credential or endpoint in the metadata


def test_two_workers_into_a_bucket_equal_the_local_run_and_a_damaged_bucket_shard_is_recomputed(tmp_path, s3, monkeypatch):
    import torch

    from ptg.pipeline.priors.extract import extract_priors
    from ptg.pipeline.storage.remote import RemoteStore
    from tests.test_extract import _images, _manifest, _tiny_clip_spec

    torch.set_num_threads(1)
    m = _manifest(tmp_path / "m.jsonl", _images(tmp_path / "img", 24, side=40))
    spec = _tiny_clip_spec(tmp_path)
    kw = dict(rows_per_shard=8, batch_size=4, views="flips", dtype="float32")
    url = s3.url("priors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = extract_priors(m, spec, out=tmp_path / "one.zarr", loader_workers=0, **kw)
        two = extract_priors(m, spec, out=url, workers=2, **kw)  # a local dask cluster: workers upload, this process commits
    assert (local.computed, two.computed, two.store) == (24, 24, url)
    lk, lv = _all(tmp_path / "one.zarr")
    rk, rv = _all(url)
    assert lk == rk
    np.testing.assert_array_equal(lv, rv)
    # shard 1 damaged inside the bucket; another machine (fresh $PTG_CACHE) reads, then re-extracts
    remote = RemoteStore(url)
    data = bytearray(remote.get("priors/c/1/0/0", limit=1 << 30))
    data[len(data) // 3] ^= 0xFF
    remote.put("priors/c/1/0/0", bytes(data))
    monkeypatch.setenv("PTG_CACHE", str(tmp_path / "cache-2"))
    with pytest.raises(PtgError, match=rf"the priors store {url}: shard 1 \(rows 8..15\).*extract-priors` again with --out {url} "):
        _all(url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = extract_priors(m, spec, out=url, loader_workers=0, **kw)
    assert (again.computed, again.reused) == (8, 16) and any("shard 1" in str(w.message) for w in caught)
    assert [k for k in remote.listing() if k.startswith("commits/quarantine/shard-000001.json.")]  # kept for inspection
    monkeypatch.setenv("PTG_CACHE", str(tmp_path / "cache-3"))
    rk, rv = _all(url)
    assert lk == rk
    np.testing.assert_array_equal(lv, rv)


def test_train_reads_priors_and_decoded_images_from_a_bucket(tmp_path, s3, capsys):
    from ptg.cli.app import main
    from ptg.pipeline.storage.storecopy import copy_store
    from ptg.ptgrm.train.config import resolve
    from ptg.ptgrm.train.trainer import train
    from tests.test_train import TINY
    from tests.test_train_units import make_samples, make_store

    manifest = make_samples(tmp_path / "samples")
    copy_store(make_store(tmp_path / "s.zarr", manifest, dim=8), s3.url("p"))
    assert main(["data", "cache", "--manifest", str(manifest), "--store", s3.url("images")]) == 0
    capsys.readouterr()
    cfg = resolve(overrides={"out": str(tmp_path / "run"), "mode": "joint", "steps": 2,
                             "data": {"manifest": str(manifest), "priors": [s3.url("p")], "images": "store",
                                      "image_store": s3.url("images")}}, sets=TINY)  # store: every image from the bucket
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg)
    assert (tmp_path / "run").is_dir() and any((tmp_path / "run").rglob("*.pt*"))


def test_image_store_in_a_bucket_equals_the_local_one_and_a_damaged_shard_is_decoded_again(tmp_path, s3, monkeypatch, capsys):
    from ptg.cli.app import main
    from ptg.pipeline.storage import imagestore
    from ptg.pipeline.core.imageio import read_image
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.pipeline.storage.remote import RemoteStore
    from tests.test_train_units import make_samples

    manifest = make_samples(tmp_path / "samples")
    paths = imagestore.manifest_paths(load_manifest(manifest).samples)
    url = s3.url("images")
    args = ["data", "cache", "--manifest", str(manifest), "--store", url, "--shard-mb", "0.5"]
    assert main(args) == 0
    assert f"{url}: wrote {len(paths)} image(s)" in capsys.readouterr().out
    assert main(args) == 0 and "wrote 0 image(s)" in capsys.readouterr().out  # resumed: nothing decoded again
    local = imagestore.cache_images(paths, tmp_path / "local-images", shard_bytes=1 << 19)
    keys = imagestore.file_keys(paths)
    remote, here = imagestore.ImageStore(url), imagestore.ImageStore(local.store)
    for k, p in zip(keys, paths):
        np.testing.assert_array_equal(remote.image(k), read_image(p))
    objects = RemoteStore(url).listing()
    assert sorted(k for k in objects if k.startswith("commits/shard-")) == sorted(
        f"commits/{p.name}" for p in (local.store / "commits").glob("shard-*.json"))
    for p in (local.store / "shards").glob("*.bin"):  # byte for byte the local store's shards
        assert RemoteStore(url).get(f"shards/{p.name}", limit=1 << 30) == p.read_bytes()
    # shard 0 damaged inside the bucket: another machine's reader names it, `ptg data cache` decodes it again
    data = bytearray(RemoteStore(url).get("shards/shard-000000.bin", limit=1 << 30))
    data[100] ^= 0xFF
    RemoteStore(url).put("shards/shard-000000.bin", bytes(data))
    monkeypatch.setenv("PTG_CACHE", str(tmp_path / "cache-2"))
    first = imagestore.ImageStore(url).commits[0]["keys"][0]
    with pytest.raises(PtgError, match=rf"the image store {url}: shard 0 holds image .* do not match their commit digest"):
        imagestore.ImageStore(url).image(first)
    assert main(["data", "info", url, "--verify"]) == 1
    shown = capsys.readouterr()
    assert f"store   {url}" in shown.out and "shard 0" in shown.out and f"--store {url}` to repair" in shown.err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    assert "wrote 0 image(s)" not in capsys.readouterr().out
    assert [k for k in RemoteStore(url).listing() if k.startswith("commits/quarantine/shard-000000.json.")]
    monkeypatch.setenv("PTG_CACHE", str(tmp_path / "cache-3"))
    again = imagestore.ImageStore(url)
    assert again.verify() == [] and len(again) == len(set(keys))
    for k, p in zip(keys, paths):
        np.testing.assert_array_equal(again.image(k), read_image(p))


def test_cli_copy_info_and_a_path_only_option_refusing_the_url(tmp_path, s3, capsys, monkeypatch):
    from ptg.cli.app import main

    monkeypatch.chdir(tmp_path)  # where a collapsed URL would have become a folder named s3:

    a = tmp_path / "a.zarr"
    _store(a, ROWS + 1)
    assert main(["priors", "copy", str(a), s3.url("team")]) == 0
    assert "2 shard(s) copied" in capsys.readouterr().out
    assert main(["priors", "copy", str(a), s3.url("team")]) == 0
    assert "0 shard(s) copied" in capsys.readouterr().out
    assert main(["priors", "info", s3.url("team"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert f"{ROWS + 1} committed" in out and "verified" in out
    assert main(["priors", "export", s3.url("team"), "--out", s3.url("team.h5")]) == 1  # an export is a local file
    assert "slash missing" in capsys.readouterr().err and not (tmp_path / "s3:").exists()
    assert main(["priors", "export", s3.url("team"), "--out", str(tmp_path / "team.h5")]) == 0
    assert not (tmp_path / "s3:").exists()


def test_distill_reads_the_teacher_store_from_a_bucket_as_from_its_folder(tmp_path, s3, capsys):
    from ptg.cli.app import main
    from ptg.pipeline.storage.storecopy import copy_store
    from tests.test_train_units import make_samples, make_store

    manifest = make_samples(tmp_path / "samples")
    local = make_store(tmp_path / "s.zarr", manifest, dim=8)
    copy_store(local, s3.url("teacher"))
    runs = {}
    for name, priors in (("local", str(local)), ("bucket", s3.url("teacher"))):
        assert main(["distill", "--priors", priors, "--manifest", str(manifest), "--out", str(tmp_path / name),
                     "--steps", "2", "--size", "32", "--threads", "1", "--quiet"]) == 0, capsys.readouterr().err
        runs[name] = json.loads((tmp_path / name / "student.json").read_text())
    assert runs["bucket"]["agreement"] == runs["local"]["agreement"]  # the same teacher rows, the same student
    assert not Path("s3:").exists()


def test_sigkill_during_an_upload_then_rerun_equals_the_source(tmp_path, s3):
    import os
    import signal
    import subprocess
    import sys

    from ptg.pipeline.storage.remote import RemoteStore
    from ptg.pipeline.storage.storecopy import copy_store

    a = tmp_path / "a.zarr"
    _store(a, 40 * ROWS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "ptg.cli.app", "priors", "copy", str(a), s3.url("p")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    remote = RemoteStore(s3.url("p"))
    for _ in range(600):  # at most 60 s: kill once some, not all, shards are committed
        n = len(remote.listing("commits/"))
        if n >= 3 or proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the copy finished before it could be killed"
    assert 0 < len(remote.listing("commits/")) < 40
    again = copy_store(a, s3.url("p"))  # the dead writer's lease (this host, pid gone) is taken over at once
    assert again.copied + again.present == 40 and again.present >= 3
    copy_store(s3.url("p"), tmp_path / "b.zarr")
    assert _files(tmp_path / "b.zarr") == _files(a)


def test_concurrent_readers_pull_the_mirror_once(tmp_path, s3, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from ptg.pipeline.storage import storecopy

    a = tmp_path / "a.zarr"
    _store(a, 2 * ROWS)
    storecopy.copy_store(a, s3.url("p"))
    calls = []
    real = storecopy.transfer
    monkeypatch.setattr(storecopy, "transfer", lambda *x, **k: calls.append(1) or real(*x, **k))
    with ThreadPoolExecutor(3) as pool:
        folders = list(pool.map(lambda _: storecopy.mirror(s3.url("p")), range(3)))
    assert len(set(folders)) == 1 and calls == [1]


def test_a_prefix_holding_only_a_dead_writers_lease_is_ours_but_foreign_objects_are_refused(tmp_path, s3):
    from ptg.pipeline.storage.lease import Lease
    from ptg.pipeline.storage.remote import RemoteStore
    from ptg.pipeline.storage.storecopy import copy_store

    a = tmp_path / "a.zarr"
    _store(a, ROWS)
    Lease(RemoteStore(s3.url("p")), ttl=0.1, renew=False).acquire()  # a writer killed right after taking the lease
    time.sleep(0.2)
    assert copy_store(a, s3.url("p")).copied == 1
    RemoteStore(s3.url("q")).put("notes.txt", b"someone else's")
    with pytest.raises(PtgError, match="not a ptg priors store .*--force"):
        copy_store(a, s3.url("q"))
    assert copy_store(a, s3.url("q"), force=True).copied == 1
    assert RemoteStore(s3.url("q")).get("notes.txt") == b"someone else's"
