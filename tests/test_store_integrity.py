"""Verified reads: every corruption of a store ends in an error naming the store, the shard and its
rows, or in a repair; a reader never serves a value that differs from what was written.

Each case damages a small store (3 shards: 16 + 16 + 8 rows), then reads every key through a fresh
reader (in memory and from disk) and compares what is served with the values written. The cases run
on a local folder and on a bucket (the same bytes damaged in its objects, read through its mirror on
a machine that had not pulled it yet, repaired by a writer through its stage and lease).
"""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.storage.store import (ARRAY, COMMITS, DamagedShardWarning, allocate_shards, create_or_open_store,
                                open_priors, quick_health, read_commits, usable_commits, write_shard, writer_lock)

from .s3_fixtures import Where, where  # noqa: F401  (`where`: a local folder and a bucket on the loopback server)
from .test_store import VIEWS, _key, _meta, _store


def _shard_file(path, shard: int):
    return path / ARRAY / "c" / str(shard) / "0" / "0"


def _flip(f, offset: int, n: int = 4) -> None:
    data = bytearray(f.read_bytes())
    for i in range(offset, offset + n):
        data[i % len(data)] ^= 0xFF
    f.write_bytes(bytes(data))


def _edit_rows_per_shard(path) -> None:
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["rows_per_shard"] = 8
    (path / "zarr.json").write_text(json.dumps(meta))


