"""Training batches through the ring of shared-memory slots (`ptg.ptgrm.train.ring`): the same
batches, bits and order as stacking the dataset's items, for 0, 1 and 2 DataLoader workers; a
batch held is not overwritten by the next one; a worker's error surfaces with its message; and
training gives one digest whatever the worker count, image source or a resume mid-epoch."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from ptg.ptgrm.train.config import resolve
from ptg.ptgrm.train.trainer import train

from .test_train import TINY
from .test_train_units import make_samples, make_store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from ptg.pipeline.storage import imagestore
    from ptg.pipeline.datasets.manifest import load_manifest

    root = tmp_path_factory.mktemp("ring")
    m = make_samples(root / "samples")
    imagestore.cache_images(imagestore.manifest_paths(load_manifest(m).samples), root / "images")
    return {"root": root, "manifest": m, "priors": make_store(root / "s.zarr", m, dim=16, views="flips")}


def _train(tiny, out, sets, steps=7, resume=False):
    overrides = {"out": str(out), "mode": "joint", "steps": steps, "resume": resume, "run": {"save_every": 4},
                 "data": {"manifest": str(tiny["manifest"]), "priors": [str(tiny["priors"])]}}
    sets = TINY + ["data.augment=flips", "priors.noise=0.01", f"data.image_store={tiny['root'] / 'images'}"] + sets
    return train(resolve(overrides=overrides, sets=sets))


def test_training_digest_is_one_for_0_1_2_workers_store_and_files_and_a_resume_mid_epoch(tiny, tmp_path):
    # 7 training photos, batch 2: 3 batches an epoch, so 7 steps cross two epoch ends (new workers each epoch)
    runs = {}
    for images, workers in (("files", 0), ("store", 0), ("store", 1), ("store", 2), ("files", 2)):
        final = _train(tiny, tmp_path / f"{images}{workers}", [f"data.images={images}", f"data.num_workers={workers}"])
        runs[images, workers] = (final["digest"], final["val"])
    assert len(set(json.dumps(v) for v in runs.values())) == 1, runs
    # resume from step 4 (epoch 1, its second batch): the epoch's first batch is skipped, not drawn again
    run = tmp_path / "resumed"
    shutil.copytree(tmp_path / "store1", run)
    shutil.copy(run / "checkpoints" / "step_000004.pt", run / "checkpoints" / "last.pt")
    (run / "final.json").unlink()
    resumed = _train(tiny, run, ["data.images=store", "data.num_workers=1"], resume=True)
    assert (resumed["digest"], resumed["val"]) == runs["store", 1]


class _Outputs:
    """A stand-in for cached F outputs (`CachedOutputs.array`): the input photo as float32."""

    def array(self, sample, view="identity", box=None):
        from ptg.pipeline.core.imageio import read_image

        img = read_image(sample.input)
        if box is None:
            return img
        top, left, size = box
        return img[top : top + size, left : left + size]


def _dataset(tiny, kind, targets=True, f_outputs=None, train=None):
    from dataclasses import replace

    from ptg.pipeline.storage import imagestore
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.pipeline.storage.store import open_priors
    from ptg.ptgrm.train.config import DataConfig, PriorConfig
    from ptg.ptgrm.train.data import ImageSource, InputGuard, TrainDataset, load_tables

    train = train or load_manifest(tiny["manifest"]).split("train")
    guard = InputGuard(train)
    views = ("identity", "hflip", "vflip", "hvflip")
    tables = load_tables([open_priors(tiny["priors"])], guard.keys, views)
    paths = imagestore.manifest_paths(train)
    images = (ImageSource(imagestore.ImageStore(tiny["root"] / "images"), InputGuard(paths=paths, base=guard))
              if kind == "store" else ImageSource(keyed_guard=guard))
    if not targets:
        train = [replace(s, target=None) for s in train]
    return TrainDataset(train, tables, DataConfig(crop=32), PriorConfig(dropout=0.3, noise=0.01), views, seed=5,
                        repeat=2, need_target=targets, guard=guard, images=images, raw=True, f_outputs=f_outputs)


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        pairs = zip(a[k], b[k]) if k == "priors" else [(a[k], b[k])]
        for u, v in pairs:
            assert u.dtype == v.dtype and u.shape == v.shape and torch.equal(u, v), k


@pytest.mark.parametrize("kind,targets,outputs", [("store", True, False), ("files", True, True), ("store", False, True)])
def test_the_ring_gives_the_stacked_items_bit_for_bit_with_0_1_2_workers(tiny, kind, targets, outputs):
    from torch.utils.data import default_collate

    from ptg.ptgrm.train.ring import BatchRing, ring_batches, ring_slots

    ds = _dataset(tiny, kind, targets, _Outputs() if outputs else None)
    assert ds.raw == (kind == "store")  # uint8 crops turned later (store), float32 crops (files)
    keys = [(e, i) for e in (0, 1) for i in reversed(range(len(ds)))]  # 28 samples: 9 batches of 3, one left over
    plain = [default_collate([ds[k] for k in keys[i : i + 3]]) for i in range(0, 27, 3)]  # today's DataLoader batches
    assert plain[0]["y"].shape == ((3, 32, 32, 3) if kind == "store" else (3, 3, 32, 32)) if targets else (3, 0)
    for workers in (0, 1, 2):
        ring = BatchRing(ds, 3, ring_slots(workers, 2))
        got = [_copy(b) for b in ring_batches(ring, keys, 3, workers, 2)]
        assert len(got) == len(plain)
        for a, b in zip(got, plain):
            _same(a, b)


def test_a_held_batch_is_not_overwritten_while_the_next_is_fetched(tiny):
    import time

    from ptg.ptgrm.train.ring import BatchRing, ring_batches, ring_slots

    ds = _dataset(tiny, "store")
    keys = [(e, i) for e in range(4) for i in range(len(ds))]  # 56 samples: 28 batches of 2, the ring has 6 slots
    ring = BatchRing(ds, 2, ring_slots(2, 2))
    held = None
    for b in ring_batches(ring, keys, 2, workers=2, prefetch=2):
        time.sleep(0.02)  # the workers run ahead as far as the DataLoader lets them
        if held is not None:
            _same(held[0], held[1])  # batch i, still in its slot, unchanged after batch i+1 was fetched
        held = (b, _copy(b))


@pytest.mark.parametrize("workers", [0, 1])
def test_errors_in_the_workers_surface_with_their_message(tiny, tmp_path, workers):
    from ptg.pipeline.core.errors import PtgError
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.ptgrm.train.ring import BatchRing, ring_batches, ring_slots

    ds = _dataset(tiny, "store", targets=False)
    ds.need_target = True  # a supervised loss on rows without targets
    ring = BatchRing(ds, 2, ring_slots(workers, 2))
    with pytest.raises(PtgError, match=r"has no target; supervised losses need one"):
        list(ring_batches(ring, [(0, i) for i in range(4)], 2, workers, 2))
    # an input edited after the start: the store's row belongs to its old bytes
    root = tmp_path / "copy"
    shutil.copytree(tiny["manifest"].parent, root)
    train = load_manifest(root / tiny["manifest"].name).split("train")
    ds = _dataset(tiny, "store", train=train)
    ring = BatchRing(ds, 2, ring_slots(workers, 2))
    train[0].input.write_bytes(train[1].input.read_bytes())
    with pytest.raises(PtgError, match=r"changed on disk after training started"):
        list(ring_batches(ring, [(0, i) for i in range(len(ds))], 2, workers, 2))


def _copy(batch):
    return {k: [p.clone() for p in v] if k == "priors" else v.clone() for k, v in batch.items()}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked memory needs CUDA")
def test_pinned_batches_are_page_locked_copies_of_the_slots(tiny):
    from ptg.ptgrm.train.ring import BatchRing, ring_batches, ring_slots

    ds = _dataset(tiny, "store")
    ring = BatchRing(ds, 2, ring_slots(1, 2))
    keys = [(0, i) for i in range(len(ds))]
    plain = [_copy(b) for b in ring_batches(ring, keys, 2, 1, 2)]
    for b, p in zip(ring_batches(ring, keys, 2, 1, 2, pin=True), plain):
        assert b["x"].is_pinned() and all(g.is_pinned() for g in b["priors"])
        _same({k: v.to("cuda", non_blocking=True).cpu() if k != "priors" else v for k, v in b.items()}, p)
