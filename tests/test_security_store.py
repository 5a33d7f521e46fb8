"""Safe with a teammate's priors store (issue 21): links inside a store are refused before anything
is written or read through them, commit records and declared shapes are checked before a read,
HDF5 exports are read only from their own bytes, and the lazy row cache never serves a damaged
shard (every corruption of tests/test_store_integrity.py, on the lazy path)."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.storage.priorcache import prior_vectors
from ptg.pipeline.storage.store import ARRAY, COMMITS, LOCK, export_hdf5, open_priors, writer_lock

from .test_security import SECRET, opened_files
from .test_store import VIEWS, _store
from .test_store_integrity import CORRUPTIONS


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PTG_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def victim_dir(tmp_path):
    d = tmp_path / "elsewhere"
    d.mkdir()
    (d / "victim.txt").write_text(SECRET)
    (d / "zarr.partial").write_text(SECRET)
    return d


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_lazy_row_cache_never_serves_a_damaged_shard(tmp_path, name):
    path, keys, values = _store(tmp_path, 40)
    CORRUPTIONS[name](path)
    with pytest.raises(PtgError) as err:
        rows = prior_vectors(path, keys, ["identity"], setting=False)
        np.asarray(rows["identity"])  # a lazy view would be read here
    assert str(path) in str(err.value)
    if name not in ("edit rows_per_shard", "lose zarr.json"):  # the in-memory path's very message
        assert "shard 1 (rows 16..31)" in str(err.value) and "extract-priors" in str(err.value)


def test_lazy_row_cache_of_a_healthy_store_serves_exact_values(tmp_path):
    path, keys, values = _store(tmp_path, 40)
    lazy = np.asarray(prior_vectors(path, keys, ["identity"], setting=False)["identity"])
    np.testing.assert_array_equal(lazy, values[:, 0].astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("where", ["lock", "shard folder", "priors folder", "commits folder"])
def test_symlinks_inside_a_store_are_refused_before_any_write(tmp_path, victim_dir, where):
    path, keys, values = _store(tmp_path, 20)
    if where == "lock":
        (path / LOCK).unlink()
        (path / LOCK).symlink_to(victim_dir / "victim.txt")
    elif where == "shard folder":  # the next shard id's folder: write_shard would empty it
        (path / ARRAY / "c" / "2").symlink_to(victim_dir)
    elif where == "priors folder":  # _remove_leftovers would delete *.partial through it
        os.rename(path / ARRAY, tmp_path / "real-priors")
        (path / ARRAY).symlink_to(victim_dir)
    else:
        os.rename(path / COMMITS, tmp_path / "real-commits")
        (path / COMMITS).symlink_to(victim_dir)
    with pytest.raises(PtgError, match="symbolic link"):
        with writer_lock(path):
            pass
    assert sorted(p.name for p in victim_dir.iterdir()) == ["victim.txt", "zarr.partial"]
    assert (victim_dir / "victim.txt").read_text() == SECRET


def test_symlinked_shard_file_is_not_read(tmp_path):
    path, keys, values = _store(tmp_path, 40)
    other, _, _ = _store(tmp_path / "other", 40)
    shard = path / ARRAY / "c" / "1" / "0" / "0"
    shard.unlink()
    shard.symlink_to(other / ARRAY / "c" / "1" / "0" / "0")
    with opened_files() as seen:
        with pytest.raises(PtgError, match="holds a symbolic link"):
            open_priors(path)
    assert not [s for s in seen if str(tmp_path / "other") in s]


@pytest.mark.parametrize("field,value,message", [
    ("n", 10 ** 9, "has 16 keys for .n. = 1000000000"),
    ("n", "16", "'n' = '16', not a non-negative integer"),
    ("keys", "abc", "has str keys"),
    ("sha256", 7, "no valid 'sha256'"),
    ("shard", 5, "says shard 5"),
])
def test_commit_record_fields_are_checked_before_reading(tmp_path, field, value, message):
    path, keys, values = _store(tmp_path, 40)
    rec_path = path / COMMITS / "shard-000001.json"
    rec = json.loads(rec_path.read_text())
    rec[field] = value
    rec_path.write_text(json.dumps(rec))
    with pytest.raises(PtgError, match=message):
        open_priors(path).get_all_views(keys)


def test_a_declared_dim_the_files_cannot_hold_is_refused_unread(tmp_path):
    path, keys, values = _store(tmp_path, 40)
    meta_path = path / ARRAY / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"][-1] = 2 ** 27  # 40 rows x 2 views x 2^27 x 2 bytes = 21 GB declared, a few KB on disk
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(PtgError, match="declares .* bytes of priors but its files hold"):
        open_priors(path)


def _export(tmp_path):
    path, keys, values = _store(tmp_path, 20)
    return export_hdf5(path, tmp_path / "p.h5"), keys


def test_hdf5_external_link_is_refused_and_not_followed(tmp_path):
    import h5py

    h5, keys = _export(tmp_path)
    other = tmp_path / "outside.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.ones((20, len(VIEWS), 8), np.float16)
    with h5py.File(h5, "a") as f:
        del f["priors"]
        f["priors"] = h5py.ExternalLink(str(other), "data")
    with opened_files() as seen:
        with pytest.raises(PtgError, match="'priors' is ExternalLink, not a dataset stored in the file"):
            open_priors(h5)
    assert str(other) not in seen


def test_hdf5_external_raw_storage_is_refused(tmp_path):
    import h5py

    h5, keys = _export(tmp_path)
    raw = tmp_path / "secret.bin"
    raw.write_bytes(b"\x01" * (20 * len(VIEWS) * 8 * 2))
    with h5py.File(h5, "a") as f:
        del f["priors"]
        f.create_dataset("priors", shape=(20, len(VIEWS), 8), dtype="f2", external=[(str(raw), 0, h5py.h5f.UNLIMITED)])
    with pytest.raises(PtgError, match="stored in external file"):
        open_priors(h5)


def test_hdf5_virtual_dataset_is_refused(tmp_path):
    import h5py

    h5, keys = _export(tmp_path)
    other = tmp_path / "outside.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.ones((20, len(VIEWS), 8), np.float16)
    layout = h5py.VirtualLayout(shape=(20, len(VIEWS), 8), dtype="f2")
    layout[...] = h5py.VirtualSource(str(other), "data", shape=(20, len(VIEWS), 8))
    with h5py.File(h5, "a") as f:
        del f["priors"]
        f.create_virtual_dataset("priors", layout)
    with pytest.raises(PtgError, match="virtual dataset"):
        open_priors(h5)


def test_hdf5_declaring_more_than_it_holds_is_refused_unread(tmp_path):
    import h5py

    h5 = tmp_path / "bomb.h5"
    with h5py.File(h5, "w") as f:  # 2^31 x 1 x 2 float16 = 8 GB declared, gzip of nothing on disk
        f.create_dataset("keys", data=np.array([b"k"], dtype="S64"))
        f.create_dataset("priors", shape=(2 ** 31, 1, 2), dtype="f2", chunks=(2 ** 16, 1, 2), compression="gzip")
        f.attrs["metadata"] = json.dumps({"fingerprint": "f", "views": ["identity"], "dim": 2})
    with pytest.raises(PtgError, match="declares .* bytes of priors"):
        open_priors(h5)
    assert "h5py" in sys.modules


def test_writer_never_deletes_through_a_link_planted_after_the_claim(tmp_path, victim_dir):
    """Defence in depth: a link planted while a writer holds the lock is still not followed."""
    from ptg.pipeline.storage.store import _remove_leftovers, allocate_shards, write_shard

    path, keys, values = _store(tmp_path, 20)
    with writer_lock(path):
        (sid,) = allocate_shards(path, 1)
        (path / ARRAY / "c" / str(sid)).symlink_to(victim_dir)
        with pytest.raises(PtgError, match="shard folder .* is a symbolic link"):
            write_shard(path, sid, keys[:4], values[:4])
        (path / ARRAY / "c" / str(sid)).unlink()
        os.rename(path / ARRAY, tmp_path / "real-priors")
        (path / ARRAY).symlink_to(victim_dir)
        with pytest.raises(PtgError, match="array folder .* is a symbolic link"):
            _remove_leftovers(path)
    assert sorted(p.name for p in victim_dir.iterdir()) == ["victim.txt", "zarr.partial"]


def test_hdf5_with_fewer_priors_than_keys_is_a_named_error(tmp_path):
    import h5py

    h5, keys = _export(tmp_path)
    with h5py.File(h5, "a") as f:
        data = f["priors"][:5]
        del f["priors"]
        f["priors"] = data
    with pytest.raises(PtgError, match=r"'keys' \(20,\) and 'priors' \(5, 2, 8\) do not match"):
        open_priors(h5)


# ---------------------------------------------------------------------------------------------
# bucket stores: lease records are input too


@pytest.mark.parametrize("record", [b"[1, 2]", b'"held"', b'{"expires": "soon"}', b'{"expires": [1]}',
                                    b'{"expires": 1e300, "token": "t"}', b'{"expires": 1e999}',
                                    b'{"expires": 0, "ttl": 1e12}', b'{"expires": 9e9, "ttl": 30}'])
def test_crafted_lease_record_neither_crashes_nor_locks_the_store_forever(s3, record):
    from ptg.pipeline.storage.lease import Lease
    from ptg.pipeline.storage.remote import RemoteStore

    store = RemoteStore(s3.url("p"))
    store.put("lease/00000003.json", record)
    with Lease(store, ttl=30) as lease:  # the crafted record counts as expired: this writer goes on
        assert lease.gen == 4
        lease.check()


def test_lease_keys_that_are_not_ptg_generations_are_ignored(s3):
    from ptg.pipeline.storage.lease import Lease
    from ptg.pipeline.storage.remote import RemoteStore

    import obstore

    store = RemoteStore(s3.url("p"))  # another client wrote these (ptg's own put refuses such keys)
    obstore.put(store._obs, "lease/\u00b2\u00b2.json", b"{}")  # str.isdigit() says yes, int() says no
    obstore.put(store._obs, "lease/" + "9" * 40 + ".json", b"{}")  # would make every later key 40 digits long
    with Lease(store, ttl=30) as lease:
        assert lease.gen == 1


# ---------------------------------------------------------------------------------------------
# image stores (decoded images): their own folders, settings and commit records are input


@pytest.fixture
def image_store(tmp_path):
    from PIL import Image

    from ptg.pipeline.storage import imagestore

    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    store = tmp_path / "images"
    imagestore.cache_images(paths, store)
    return store, paths


@pytest.mark.parametrize("entry", ["shards", "commits", "settings.json"])
def test_image_store_with_a_symlinked_folder_or_settings_is_refused(image_store, tmp_path, entry):
    import shutil

    from ptg.pipeline.storage import imagestore

    store, paths = image_store
    moved = tmp_path / "elsewhere" / entry
    moved.parent.mkdir()
    shutil.move(store / entry, moved)
    (store / entry).symlink_to(moved)  # the same bytes, one link away: still refused, nothing read there
    with opened_files() as seen:
        with pytest.raises(PtgError, match=f"{entry} .* is a symbolic link"):
            imagestore.ImageStore(store).image(imagestore.file_keys(paths)[0])
    assert not [p for p in seen if p.startswith(str(moved))]


@pytest.mark.parametrize("settings", ["[1, 2]", '"image-store"', "{" * 5000])
def test_image_store_settings_of_the_wrong_shape_are_a_named_error(image_store, settings):
    from ptg.pipeline.storage import imagestore

    store, _ = image_store
    (store / "settings.json").write_text(settings)
    with pytest.raises(PtgError, match="settings"):
        imagestore.ImageStore(store)


def test_image_store_record_claiming_a_huge_image_is_refused_before_mapping(image_store):
    import resource

    from ptg.pipeline.storage import imagestore
    from ptg.pipeline.storage.shardstore import commit_path

    store, paths = image_store
    rec_path = commit_path(store, 0)
    rec = json.loads(rec_path.read_text())
    rec["items"][0][1] = [60000, 60000, 3]  # 10.8 GB of uint8, 43 GB once as float32
    rec["bytes"] = 60000 * 60000 * 3 + (1 << 20)
    rec_path.write_text(json.dumps(rec))
    with open(imagestore.shard_path(store, 0), "r+b") as f:
        f.truncate(rec["bytes"])  # a sparse file of the declared size: no disk, but a huge map
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PtgError, match="60000x60000 image, over the pixel limit.*PTG_MAX_PIXELS"):
        imagestore.ImageStore(store).image(imagestore.file_keys(paths)[0])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB
