"""Security round 2 on stores (issue 34): an image store cannot serve other pixels than its files',
an F-output store cannot be scored or trained on with wrong dtypes or non-finite values, every
hostile field of a record or settings file is a named error, and a bucket's lease cannot lock a
team out. Each case ends in a `PtgError` (or exit code 1 with one line), never a traceback, and
never in a run that exits 0 on wrong pixels or outputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ptg.cli.app import main
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.imageio import read_image
from ptg.pipeline.storage import imagestore
from ptg.pipeline.storage.shardstore import commit_path

from .conftest import small_photo


def _photos(folder: Path, n: int = 3, size: int = 48) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket")[:n]:
        Image.fromarray(small_photo(name, size)).save(folder / f"{name}.png")
        out.append(folder / f"{name}.png")
    return out


def _teammate(monkeypatch, tmp_path: Path, name: str = "teammate") -> None:
    """From here on this process is someone else: its own $PTG_CACHE (verification ledger) is empty."""
    monkeypatch.setenv("PTG_CACHE", str(tmp_path / f"cache-{name}"))


def _edit_record(store: Path, shard: int, edit) -> None:
    p = commit_path(store, shard)
    rec = json.loads(p.read_text())
    edit(rec)
    p.write_text(json.dumps(rec))


def _swap_keys(store: Path) -> None:
    """The attack: shard 0's keys swapped, items (offsets, digests) unchanged. Every digest still
    matches its bytes and the shard's hash is untouched, so the store is self-consistent."""
    def swap(rec):
        rec["keys"][0], rec["keys"][1] = rec["keys"][1], rec["keys"][0]
    _edit_record(store, 0, swap)


@pytest.fixture
def shared(tmp_path, monkeypatch):
    """A store a teammate built of three 48x48 photos (all one size: the header cannot tell them apart)."""
    paths = _photos(tmp_path / "img")
    _teammate(monkeypatch, tmp_path, "author")
    imagestore.cache_images(paths, tmp_path / "images")
    _teammate(monkeypatch, tmp_path, "reader")
    return tmp_path / "images", paths, imagestore.file_keys(paths)


# ---------------------------------------------------------------------------------------------
# image stores: records tied to their files


def test_own_store_is_known_true_and_costs_no_decoding(tmp_path, monkeypatch):
    paths = _photos(tmp_path / "img")
    imagestore.cache_images(paths, tmp_path / "images")
    st = imagestore.ImageStore(tmp_path / "images")
    assert st.vouch(paths, imagestore.file_keys(paths)) == 0


def test_teammates_store_is_decoded_once_then_remembered(shared, monkeypatch):
    store, paths, keys = shared
    from ptg.pipeline.core import imageio

    calls = []
    real = imageio.read_image
    monkeypatch.setattr(imageio, "read_image", lambda p, *a, **k: calls.append(p) or real(p, *a, **k))
    assert imagestore.ImageStore(store).vouch(paths, keys) == 3 and len(calls) == 3  # first use: each once (threads)
    calls.clear()
    st = imagestore.ImageStore(store)  # second use (a new process would see the same ledger on disk)
    assert st.vouch(paths, keys) == 0 and calls == []
    assert all(st.image(k).tobytes() == real(p).tobytes() for p, k in zip(paths, keys))


def test_swapped_pixels_in_a_teammates_store_are_refused_before_training(shared):
    store, paths, keys = shared
    _swap_keys(store)
    st = imagestore.ImageStore(store)
    assert st.image(keys[0]).shape == (48, 48, 3)  # the low-level read is self-consistent: digests match
    with pytest.raises(PtgError, match=r"astronaut.png holds other pixels than the file decodes to.*data.images=files"):
        st.vouch(paths, keys, workers=1)
    with pytest.raises(PtgError, match="other pixels"):  # and nothing was remembered as true
        imagestore.ImageStore(store).vouch(paths, keys, workers=1)


