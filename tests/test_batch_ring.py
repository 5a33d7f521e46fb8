"""Training batches through the ring of shared-memory slots (`ptg.ptgrm.train.ring`): the same
batches, bits and order as stacking the dataset's items, for 0, 1 and 2 DataLoader workers; a
batch held is not overwritten by the next one; a worker's error surfaces with its message; and
training gives one digest whatever the worker count, image source or a resume mid-epoch."""
from __future__ import annotations

import json
import shutil

import pytest

from ptg.ptgrm.train.config import resolve
from ptg.ptgrm.train.trainer import train

from .test_train import TINY
from .test_train_units import make_samples, make_store


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from ptg.pipeline import imagestore
    from ptg.pipeline.manifest import load_manifest

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
    print(json.dumps({f"{k[0]}{k[1]}": v[0] for k, v in runs.items()}))
    assert len(set(json.dumps(v) for v in runs.values())) == 1, runs
    # resume from step 4 (epoch 1, its second batch): the epoch's first batch is skipped, not drawn again
    run = tmp_path / "resumed"
    shutil.copytree(tmp_path / "store1", run)
    shutil.copy(run / "checkpoints" / "step_000004.pt", run / "checkpoints" / "last.pt")
    (run / "final.json").unlink()
    resumed = _train(tiny, run, ["data.images=store", "data.num_workers=1"], resume=True)
    assert (resumed["digest"], resumed["val"]) == runs["store", 1]
