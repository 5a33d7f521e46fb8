"""The image store: exact pixels from memory maps, verified reads, repair, crash safety, and training
that gives the same bits from the store as from the files."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ptg.cli.app import app
from ptg.pipeline.storage import imagestore
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.imageio import read_image
from ptg.pipeline.storage.shardstore import COMMITS, DamagedShardWarning, read_commits

from .conftest import small_photo


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    """Real photos in the forms a store must keep exactly: 8-bit RGB, gray, 16-bit, and a duplicate."""
    d = tmp_path / "img"
    d.mkdir()
    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(small_photo(name, 96)).save(d / f"{name}.png")
        out.append(d / f"{name}.png")
    Image.fromarray(small_photo("astronaut", 80)[..., 0]).save(d / "gray.png")
    Image.fromarray((small_photo("coffee", 64)[..., 1].astype(np.uint16) * 257 + 3)).save(d / "deep.png")
    (d / "copy.png").write_bytes((d / "astronaut.png").read_bytes())
    return out + [d / "gray.png", d / "deep.png", d / "copy.png"]


def _all(store: Path, paths: list[Path]) -> list[bytes]:
    st = imagestore.ImageStore(store)
    return [st.image(k).tobytes() for k in imagestore.file_keys(paths)]


def test_the_store_serves_exactly_what_decoding_gives_and_crops_are_views(photos, tmp_path):
    res = imagestore.cache_images(photos, tmp_path / "st", shard_bytes=32 << 10)
    assert (res.written, res.reused) == (6, 1) and res.shards >= 2  # the copy shares its content's row
    st = imagestore.ImageStore(tmp_path / "st")
    for p, k in zip(photos, imagestore.file_keys(photos)):
        assert st.image(k).tobytes() == read_image(p).tobytes()  # same bits, whatever the dtype
    deep = st.array(imagestore.file_keys([photos[5]])[0])
    assert deep.dtype == np.uint16  # a 16-bit file keeps its 16 bits
    arr = st.array(imagestore.file_keys([photos[0]])[0])
    crop = arr[10:42, 5:37][:, ::-1]
    assert isinstance(arr.base, np.memmap) or isinstance(arr.base.base, np.memmap)
    assert np.shares_memory(crop, arr) and not crop.flags.writeable  # a view: nothing copied, nothing writable
    assert imagestore.cache_images(photos, tmp_path / "st").written == 0  # resumable: nothing decoded again


def test_a_corrupted_shard_is_a_named_error_then_repaired(photos, tmp_path):
    s = tmp_path / "st"
    imagestore.cache_images(photos, s, shard_bytes=32 << 10)
    ref = _all(s, photos)
    shard = imagestore.shard_path(s, 1)
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF  # one flipped byte, same size: only the digest sees it
    shard.write_bytes(bytes(data))
    with pytest.raises(PtgError, match=rf"the image store {s}: shard 1 holds image .* do not match .*ptg data cache"):
        _all(s, photos)
    assert imagestore.ImageStore(s).verify() == [1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = imagestore.cache_images(photos, s)
    assert any(issubclass(w.category, DamagedShardWarning) for w in caught) and again.written >= 1
    assert _all(s, photos) == ref and imagestore.store_info(s, verify=True)["problems"] == []
    assert len(list((s / COMMITS / "quarantine").iterdir())) == 1  # the bad record is kept for inspection


def test_a_truncated_or_missing_shard_is_a_named_error(photos, tmp_path):
    s = tmp_path / "st"
    imagestore.cache_images(photos, s, shard_bytes=32 << 10)
    path = imagestore.shard_path(s, 0)
    path.write_bytes(path.read_bytes()[:-4096])
    with pytest.raises(PtgError, match=r"shard 0 is \d+ bytes on disk, \d+ committed"):
        _all(s, photos)
    assert imagestore.store_info(s)["problems"]  # sizes alone tell, no pixel read
    path.unlink()
    with pytest.raises(PtgError, match="shard 0 is missing its file"):
        _all(s, photos)


@pytest.mark.parametrize("field,value", [(1, [1 << 30, 1 << 30, 3]), (0, 1 << 40), (2, "object"), (1, [96, 96, 3, 1])])
def test_a_commit_record_cannot_ask_for_an_absurd_mapping(photos, tmp_path, field, value):
    s = tmp_path / "st"
    imagestore.cache_images(photos[:1], s)
    rec_path = s / COMMITS / "shard-000000.json"
    rec = json.loads(rec_path.read_text())
    rec["items"][0][field] = value  # a huge image, a block past the file, a pickled dtype, a 4-D block
    rec_path.write_text(json.dumps(rec))
    with pytest.raises(PtgError, match="malformed commit record entry"):
        imagestore.ImageStore(s)


def test_sigkill_mid_build_then_rerun_equals_an_uninterrupted_build(photos, tmp_path):
    straight = tmp_path / "straight"
    imagestore.cache_images(photos, straight, shard_bytes=32 << 10)
    script = textwrap.dedent("""
        import os, signal, sys
        from pathlib import Path
        import ptg.pipeline.storage.shardstore as engine
        from ptg.pipeline.storage import imagestore
        orig = engine.write_file
        def write_file(path, write):  # killed halfway through shard 2's data
            if path.name == "shard-000002.bin":
                class Half:
                    def write(self, b):
                        os.kill(os.getpid(), signal.SIGKILL)
                return orig(path, lambda f: (f.write(b"x" * 5000), write(Half())))
            return orig(path, write)
        engine.write_file = write_file
        imagestore.cache_images([Path(p) for p in sys.argv[2:]], sys.argv[1], shard_bytes=32 << 10)
    """)
    s = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", script, str(s), *map(str, photos)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert set(read_commits(s)) == {0, 1} and list((s / imagestore.SHARDS).glob(".*.tmp-*"))  # a dead writer's leftover
    imagestore.cache_images(photos, s)
    assert read_commits(s) == read_commits(straight)
    for i in read_commits(s):
        assert imagestore.shard_path(s, i).read_bytes() == imagestore.shard_path(straight, i).read_bytes()
    assert not list((s / imagestore.SHARDS).glob(".*.tmp-*"))  # removed by the next writer


def test_image_loader_serves_stored_pixels_and_decodes_the_rest(photos, tmp_path):
    s = tmp_path / "st"
    imagestore.cache_images(photos[:2], s)
    load = imagestore.image_loader(s)
    for p in photos:
        assert load(p).tobytes() == read_image(p).tobytes()
    with pytest.raises(PtgError, match="not an image store"):
        imagestore.image_loader(tmp_path / "nowhere")


def test_cli_cache_writes_under_ptg_cache_and_info_reports_health(tmp_path, monkeypatch):
    from ptg.pipeline.datasets.samples import build_samples

    monkeypatch.setenv("PTG_CACHE", str(tmp_path / "cache"))
    m = build_samples(tmp_path / "ds", task="denoise", sigma=25.0, seed=0, max_side=64, use_opencv=False)
    r = CliRunner().invoke(app, ["data", "cache", "--manifest", str(m)])
    assert r.exit_code == 0, r.output
    words = " ".join(r.output.split())  # the console wraps at 80 columns, after a tmp path of any length
    n = int(words.split("wrote ")[1].split()[0])
    assert n > 0 and (tmp_path / "cache" / "images" / "settings.json").is_file()
    r = CliRunner().invoke(app, ["data", "cache", "--manifest", str(m)])
    assert r.exit_code == 0 and "wrote 0 image(s)" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["data", "info", "--verify"])
    assert r.exit_code == 0 and f"images  {n}" in r.output and "health  ok" in r.output, r.output
    imagestore.shard_path(tmp_path / "cache" / "images", 0).write_bytes(b"junk")
    r = CliRunner().invoke(app, ["data", "info"])
    assert r.exit_code == 1 and "PROBLEMS" in r.output and "ptg data cache" in str(r.exception)


def test_training_from_the_store_gives_the_same_digest_as_from_files(tmp_path):
    from ptg.ptgrm.train.config import resolve
    from ptg.ptgrm.train.trainer import train

    from .test_train import TINY
    from .test_train_units import make_samples, make_store

    m = make_samples(tmp_path / "samples")
    priors = make_store(tmp_path / "s.zarr", m, dim=16)
    store = tmp_path / "images"
    with pytest.raises(PtgError, match=r"is not an image store .*ptg data cache --manifest M"):
        train(_cfg(resolve, m, priors, tmp_path / "none", TINY + ["data.images=store", f"data.image_store={tmp_path / 'no'}"]))
    runs = {}
    for kind in ("files", "store"):
        sets = TINY + ["data.augment=flips", f"data.images={kind}", f"data.image_store={store}"]
        if kind == "store":
            from ptg.pipeline.datasets.manifest import load_manifest

            imagestore.cache_images(imagestore.manifest_paths(load_manifest(m).samples), store)
        final = train(_cfg(resolve, m, priors, tmp_path / kind, sets))
        runs[kind] = json.loads((tmp_path / kind / "final.json").read_text())
        assert final["digest"] == runs[kind]["digest"]
    assert runs["store"]["digest"] == runs["files"]["digest"]
    assert runs["store"]["val"] == runs["files"]["val"]


def _cfg(resolve, manifest, priors, out, sets):
    overrides = {"out": str(out), "mode": "joint", "steps": 3,
                 "data": {"manifest": str(manifest), "priors": [str(priors)]}}
    return resolve(overrides=overrides, sets=list(sets))


def test_views_turned_on_the_device_equal_the_numpy_views():
    """A raw batch's crops are turned by `to_float` after the copy; each view equals the one
    `ptg.pipeline.datasets.views` makes of the H×W×C array (non-square too), bit for bit."""
    import torch

    from ptg.pipeline.datasets.views import _DIHEDRAL, apply_view
    from ptg.ptgrm.train.pixels import VIEW_CODES, to_float, to_tensor

    assert set(VIEW_CODES) == set(_DIHEDRAL)
    rng = np.random.default_rng(0)
    for h, w in ((6, 6), (5, 7)):
        crop = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for code, view in enumerate(VIEW_CODES):
            got = to_float(torch.from_numpy(crop)[None], torch.tensor([code]))[0]
            assert torch.equal(got, to_tensor(apply_view(crop, view))), view  # the files path's float CHW of the view