def test_swapped_pixels_refused_by_ptg_train_with_exit_1(tmp_path, monkeypatch, capsys):
    from ptg.pipeline.datasets.manifest import load_manifest

    from .test_train import TINY
    from .test_train_units import make_samples, make_store

    m = make_samples(tmp_path / "samples")
    priors = make_store(tmp_path / "s.zarr", m, dim=8)
    paths = imagestore.manifest_paths(load_manifest(m).samples)
    _teammate(monkeypatch, tmp_path, "author")
    imagestore.cache_images(paths, tmp_path / "images")
    _teammate(monkeypatch, tmp_path, "reader")
    st = imagestore.ImageStore(tmp_path / "images")
    shard, rec = next(iter(st.commits.items()))
    same = [i for i, it in enumerate(rec["items"]) if it[1] == rec["items"][0][1]]  # two blocks of one shape
    assert len(same) >= 2

    def swap(r):
        r["keys"][same[0]], r["keys"][same[1]] = r["keys"][same[1]], r["keys"][same[0]]
    _edit_record(tmp_path / "images", shard, swap)
    args = ["train", "--manifest", str(m), "--priors", str(priors), "--out", str(tmp_path / "run"), "--steps", "2",
            "--set", "data.images=store", "--set", f"data.image_store={tmp_path / 'images'}"]
    for s in TINY:
        args += ["--set", s]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "other pixels than the file decodes to" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "final.json").exists()


def test_record_of_another_size_is_refused_by_the_header_even_in_your_own_store(tmp_path):
    paths = _photos(tmp_path / "img", 2)
    Image.fromarray(small_photo("rocket", 64)).save(paths[1])  # 64x64 now
    imagestore.cache_images(paths, tmp_path / "images")
    _swap_keys(tmp_path / "images")
    keys = imagestore.file_keys(paths)
    st = imagestore.ImageStore(tmp_path / "images")
    with pytest.raises(PtgError, match=r"records a 64x64x3 image, the file's header says 48x48x3"):
        st.check_header(paths[0], keys[0])
    with pytest.raises(PtgError, match="header says"):
        imagestore.image_loader(tmp_path / "images")(paths[0])


def test_gray_record_for_a_colour_file_is_refused_by_the_header(tmp_path):
    paths = _photos(tmp_path / "img", 1)
    imagestore.cache_images(paths, tmp_path / "images")
    _edit_record(tmp_path / "images", 0, lambda r: r["items"][0][1].__setitem__(2, 1))
    with pytest.raises(PtgError, match=r"48x48x1 image, the file's header says 48x48x3"):
        imagestore.ImageStore(tmp_path / "images").check_header(paths[0], imagestore.file_keys(paths)[0])


def test_eval_loader_refuses_swapped_pixels_and_serves_true_ones(shared, monkeypatch):
    store, paths, keys = shared
    load = imagestore.image_loader(store)
    assert load(paths[0]).tobytes() == read_image(paths[0]).tobytes()  # first use: decoded, compared, served
    from ptg.pipeline.core import imageio

    monkeypatch.setattr(imageio, "read_image", lambda *a, **k: pytest.fail("decoded on the second use"))
    assert imagestore.image_loader(store)(paths[0]).shape == (48, 48, 3)
    monkeypatch.undo()
    _teammate(monkeypatch, store.parent, "third")
    _swap_keys(store)
    with pytest.raises(PtgError, match="other pixels"):
        imagestore.image_loader(store)(paths[1])


def test_an_edited_record_is_verified_again(tmp_path):
    """The ledger is keyed by the record's digest: a record edited after it was verified proves nothing."""
    paths = _photos(tmp_path / "img")
    imagestore.cache_images(paths, tmp_path / "images")  # written here: known true
    _swap_keys(tmp_path / "images")  # a teammate with write access edits it afterwards
    with pytest.raises(PtgError, match="other pixels"):
        imagestore.ImageStore(tmp_path / "images").vouch(paths, imagestore.file_keys(paths), workers=1)


def test_ledger_entries_of_another_user_are_ignored(shared, monkeypatch):
    from ptg.pipeline.core import fsio
    from ptg.pipeline.storage import provenance

    store, paths, keys = shared
    st = imagestore.ImageStore(store)
    provenance.remember("image-store", st.digests[0], keys)  # as if planted in a shared $PTG_CACHE
    monkeypatch.setattr(fsio.os, "geteuid", lambda: 4242)
    assert not imagestore.ImageStore(store).vouched(keys[0])


def test_duplicate_key_across_shards_is_refused_by_readers_and_verify(tmp_path, capsys):
    paths = _photos(tmp_path / "img", 2)
    imagestore.cache_images(paths, tmp_path / "images", shard_bytes=1)  # one image per shard
    keys = imagestore.file_keys(paths)
    _edit_record(tmp_path / "images", 1, lambda r: r["keys"].__setitem__(0, keys[0]))  # shard 1 claims image 0 too
    with pytest.raises(PtgError, match=r"committed in shard 0 and again in shard 1.*neither is served"):
        imagestore.ImageStore(tmp_path / "images")
    assert main(["data", "info", str(tmp_path / "images"), "--verify"]) == 1
    assert "again in shard 1" in capsys.readouterr().err


def test_verify_rehashes_every_image_not_only_the_shard(tmp_path, capsys):
    paths = _photos(tmp_path / "img", 2)
    imagestore.cache_images(paths, tmp_path / "images")
    _edit_record(tmp_path / "images", 0, lambda r: r["items"][1].__setitem__(3, "0" * 64))  # the shard hash still matches
    assert main(["data", "info", str(tmp_path / "images"), "--verify"]) == 1
    out = capsys.readouterr()
    assert "do not match its recorded digest" in " ".join(out.out.split()) and "Traceback" not in out.err


def test_bucket_store_is_verified_on_another_machine_and_swaps_refused(tmp_path, s3, monkeypatch):
    from ptg.pipeline.storage.remote import RemoteStore

    paths = _photos(tmp_path / "img")
    keys = imagestore.file_keys(paths)
    url = s3.url("images")
    imagestore.cache_images(paths, url)  # this machine wrote it: its records are known true
    assert imagestore.ImageStore(url).vouch(paths, keys) == 0
    _teammate(monkeypatch, tmp_path, "other-machine")
    assert imagestore.ImageStore(url).vouch(paths, keys, workers=1) == 3  # no ledger there: decoded once
    assert imagestore.ImageStore(url).vouch(paths, keys) == 0
    remote = RemoteStore(url)
    rec = json.loads(remote.get("commits/shard-000000.json"))
    rec["keys"][0], rec["keys"][1] = rec["keys"][1], rec["keys"][0]
    remote.put("commits/shard-000000.json", json.dumps(rec).encode())
    with pytest.raises(PtgError, match="other pixels"):
        imagestore.ImageStore(url).vouch(paths, keys, workers=1)


def test_legacy_gray_block_of_one_channel_is_still_verified(tmp_path, monkeypatch):
    p = tmp_path / "gray.png"
    Image.fromarray(small_photo("astronaut", 40)[..., 0]).save(p)
    key = imagestore.file_keys([p])[0]
    block = imagestore.encode(read_image(p, channels=None))  # H×W×1, as older stores kept gray files
    imagestore.store_arrays([key], lambda k: block, tmp_path / "images")
    st = imagestore.ImageStore(tmp_path / "images")
    assert st.entry(key).shape == (40, 40, 1)
    assert st.vouch([p], [key]) == 1 and st.image(key).tobytes() == read_image(p).tobytes()


# ---------------------------------------------------------------------------------------------
# hostile fields of records and settings: named errors


@pytest.fixture
def one_store(tmp_path):
    paths = _photos(tmp_path / "img", 2)
    imagestore.cache_images(paths, tmp_path / "images")
    return tmp_path / "images", paths


