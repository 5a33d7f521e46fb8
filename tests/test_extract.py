"""The extraction engine and CLI: dedupe, views, bad input, CLI (resume: test_extract_resume.py, dask: test_extract_dask.py).

Images are real photos from scikit-image, downscaled and cropped into small PNGs in tmp dirs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ptg.pipeline.encoders import EncoderSpec, apply_preprocess, build_encoder
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.priors.extract import extract_priors
from ptg.pipeline.core.imageio import file_sha256, read_image, write_image
from ptg.pipeline.datasets.manifest import write_manifest
from ptg.pipeline.storage.store import COMMITS, open_priors
from ptg.pipeline.datasets.views import apply_view

torch.set_num_threads(1)
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def _images(folder: Path, n: int, side: int = 48) -> list[Path]:
    """n distinct small crops of real photos."""
    from skimage import data, transform

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    bases = [transform.resize(getattr(data, p)(), (128, 128), anti_aliasing=True) for p in PHOTOS]
    paths = []
    for i in range(n):
        img = bases[i % len(bases)]
        t, l = rng.integers(0, 128 - side, size=2)
        paths.append(write_image(folder / f"img{i:03d}.png", img[t : t + side, l : l + side]))
    return paths


def _manifest(path: Path, images: list[Path], prefix: str = "s") -> Path:
    return write_manifest(path, [{"id": f"{prefix}{i}", "input": str(p), "target": None, "split": "train"}
                                 for i, p in enumerate(images)])


def _tiny_clip_spec(tmp_path: Path) -> EncoderSpec:
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1}}
    cfg_path = tmp_path / "tiny-clip-extract.json"
    cfg_path.write_text(json.dumps(cfg))
    return EncoderSpec("clip", arch=str(cfg_path), random_init=True, seed=0)


def _all(store: Path) -> tuple[list[str], np.ndarray]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = open_priors(store)
    keys = sorted(r.keys())
    return keys, r.get_all_views(keys)


def test_clip_store_equals_encode_image_at_float16(tmp_path):
    import open_clip
    import torch.nn.functional as F

    imgs = _images(tmp_path / "img", 4)
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1}}
    (tmp_path / "tiny-clip-f16.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "tiny-clip-f16.json")
    torch.manual_seed(1)
    ref = open_clip.create_model("tiny-clip-f16", pretrained=None).eval()
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    spec = EncoderSpec("clip", arch=str(tmp_path / "tiny-clip-f16.json"), pretrained=str(tmp_path / "w.pt"))
    s = extract_priors(_manifest(tmp_path / "m.jsonl", imgs), spec, out=tmp_path / "s.zarr", loader_workers=0)
    enc = build_encoder(spec)
    x = torch.stack([apply_preprocess(read_image(p), enc.preprocess) for p in imgs])
    with torch.inference_mode():
        want = F.normalize(ref.encode_image(x), dim=-1).numpy()
    got = open_priors(s.store, expect_fingerprint=enc.fingerprint).get([file_sha256(p) for p in imgs])
    cos = (got * want).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cos.min() > 0.999 and not s.random_init


def test_dedupe_across_manifests_and_changed_images(tmp_path):
    imgs = _images(tmp_path / "img", 5)
    spec = EncoderSpec("imagenet", size=64)
    out = tmp_path / "s.zarr"
    a = extract_priors(_manifest(tmp_path / "a.jsonl", imgs[:3] + [imgs[0]], "a"), spec, out=out, loader_workers=0)
    assert (a.samples, a.unique, a.computed, a.reused) == (4, 3, 3, 0)  # a duplicate image is computed once
    b = extract_priors(_manifest(tmp_path / "b.jsonl", imgs[1:5], "b"), spec, out=out, loader_workers=0)
    assert (b.computed, b.reused) == (2, 2)
    old_key = file_sha256(imgs[1])
    write_image(imgs[1], np.zeros((48, 48, 3), np.float32))  # the image changes: a new key, never the stale row
    c = extract_priors(_manifest(tmp_path / "b.jsonl", imgs[1:5], "b"), spec, out=out, loader_workers=0)
    assert (c.computed, c.reused) == (1, 3)
    r = open_priors(out)
    assert len(r) == 6 and old_key in r.keys() and file_sha256(imgs[1]) in r.keys()
    assert len(r.metadata["runs"]) == 3


def test_views_store_the_prior_of_each_transformed_image(tmp_path):
    imgs = _images(tmp_path / "img", 2, side=40)
    spec = EncoderSpec("imagenet", size=64)
    enc = build_encoder(spec)
    for views, names in (("d4", ("rot90", "antitranspose")), ("tiles:2", ("identity", "tile2_r1c0"))):
        s = extract_priors(_manifest(tmp_path / "m.jsonl", imgs), spec, out=tmp_path / f"{views[:2]}.zarr",
                           views=views, dtype="float32", loader_workers=0)
        r = open_priors(s.store)
        assert r.views == s.views and r.metadata["views_spec"] == views
        for name in names:
            x = torch.stack([apply_preprocess(apply_view(read_image(p), name), enc.preprocess) for p in imgs])
            with torch.inference_mode():
                want = enc.forward(x).numpy()
            np.testing.assert_allclose(r.get([file_sha256(p) for p in imgs], view=name), want, atol=1e-5)
        assert not np.allclose(r.get([s_ for s_ in r.keys()], names[0]), r.get(list(r.keys()), names[1]))


def test_corrupt_image_stops_before_writing_or_is_skipped_and_recorded(tmp_path):
    imgs = _images(tmp_path / "img", 3)
    bad = tmp_path / "img" / "broken.png"
    bad.write_bytes(imgs[0].read_bytes()[:60])  # a truncated PNG
    m = _manifest(tmp_path / "m.jsonl", imgs[:2] + [bad] + imgs[2:])
    spec = EncoderSpec("imagenet", size=64)
    out = tmp_path / "s.zarr"
    with pytest.raises(PtgError, match=r"(?s)manifest line 3 \(id 's2'\).*broken.png.*--skip-bad"):
        extract_priors(m, spec, out=out, loader_workers=0)
    assert list((out / COMMITS).iterdir()) == []  # its shard (the only one) was not written
    s = extract_priors(m, spec, out=out, loader_workers=1, skip_bad=True)
    assert (s.computed, len(s.skipped)) == (3, 1) and s.skipped[0].id == "s2" and s.skipped[0].line == 3
    r = open_priors(out)
    assert file_sha256(bad) not in r.keys() and len(r) == 3  # never stored as zeros
    assert [d["id"] for d in r.metadata["skipped"]] == ["s2"]


class _CountingLoader:
    """The default decoder, counting how often each file is decoded."""

    def __init__(self):
        self.calls: dict[str, int] = {}

    def __call__(self, path):
        self.calls[str(path)] = self.calls.get(str(path), 0) + 1
        return read_image(path, channels=3)


def test_each_image_decoded_once_and_bad_shard_alone_withheld(tmp_path):
    imgs = _images(tmp_path / "img", 19, side=40)
    bad = tmp_path / "img" / "broken.png"
    bad.write_bytes(imgs[0].read_bytes()[:60])
    m = _manifest(tmp_path / "m.jsonl", imgs[:10] + [bad] + imgs[10:])  # line 11: in the second of 3 shards
    spec = _tiny_clip_spec(tmp_path)
    kw = dict(rows_per_shard=8, batch_size=3, dtype="float32")
    count = _CountingLoader()
    with pytest.raises(PtgError, match=r"(?s)1 input image.*2 other shard\(s\) were committed.*manifest line 11 \(id 's10'\)"):
        extract_priors(m, spec, out=tmp_path / "s.zarr", loader_workers=0, image_loader=count, **kw)
    assert sorted(count.calls.values()) == [1] * 20  # one decode per image: no separate pre-check pass
    assert len(list((tmp_path / "s.zarr" / COMMITS).iterdir())) == 2
    # resumed with --skip-bad: the two good shards are reused, the middle one is committed without the bad row
    s = extract_priors(m, spec, out=tmp_path / "s.zarr", loader_workers=0, skip_bad=True, **kw)
    assert (s.reused, s.computed, [x.line for x in s.skipped]) == (12, 7, [11])
    clean = extract_priors(_manifest(tmp_path / "ok.jsonl", imgs), spec, out=tmp_path / "ok.zarr", loader_workers=0, **kw)
    k1, v1 = _all(tmp_path / "s.zarr")
    k2, v2 = _all(clean.store)
    assert k1 == k2 and len(k1) == 19
    np.testing.assert_allclose(v1, v2, rtol=0, atol=1e-6)  # one batch lost a member: the same values up to rounding


def test_cli_extract_info_export(tmp_path, capsys, monkeypatch):
    from ptg.cli.app import main

    imgs = _images(tmp_path / "img", 3)
    m = _manifest(tmp_path / "m.jsonl", imgs)
    store, h5 = tmp_path / "s.zarr", tmp_path / "s.h5"
    assert main(["extract-priors", "--model", "imagenet", "--manifest", str(m), "--out", str(store)]) == 0
    out = capsys.readouterr().out
    assert "3 computed, 0 reused, 0 skipped" in out
    assert main(["priors", "info", str(store), "--verify"]) == 0
    info = capsys.readouterr().out
    from ptg.pipeline.encoders.imagenet import packaged_weights
    from ptg.pipeline.encoders.registry import sha256_file

    assert sha256_file(packaged_weights()) in info and "efficientnet-lite0-57934424.pth" in info and "verified" in info
    assert main(["priors", "export", str(store), "--format", "h5", "--out", str(h5)]) == 0
    k1, v1 = _all(store)
    k2, v2 = _all(h5)
    assert k1 == k2 and np.array_equal(v1, v2)
    # without --out the store lands in the per-user cache, keyed by the weights fingerprint
    monkeypatch.setenv("PTG_CACHE", str(tmp_path / "cache"))
    assert main(["extract-priors", "--manifest", str(m), "--random-init", "--size", "32"]) == 0
    cached = list((tmp_path / "cache" / "priors").glob("imagenet-*random-init-0*.zarr"))
    assert len(cached) == 1
    assert main(["priors", "info", str(cached[0])]) == 0
    assert "RANDOMLY INITIALISED" in capsys.readouterr().err
    assert main(["extract-priors", "--manifest", str(m), "--views", "spin"]) == 1
    assert "unknown --views 'spin'" in capsys.readouterr().err
