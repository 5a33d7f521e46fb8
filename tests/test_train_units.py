"""Units of `ptg train`: config (YAML, presets, --set), losses, the dataset's crops/views/priors.

Also holds the helpers the other train test files import: `make_samples` (real photos, tiny) and
`make_store` (a real priors store written with the store's own writer functions; its vectors are
a deterministic function of each view's pixels, so a test can tell which view a prior belongs to).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.imageio import file_sha256, read_image
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.pipeline.datasets.views import apply_view, parse_views, tile_view_for
from ptg.ptgrm.train import config as C
from ptg.ptgrm.train import losses as L
from ptg.ptgrm.train.data import TrainDataset, ValDataset, augment_views, check_missing, derangement, load_tables


# ---------------------------------------------------------------------------------------------
# helpers shared with test_train.py / test_train_dist.py


def make_samples(out: Path) -> Path:
    """9 real photo pairs at 128 px (7 train, 2 test); returns the manifest."""
    from ptg.pipeline.datasets.samples import build_samples

    return build_samples(out, task="denoise", sigma=25.0, seed=0, max_side=128, use_opencv=False)


def view_feature(img: np.ndarray, dim: int) -> np.ndarray:
    """A prior that differs between views: channel means of a 2×2 grid of cells, tiled to ``dim``."""
    h, w = img.shape[:2]
    cells = [img[i * h // 2 : (i + 1) * h // 2, j * w // 2 : (j + 1) * w // 2].mean(axis=(0, 1)) for i in (0, 1) for j in (0, 1)]
    v = np.concatenate(cells)  # 12 values
    return np.resize(v, dim).astype(np.float32) + 0.01


def make_store(path: Path, manifest: Path, dim: int = 16, views: str = "identity", drop_ids: tuple[str, ...] = ()) -> Path:
    """A real Zarr priors store for the manifest's inputs (minus ``drop_ids``)."""
    from ptg.pipeline.storage.store import allocate_shards, create_or_open_store, write_shard, writer_lock

    names = parse_views(views)
    samples = [s for s in load_manifest(manifest).samples if s.id not in drop_ids]
    keys, values = [], []
    for s in samples:
        img = read_image(s.input)
        keys.append(file_sha256(s.input))
        values.append(np.stack([view_feature(apply_view(img, v), dim) for v in names]))
    meta = {"encoder": {"name": "test-view-feature", "args": {"dim": dim}, "preprocessing": {"resize": "none"}},
            "fingerprint": f"test-{dim}", "dim": dim, "views": list(names), "dtype": "float32", "random_init": False}
    rows = 32
    with writer_lock(path):
        create_or_open_store(path, meta, rows_per_shard=rows)
        shards = allocate_shards(path, math.ceil(len(keys) / rows))
        for i, shard in enumerate(shards):
            write_shard(path, shard, keys[i * rows : (i + 1) * rows], np.stack(values[i * rows : (i + 1) * rows]))
    return path


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    return make_samples(tmp_path_factory.mktemp("samples"))


# ---------------------------------------------------------------------------------------------
# config


def test_config_yaml_roundtrip_and_unknown_keys(tmp_path):
    cfg = C.resolve(overrides={"out": "r", "data": {"manifest": "m.jsonl"}}, sets=["optim.lr=2e-4", "model.refiner_args.use_sve=false"])
    assert cfg.optim.lr == 2e-4 and cfg.model.refiner_args == {"use_sve": False}
    C.save_yaml(cfg, tmp_path / "c.yaml")
    again = C.resolve(tmp_path / "c.yaml")
    assert C.to_dict(again) == C.to_dict(cfg)
    (tmp_path / "bad.yaml").write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(PtgError, match="optim.learning_rate"):
        C.resolve(tmp_path / "bad.yaml")
    with pytest.raises(PtgError, match="must be a number"):
        C.resolve(sets=["optim.lr=fast"])
    with pytest.raises(PtgError, match="is not one of"):
        C.resolve(sets=["priors.control=random"])
    with pytest.raises(PtgError, match="section.key=value"):
        C.parse_set(["lr"])


def test_presets_follow_the_authors_optimiser():
    for name in C.PRESETS:
        cfg = C.resolve(preset_name=name)
        assert cfg.preset == name
        assert cfg.optim.betas == (0.9, 0.99) and cfg.loss.lambda_r == 1.0
    assert C.resolve(preset_name="lowlight").loss.perceptual_weight == 0.1
    assert C.resolve(preset_name="lowlight-unsupervised").loss.kind == "zero-dce"
    # a preset named in the file, overridden by --set
    cfg = C.resolve(preset_name="derain", sets=["data.crop=64"])
    assert cfg.data.crop == 64 and cfg.optim.lr == 1e-4
    with pytest.raises(PtgError, match="unknown preset"):
        C.resolve(preset_name="superres")