@pytest.mark.parametrize("edit,said", [
    (lambda r: r["items"][0].__setitem__(1, [1e400, 48, 3]), "malformed commit record entry"),  # OverflowError in int()
    (lambda r: r["items"][0].__setitem__(1, [48.5, 48, 3]), "malformed commit record entry"),
    (lambda r: r["items"][0].__setitem__(0, 1e400), "malformed commit record entry"),
    (lambda r: r["items"][0].__setitem__(0, True), "malformed commit record entry"),
    (lambda r: r["items"][0].__setitem__(3, ["x"]), "malformed commit record entry"),
    (lambda r: r["items"].__setitem__(0, {"a": 1}), "malformed commit record entry"),
    (lambda r: r["keys"].__setitem__(0, ["a", "list"]), "malformed commit record key"),  # unhashable
    (lambda r: r["keys"].__setitem__(0, 7), "malformed commit record key"),
    (lambda r: r["keys"].__setitem__(0, "k" * 100_000), "malformed commit record key"),
    (lambda r: r.__setitem__("bytes", 1e400), "malformed commit record"),
    (lambda r: r.__setitem__("bytes", "4096"), "malformed commit record"),
    (lambda r: r.__setitem__("sha256", {"a": 1}), "malformed commit record"),
    (lambda r: r.__setitem__("keys", "abc"), "keys and items must be lists"),
])
def test_hostile_commit_record_fields_are_named_errors(one_store, edit, said):
    store, paths = one_store
    p = commit_path(store, 0)
    rec = json.loads(p.read_text())
    edit(rec)
    p.write_text(json.dumps(rec).replace("Infinity", "1e400"))
    with pytest.raises(PtgError, match=said):
        imagestore.ImageStore(store).image(imagestore.file_keys(paths)[0])


@pytest.mark.parametrize("field,value,said", [
    ("shard_bytes", '"abc"', "shard_bytes is 'abc'"), ("shard_bytes", "1e400", "shard_bytes is 'inf'"),
    ("shard_bytes", "-1", "shard_bytes is '-1'"), ("shard_bytes", "[1]", "shard_bytes"),
    ("schema_version", "1e400", "not an image store of schema"), ("kind", "[1, 2]", "not an image store of schema"),
])
def test_hostile_settings_are_named_errors_for_readers_and_writers(one_store, field, value, said):
    store, paths = one_store
    text = (store / "settings.json").read_text()
    settings = json.loads(text)
    settings[field] = "@@"
    (store / "settings.json").write_text(json.dumps(settings).replace('"@@"', value))
    with pytest.raises(PtgError, match=said):
        imagestore.ImageStore(store)
    with pytest.raises(PtgError, match=said):
        imagestore.cache_images(paths, store)


def test_hostile_settings_through_the_cli_are_one_line_exit_1(one_store, capsys):
    store, _ = one_store
    settings = json.loads((store / "settings.json").read_text())
    (store / "settings.json").write_text(json.dumps(settings).replace(str(settings["shard_bytes"]), "1e400"))
    assert main(["data", "info", str(store)]) == 1
    err = capsys.readouterr().err
    assert "shard_bytes" in err and "Traceback" not in err


@pytest.mark.parametrize("field,value", [("n", 1e400), ("keys", [["a"], ["b"]]), ("shard", 1e400)])
def test_hostile_priors_store_record_fields_are_named_errors(tmp_path, field, value):
    from ptg.pipeline.storage.store import COMMITS, open_priors

    from .test_store import _store

    path, keys, _ = _store(tmp_path, 40)
    p = path / COMMITS / "shard-000001.json"
    rec = json.loads(p.read_text())
    rec[field] = value
    p.write_text(json.dumps(rec).replace("Infinity", "1e400"))
    with pytest.raises(PtgError):
        open_priors(path).get_all_views(keys)


# ---------------------------------------------------------------------------------------------
# F-output stores


def _samples(tmp_path: Path, n: int = 2):
    from ptg.pipeline.datasets.manifest import Sample

    paths = _photos(tmp_path / "in", n)
    return [Sample(id=p.stem, input=p, target=p, split="test", line=i + 1) for i, p in enumerate(paths)]


def _outputs_store(tmp_path: Path, samples, block, dtype: str = "float16", views=("identity",)) -> Path:
    """An outputs store whose settings say `dtype` and whose records hold ``block(sample)``."""
    from ptg.ptgrm.f_outputs import SETTINGS_KEY, output_key

    fp = "ab" * 32
    keys = imagestore.file_keys([s.input for s in samples])
    jobs = {output_key(k, fp, v): s for s, k in zip(samples, keys) for v in views}
    meta = {"f": "toy", "fingerprint": fp, "dtype": dtype, "views": list(views), "record": {}}
    out = tmp_path / "outs"
    imagestore.store_arrays(list(jobs), lambda key: block(jobs[key]), out, settings={SETTINGS_KEY: meta})
    return out