CORRUPTIONS = {
    "flip shard data": lambda p: _flip(_shard_file(p, 1), 10),
    "flip shard index": lambda p: _flip(_shard_file(p, 1), -6),
    "truncate shard to 0 bytes": lambda p: _shard_file(p, 1).write_bytes(b""),
    "truncate shard to half": lambda p: _shard_file(p, 1).write_bytes(_shard_file(p, 1).read_bytes()[: _shard_file(p, 1).stat().st_size // 2]),
    "delete shard": lambda p: _shard_file(p, 1).unlink(),
    "edit rows_per_shard": _edit_rows_per_shard,
    "lose zarr.json": lambda p: (p / "zarr.json").unlink(),
}


def _served_or_error(path, keys, in_memory: bool) -> tuple[np.ndarray | None, str]:
    """Read every key; return (values, "") or (None, error text). Nothing else may happen."""
    try:
        r = open_priors(path, in_memory=in_memory)
        return r.get_all_views(keys), ""
    except PtgError as exc:
        return None, str(exc)


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corruption_is_a_named_error_never_a_wrong_value(where, name, in_memory):
    path, keys, values = _store(where, 40)
    ref = open_priors(path).get_all_views(keys)
    np.testing.assert_array_equal(ref, values.astype(np.float16).astype(np.float32))
    where.damage(CORRUPTIONS[name])
    served, err = _served_or_error(path, keys, in_memory)
    assert served is None, f"{name}: values were served from a damaged store"
    assert str(path) in err
    if name not in ("edit rows_per_shard", "lose zarr.json"):
        assert "shard 1 (rows 16..31)" in err and "extract-priors" in err
    # rows of the untouched shards are still served, and exactly
    if name not in ("edit rows_per_shard", "lose zarr.json"):
        r = open_priors(path, in_memory=in_memory)
        np.testing.assert_array_equal(r.get_all_views(keys[:16] + keys[32:]), np.concatenate([ref[:16], ref[32:]]))


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_writer_repairs_every_corruption(where, name):
    """What a re-extraction does: verify reused shards, quarantine damaged ones, compute them again
    (a bucket: the damaged shard's record moved aside in the bucket, under the lease, and replaced)."""
    path, keys, values = _store(where, 40)
    ref = open_priors(path).get_all_views(keys)
    where.damage(CORRUPTIONS[name])
    with where.writer() as folder, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_or_open_store(folder, _meta(), rows_per_shard=16)
        have = {k for rec in usable_commits(folder, keys).values() for k in rec["keys"]}
        todo = [i for i, k in enumerate(keys) if k not in have]
        if todo:
            (sid,) = allocate_shards(folder, 1)
            write_shard(folder, sid, [keys[i] for i in todo], values[todo])
    damaged = name not in ("edit rows_per_shard", "lose zarr.json")
    assert (todo == list(range(16, 32))) if damaged else (todo == [])
    assert any(issubclass(w.category, DamagedShardWarning) for w in caught) == damaged
    r = open_priors(path)
    np.testing.assert_array_equal(r.get_all_views(keys), ref)
    assert r.verify() == [] and quick_health(r.path)["problems"] == []
    if where.remote and damaged:  # the bucket keeps the damaged shard's old record for inspection, as a folder does
        from ptg.pipeline.storage.remote import RemoteStore

        assert [k for k in RemoteStore(path).listing() if k.startswith("commits/quarantine/shard-000001.json.")]


def test_quick_health_sees_size_changes_without_reading_data(where):
    path, _, _ = _store(where, 40)
    assert quick_health(open_priors(path).path) == {"shards": 3, "problems": []}  # a bucket: its mirror

    def damage(p):
        _shard_file(p, 2).write_bytes(b"")
        _shard_file(p, 0).unlink()
    where.damage(damage)
    problems = quick_health(open_priors(path).path)["problems"]
    assert any(p.startswith("shard 0: 0 bytes on disk") for p in problems)
    assert any(p.startswith("shard 2: 0 bytes on disk") for p in problems)


def test_lost_metadata_without_saved_settings_is_refused_with_a_repair_command(where):
    path, keys, _ = _store(where, 20)

    def damage(p):
        (p / "zarr.json").unlink()
        (p / "settings.json").unlink()  # a store made before settings.json existed
    where.damage(damage)
    with pytest.raises(PtgError, match=rf"store {path} has 2 .*zarr.json is lost .*mv .*damaged && ptg extract-priors"):
        with where.writer() as folder:
            create_or_open_store(folder, _meta(), rows_per_shard=16)
    if where.remote:
        from ptg.pipeline.storage.remote import RemoteStore

        left = RemoteStore(path).listing()
        assert {"commits/shard-000000.json", "commits/shard-000001.json", "priors/c/0/0/0"} <= set(left)  # nothing deleted
        assert "zarr.json" not in left  # and nothing made up
    else:
        assert len(read_commits(path)) == 2 and (path / ARRAY / "c" / "0").is_dir()  # nothing deleted


def test_lost_array_metadata_too_is_rebuilt_and_rows_kept(where):
    path, keys, values = _store(where, 40)
    ref = open_priors(path).get_all_views(keys)

    def damage(p):
        (p / "zarr.json").unlink()
        (p / ARRAY / "zarr.json").unlink()
    where.damage(damage)
    with where.writer() as folder:
        meta = create_or_open_store(folder, _meta(), rows_per_shard=16)
        assert "repaired" in meta and usable_commits(folder, keys).keys() == {0, 1, 2}
    np.testing.assert_array_equal(open_priors(path).get_all_views(keys), ref)


def test_empty_skeleton_takes_new_settings_and_message_is_whole(where):
    with where.writer() as folder:
        create_or_open_store(folder, _meta(), rows_per_shard=16)  # e.g. a run stopped by a corrupt image
    with where.writer() as folder:  # no committed row: another encoder may take the store
        meta = create_or_open_store(folder, _meta(fingerprint="0" * 64, dim=4), rows_per_shard=16)
    assert meta["fingerprint"] == "0" * 64 and meta["dim"] == 4
    with where.writer() as folder:
        write_shard(folder, allocate_shards(folder, 1)[0], [_key(0)], np.ones((1, len(VIEWS), 4), np.float32))
    r = open_priors(where.url)
    assert r.fingerprint == "0" * 64 and r.dim == 4 and r.get([_key(0)]).tolist() == [[1.0] * 4]
    long = _meta(fingerprint="1" * 64)
    long["encoder"]["details"] = {"note": "x" * 900}
    with pytest.raises(PtgError) as exc, where.writer() as folder:
        create_or_open_store(folder, long)
    assert f"store {where.url} was made with other settings" in str(exc.value)
    assert "x" * 900 + '"}' in str(exc.value) and str(exc.value).endswith("or the store's own settings.")


def test_unrelated_folder_is_refused_and_nothing_deleted(tmp_path):
    d = tmp_path / "mine"
    (d / "priors").mkdir(parents=True)
    (d / "priors" / "important.txt").write_text("keep me")
    with pytest.raises(PtgError, match=r"not a ptg priors-store .*--force"):
        with writer_lock(d):
            pass
    with writer_lock(d, force=True), pytest.raises(PtgError, match="holds files ptg did not write"):
        create_or_open_store(d, _meta(), rows_per_shard=16)
    assert (d / "priors" / "important.txt").read_text() == "keep me"
    shutil.rmtree(d / "priors")
    (d / "notes.txt").write_text("mine")
    with writer_lock(d, force=True):  # forced: written into, the user's file left alone
        create_or_open_store(d, _meta(), rows_per_shard=16)
    assert (d / "notes.txt").read_text() == "mine"


def test_stale_zarr_partial_files_are_removed_by_the_next_writer(tmp_path):
    path, _, _ = _store(tmp_path, 20)
    leftover = path / ARRAY / "c" / "1" / "0" / "0.deadbeef.partial"
    leftover.write_bytes(b"half")
    assert quick_health(path)["problems"]
    with writer_lock(path):
        pass
    assert not leftover.exists() and quick_health(path)["problems"] == []
    assert (path / COMMITS).is_dir()
