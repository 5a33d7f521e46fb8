"""Distributed extraction: two dask workers (a local cluster) give exactly a single-process store."""
from __future__ import annotations

import numpy as np
import torch

from ptg.pipeline.priors.extract import extract_priors

from .test_extract import _all, _images, _manifest, _tiny_clip_spec

torch.set_num_threads(1)


def test_two_dask_workers_equal_one_process(tmp_path):
    imgs = _images(tmp_path / "img", 40, side=40)
    m = _manifest(tmp_path / "m.jsonl", imgs)
    spec = _tiny_clip_spec(tmp_path)
    kw = dict(rows_per_shard=16, batch_size=4, views="flips", dtype="float32")
    one = extract_priors(m, spec, out=tmp_path / "one.zarr", loader_workers=0, **kw)
    two = extract_priors(m, spec, out=tmp_path / "two.zarr", workers=2, **kw)
    assert one.computed == two.computed == 40 and two.random_init
    k1, v1 = _all(one.store)
    k2, v2 = _all(two.store)
    assert k1 == k2
    np.testing.assert_array_equal(v1, v2)




def test_dask_bad_input_withholds_only_its_shard(tmp_path):
    import pytest

    from ptg.pipeline.core.errors import PtgError
    from ptg.pipeline.storage.store import COMMITS

    imgs = _images(tmp_path / "img", 12, side=40)
    bad = tmp_path / "img" / "broken.png"
    bad.write_bytes(imgs[0].read_bytes()[:60])
    m = _manifest(tmp_path / "m.jsonl", imgs[:3] + [bad] + imgs[3:])  # line 4: in the first of 2 shards
    out = tmp_path / "d.zarr"
    with pytest.raises(PtgError, match=r"(?s)1 other shard\(s\) were committed.*manifest line 4 \(id 's3'\).*broken.png"):
        extract_priors(m, _tiny_clip_spec(tmp_path), out=out, workers=2, rows_per_shard=8, batch_size=4, dtype="float32")
    assert [p.name for p in (out / COMMITS).iterdir()] == ["shard-000001.json"]