def test_outputs_whose_dtype_is_not_the_settings_dtype_are_refused(tmp_path):
    from ptg.ptgrm.f_outputs import open_cached_outputs

    samples = _samples(tmp_path)
    out = _outputs_store(tmp_path, samples, lambda s: (read_image(s.input) * 255).round().astype(np.uint8))
    with pytest.raises(PtgError, match=r"dtype or size differs from settings.json.*uint8 48x48x3, expected float16"):
        open_cached_outputs(out, samples)


def test_outputs_of_another_size_or_channels_are_refused(tmp_path):
    from ptg.ptgrm.f_outputs import open_cached_outputs

    samples = _samples(tmp_path)
    out = _outputs_store(tmp_path, samples, lambda s: read_image(s.input)[..., :1].astype(np.float16))
    with pytest.raises(PtgError, match=r"float16 48x48x1, expected float16 48x48x3"):
        open_cached_outputs(out, samples)


def test_non_finite_outputs_are_refused_by_name_in_train_and_eval(tmp_path):
    from ptg.ptgrm.evaluate import _with_outputs
    from ptg.ptgrm.f_outputs import open_cached_outputs

    samples = _samples(tmp_path)

    def block(s):
        out = read_image(s.input).astype(np.float16)
        if s.id == "chelsea":
            out[5, 5, 1] = np.nan
        return out
    outs = open_cached_outputs(_outputs_store(tmp_path, samples, block), samples)
    assert outs.array(samples[0]).dtype == np.float32
    with pytest.raises(PtgError, match=r"manifest id 'chelsea' \(view identity\) holds 1 non-finite value"):
        outs.array(samples[1], "identity", box=(0, 0, 16))  # the trainer's crop path: the whole output is checked once
    with pytest.raises(PtgError, match="'chelsea'.*non-finite"):
        _with_outputs(read_image, samples, outs)(samples[1].input)  # the evaluator's path


def test_one_conversion_for_training_crops_and_evaluation(tmp_path):
    from ptg.ptgrm.evaluate import _with_outputs
    from ptg.ptgrm.f_outputs import open_cached_outputs

    samples = _samples(tmp_path)
    outs = open_cached_outputs(_outputs_store(tmp_path, samples, lambda s: read_image(s.input).astype(np.float16)), samples)
    whole = _with_outputs(read_image, samples, outs)(samples[0].input)[..., 3:]
    crop = outs.array(samples[0], "identity", box=(4, 7, 16))
    assert whole.dtype == crop.dtype == np.float32
    np.testing.assert_array_equal(crop, whole[4:20, 7:23])
    np.testing.assert_allclose(whole, read_image(samples[0].input), atol=1e-3)  # values in [0, 1]: never 255x