# ---------------------------------------------------------------------------------------------
# losses


def test_charbonnier_and_zero_dce_losses():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 0.2
    y = torch.rand(2, 3, 32, 32)
    assert L.charbonnier(y, y).item() == pytest.approx(1e-3, rel=1e-4)  # sqrt(eps²) at equality
    assert L.charbonnier(x, y) > L.charbonnier(y, y)
    # exposure control prefers the target level; colour constancy a grey image
    assert L.exposure_control(torch.full_like(x, 0.6)).item() == pytest.approx(0.0, abs=1e-12)
    assert L.exposure_control(x) > 0.1
    grey = torch.full_like(x, 0.4)
    assert L.color_constancy(grey).item() == pytest.approx(0.0, abs=1e-6)
    tinted = grey.clone()
    tinted[:, 0] += 0.3
    assert L.color_constancy(tinted) > 0.01
    # a global gain keeps the input's spatial structure (L_spa ~ 0 only for a gain of 1) and is smooth
    assert L.spatial_consistency(x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert L.illumination_smoothness(2 * x + 0.002, x).item() < L.illumination_smoothness(y, x).item()
    loss = L.build_loss(C.LossConfig(kind="zero-dce"))
    assert not loss.needs_target
    pred = (x * 3).requires_grad_()
    v = loss(pred, None, x)
    v.backward()
    assert torch.isfinite(v) and pred.grad.abs().sum() > 0
    with pytest.raises(PtgError, match="needs targets"):
        L.build_loss(C.LossConfig(kind="l1"))(x, None, x)


def test_perceptual_loss_needs_local_weights_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(PtgError, match="perceptual_weights_file"):
        L.build_loss(C.LossConfig(perceptual_weight=0.1, perceptual_weights_file=str(tmp_path / "nope.pth")))
    # The real loading path, on a VGG19 feature stack saved to a file (random weights: offline).
    from torchvision.models import vgg19

    torch.manual_seed(0)
    path = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in vgg19(weights=None).features.state_dict().items()}, path)
    loss = L.build_loss(C.LossConfig(perceptual_weight=0.1, perceptual_weights_file=str(path)))
    x = torch.rand(1, 3, 32, 32)
    assert loss(x, x, x).item() == pytest.approx(1e-3, rel=1e-3)  # perceptual term 0 at equality
    assert loss(x.flip(-1), x, x).item() > loss(x, x, x).item()


# ---------------------------------------------------------------------------------------------
# data


def test_dataset_crops_views_and_priors(samples, tmp_path):
    from ptg.pipeline.storage.store import open_priors

    store = open_priors(make_store(tmp_path / "s", samples, dim=16, views="d4"))
    train = load_manifest(samples).split("train")
    keys = [file_sha256(s.input) for s in train]
    aug = augment_views("store", store.views)
    assert set(aug) == set(parse_views("d4"))
    tables = load_tables([store], keys, aug)
    cfg = C.DataConfig(crop=32)
    pcfg = C.PriorConfig(normalize="none")
    ds = TrainDataset(train, tables, cfg, pcfg, aug, seed=3)
    seen = set()
    for index in range(len(ds)):
        item = ds[(1, index)]
        s = train[index]
        img = read_image(s.input)
        top, left, view, _ = ds.draw(1, index, *img.shape[:2])
        seen.add(view)
        np.testing.assert_array_equal(item["x"].permute(1, 2, 0).numpy(), apply_view(img[top : top + 32, left : left + 32], view))
        np.testing.assert_array_equal(item["priors"][0].numpy(), store.get([keys[index]], view)[0])
        # same (epoch, index), same sample; another epoch, another crop
        assert torch.equal(ds[(1, index)]["x"], item["x"])
    assert len(seen) > 1
    assert not torch.equal(ds[(2, 0)]["x"], ds[(1, 0)]["x"])


def test_cached_images_give_the_same_items_and_decode_once(samples, tmp_path, monkeypatch):
    from ptg.ptgrm.train import data as D

    train = load_manifest(samples).split("train")
    plain = TrainDataset(train, [], C.DataConfig(crop=32), C.PriorConfig(), ("identity", "hflip"), seed=1)
    cached = TrainDataset(train, [], C.DataConfig(crop=32, cache_images=True), C.PriorConfig(), ("identity", "hflip"), seed=1)
    calls = []
    monkeypatch.setattr(D, "read_image", lambda p: calls.append(p) or read_image(p))
    for epoch in (0, 1):
        for index in range(len(train)):
            a, b = plain[(epoch, index)], cached[(epoch, index)]
            assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    # plain: input + target decoded for every item; cached: once per file
    assert len(calls) == 2 * 2 * len(train) + 2 * len(train)