@pytest.mark.parametrize("meta,said", [
    ([1, 2], r"f_outputs is '\[1, 2\]', not an object"),
    ({"f": "toy", "fingerprint": "x", "dtype": "float16", "views": ["identity"]}, "f_outputs.fingerprint"),
    ({"f": "toy", "fingerprint": "ab" * 32, "dtype": "uint8", "views": ["identity"]}, "f_outputs.dtype"),
    ({"f": "toy", "fingerprint": "ab" * 32, "dtype": "float16", "views": "identity"}, "f_outputs.views"),
    ({"f": ["toy"], "fingerprint": "ab" * 32, "dtype": "float16", "views": ["identity"]}, "f_outputs.f "),
])
def test_hostile_outputs_settings_are_named_errors(tmp_path, meta, said):
    from ptg.ptgrm.f_outputs import open_cached_outputs

    samples = _samples(tmp_path, 1)
    out = _outputs_store(tmp_path, samples, lambda s: read_image(s.input).astype(np.float16))
    settings = json.loads((out / "settings.json").read_text())
    settings["f_outputs"] = meta
    (out / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(PtgError, match=said):
        open_cached_outputs(out, samples)


# ---------------------------------------------------------------------------------------------
# bucket leases and keys


def test_a_lease_generation_outside_the_parser_does_not_lock_writers_out(s3):
    from ptg.pipeline.storage.lease import ForeignLeaseWarning, Lease
    from ptg.pipeline.storage.remote import RemoteStore

    store = RemoteStore(s3.url("p"))
    store.put("lease/999999999999.json", json.dumps({"gen": 999999999999, "expires": 0, "released": True}).encode())
    for expected in (1, 2):  # before the fix: generation 10^12 (13 digits) was created once, then never read back
        with pytest.warns(ForeignLeaseWarning, match=r"lease/999999999999.json is not a lease ptg wrote.*aws s3 rm"):
            with Lease(store, ttl=30) as lease:
                assert lease.gen == expected
                lease.check()


def test_an_oversized_lease_object_counts_as_expired(s3):
    from ptg.pipeline.storage.lease import MAX_LEASE_BYTES, Lease
    from ptg.pipeline.storage.remote import RemoteStore

    store = RemoteStore(s3.url("p"))
    store.put("lease/00000003.json", b" " * (2 << 20))  # 2 MiB (the red team's 100 MB takes the same path)
    assert 2 << 20 > MAX_LEASE_BYTES
    with Lease(store, ttl=30) as lease:  # not read, not a lock: the next writer goes on
        assert lease.gen == 4
        lease.check()


def test_a_dotdot_key_in_the_bucket_is_named_not_blamed_on_credentials(tmp_path, s3, capsys):
    import boto3

    paths = _photos(tmp_path / "img", 1)
    url = s3.url("images")
    imagestore.cache_images(paths, url)
    boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1").put_object(
        Bucket=s3.bucket, Key="images/shards/../evil.bin", Body=b"x")
    with pytest.raises(PtgError) as err:
        imagestore.cache_images(paths, url)
    msg = str(err.value)
    assert "'images/shards/../evil.bin'" in msg and "aws s3 rm" in msg
    assert "credentials" not in msg and "connection" not in msg
    assert main(["data", "info", url]) == 1
    out = capsys.readouterr().err
    assert "evil.bin" in out and "credentials" not in out and "Traceback" not in out


def test_priors_store_key_committed_twice_is_refused(tmp_path):
    from ptg.pipeline.storage.store import COMMITS, open_priors

    from .test_store import _store

    path, keys, _ = _store(tmp_path, 40)
    p = path / COMMITS / "shard-000001.json"
    rec = json.loads(p.read_text())
    rec["keys"][3] = keys[0]  # shard 1 also claims shard 0's first key, with its own row
    p.write_text(json.dumps(rec))
    with pytest.raises(PtgError, match=r"committed in shard 0 and again in shard 1.*neither row is served"):
        open_priors(path)


def test_training_crops_of_cached_outputs_are_the_crops_of_their_input(tmp_path):
    """The trainer's path end to end (`TrainDataset.fill`): an identity F's float16 outputs give
    back each crop of Id in its drawn view, in [0, 1] (not 255x or 1/255x)."""
    from ptg.ptgrm.f_outputs import open_cached_outputs
    from ptg.ptgrm.train.config import DataConfig, PriorConfig
    from ptg.ptgrm.train.data import TrainDataset

    samples = _samples(tmp_path)
    views = ("identity", "hflip", "rot90")
    out = _outputs_store(tmp_path, samples, lambda s: read_image(s.input).astype(np.float16), views=("identity",))
    outs = open_cached_outputs(out, samples)
    ds = TrainDataset(samples, [], DataConfig(crop=16), PriorConfig(), views, seed=0, f_outputs=outs)
    for i in range(len(samples)):
        item = ds[(0, i)]
        assert item["ihat"].dtype == item["x"].dtype and item["ihat"].shape == item["x"].shape == (3, 16, 16)
        np.testing.assert_allclose(item["ihat"].numpy(), item["x"].numpy(), atol=2e-3)


def test_data_info_with_a_manifest_checks_records_against_their_files(shared, capsys):
    store, paths, keys = shared
    m = store.parent / "m.jsonl"
    m.write_text("".join(json.dumps({"id": p.stem, "input": str(p), "split": "train"}) + "\n" for p in paths))
    assert main(["data", "info", str(store), "--manifest", str(m)]) == 0
    assert "3 of 3 manifest image(s) held, each matching its file (3 decoded" in " ".join(capsys.readouterr().out.split())
    _swap_keys(store)
    assert main(["data", "info", str(store), "--manifest", str(m)]) == 1
    err = capsys.readouterr().err
    assert "other pixels" in err and "Traceback" not in err