def test_tile_priors_and_identity_fallback_warns(samples, tmp_path):
    from ptg.pipeline.storage.store import open_priors

    train = load_manifest(samples).split("train")
    keys = [file_sha256(s.input) for s in train]
    tiles = open_priors(make_store(tmp_path / "t", samples, dim=8, views="tiles:2"))
    ds = TrainDataset(train, load_tables([tiles], keys, ("identity",)), C.DataConfig(crop=32),
                      C.PriorConfig(normalize="none"), ("identity",), seed=0)
    for index in range(len(ds)):
        h, w = read_image(train[index].input).shape[:2]
        top, left, _, _ = ds.draw(0, index, h, w)
        tile = tile_view_for(h, w, 2, top, left, 32, 32)
        np.testing.assert_array_equal(ds[(0, index)]["priors"][0].numpy(), tiles.get([keys[index]], tile)[0])
    ident = open_priors(make_store(tmp_path / "i", samples, dim=8, views="identity"))
    with pytest.warns(UserWarning, match="identity view's prior"):
        tables = load_tables([ident], keys, parse_views("flips"))
    ds = TrainDataset(train, tables, C.DataConfig(crop=32), C.PriorConfig(normalize="none"), parse_views("flips"), seed=0)
    np.testing.assert_array_equal(ds[(0, 0)]["priors"][0].numpy(), ident.get([keys[0]])[0])


def test_prior_controls(samples, tmp_path):
    from ptg.pipeline.storage.store import open_priors

    store = open_priors(make_store(tmp_path / "s", samples, dim=16))
    val = load_manifest(samples).samples
    keys = [file_sha256(s.input) for s in val]
    tables = load_tables([store], keys, ("identity",))
    from ptg.ptgrm.priors import PriorTransform

    fit = lambda control, normalize="l2": PriorTransform.fit([16], normalize, control, 0, [tables[0].vectors["identity"]])  # noqa: E731
    raw_all = torch.from_numpy(tables[0].vectors["identity"])
    real = ValDataset(val, tables)
    assert torch.equal(real[0]["priors"][0], raw_all[0])  # raw: the Restorer transforms
    g = fit("real")([raw_all[:1]])[0]
    assert g.norm().item() == pytest.approx(1.0, abs=1e-5)  # L2-normalised
    assert fit("zero")(None, 3)[0].abs().sum() == 0 and fit("zero")(None, 3)[0].shape == (3, 16)
    const = fit("constant")(None, 2)[0]
    normed = fit("real")([raw_all])[0]
    assert any(torch.equal(const[0], row) for row in normed)  # one training image's normalised prior
    assert torch.equal(const[0], const[1])
    std = fit("real", "standardize")([raw_all])[0]
    torch.testing.assert_close(std.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    # standardised priors average to zero: the constant control is still a real prior, never the zero vector
    std_const = fit("constant", "standardize")(None, 1)[0][0]
    assert any(torch.equal(std_const, row) for row in std) and std_const.norm() > 0
    d = derangement(len(val), 0)
    assert sorted(d.tolist()) == list(range(len(val))) and all(d[i] != i for i in range(len(val)))
    order = fit("shuffle").order(len(val))
    shuf = ValDataset(val, tables, order)
    got = torch.stack([shuf[i]["priors"][0] for i in range(len(val))])
    assert torch.equal(got, raw_all[torch.from_numpy(order)]) and torch.equal(torch.from_numpy(order), torch.from_numpy(derangement(len(val), 1)))
    assert not torch.equal(got, raw_all)
    # training-time dropout zeroes about p of the vectors, deterministically
    train = load_manifest(samples).split("train")
    tk = [file_sha256(s.input) for s in train]
    ds = TrainDataset(train, load_tables([store], tk, ("identity",)), C.DataConfig(crop=16),
                      C.PriorConfig(dropout=0.5, noise=0.01), ("identity",), seed=0, repeat=8)
    zeros = sum(int(ds[(0, i)]["priors"][0].abs().sum() == 0) for i in range(len(ds)))
    assert 10 < zeros < 46
    assert torch.equal(ds[(0, 5)]["priors"][0], ds[(0, 5)]["priors"][0])


def test_missing_priors_error_names_count_and_ids(samples, tmp_path):
    from ptg.pipeline.storage.store import open_priors

    train = load_manifest(samples).split("train")
    store = open_priors(make_store(tmp_path / "s", samples, dim=8, drop_ids=(train[0].id, train[2].id)))
    keys = [file_sha256(s.input) for s in train]
    with pytest.raises(PtgError, match=rf"2 of {len(train)} manifest rows have no prior.*{train[0].id}, {train[2].id}"):
        check_missing(train, keys, [store], allow_missing=False)
    with pytest.warns(UserWarning, match="dropping 2"):
        keep = check_missing(train, keys, [store], allow_missing=True)
    assert keep == [i for i in range(len(train)) if i not in (0, 2)]
