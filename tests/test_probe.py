"""`ptg priors probe` on synthetic stores where the answer is known."""
import json

import numpy as np
import pytest
from PIL import Image

from ptg.cli.app import main
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.datasets.manifest import load_manifest, write_manifest
from ptg.pipeline.priors.normalize import normalize_rows as normalize
from ptg.pipeline.priors.probe import between_fraction, mean_cosine, probe_arrays, probe_store
from ptg.pipeline.storage.store import allocate_shards, create_or_open_store, sample_keys, write_shard, writer_lock

LEVELS = (10.0, 30.0, 50.0)


def _fields(rng, n):
    return [{"task": "denoise", "sigma": float(rng.choice(LEVELS))} for _ in range(n)]


def _informative(fields, rng, dim=32, noise=0.05):
    # sigma along one random direction, on top of a large shared offset (nearly parallel vectors)
    direction, offset = rng.normal(size=dim), 5.0 * rng.normal(size=dim)
    s = np.array([f["sigma"] for f in fields]) / 50.0
    return offset + s[:, None] * direction + noise * rng.normal(size=(len(fields), dim))


def test_informative_prior_is_found_and_noise_is_not():
    rng = np.random.default_rng(0)
    ftr, fte = _fields(rng, 60), _fields(rng, 30)
    x = _informative(ftr + fte, rng)
    rows, cos = probe_arrays(x[:60], x[60:], ftr, fte)
    by = {(r.field, r.normalize): r for r in rows}
    for how in ("none", "l2", "standardize"):
        assert by[("sigma", how)].score > 0.9
        assert by[("sigma (levels)", how)].score > 0.9 > by[("sigma (levels)", how)].chance + 0.3
    assert cos["none"] > 0.9 and abs(cos["standardize"]) < 0.2  # standardising removes the shared direction
    assert by[("task", "none")].note == "constant in train"  # one task: nothing to classify
    noise = rng.normal(size=(90, 32))
    rows, _ = probe_arrays(noise[:60], noise[60:], ftr, fte)
    by = {(r.field, r.normalize): r for r in rows}
    for how in ("none", "l2", "standardize"):
        assert by[("sigma", how)].score < 0.15  # ~0 (or below: no better than the train mean)
        assert by[("sigma (levels)", how)].score < by[("sigma (levels)", how)].chance + 0.25


def test_geometry_helpers():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert mean_cosine(x) == pytest.approx((0 + 2 * np.sqrt(0.5)) / 3)
    assert between_fraction(np.array([[0.0], [0.0], [1.0], [1.0]]), ["a", "a", "b", "b"]) == pytest.approx(1.0)
    assert between_fraction(np.array([[0.0], [1.0], [0.0], [1.0]]), ["a", "a", "b", "b"]) == pytest.approx(0.0)
    z = normalize(np.array([[1.0, 2.0], [3.0, 2.0]]), "standardize", np.array([[1.0, 2.0], [3.0, 2.0]]))
    np.testing.assert_allclose(z, [[-1.0, 0.0], [1.0, 0.0]])  # a constant dimension stays 0
    with pytest.raises(PtgError, match="'minmax' is not one of none, l2, standardize"):
        normalize(x, "minmax", x)


def _dataset(tmp_path, n_train=24, n_test=12):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n_train + n_test):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(p)
        rows.append({"id": str(i), "input": str(p), "target": str(p), "split": "train" if i < n_train else "test",
                     "task": "denoise", "degradation": {"sigma": float(LEVELS[i % 3]), "gray": False}})
    return load_manifest(write_manifest(tmp_path / "manifest.jsonl", rows))


def _store(path, keys, values):
    meta = {"kind": "ptg-priors", "encoder": {"name": "synthetic"}, "fingerprint": "test", "dim": values.shape[1],
            "views": ["identity"], "views_spec": "identity", "dtype": "float32"}
    with writer_lock(path):
        create_or_open_store(path, meta, rows_per_shard=64)
        write_shard(path, allocate_shards(path, 1)[0], keys, values[:, None, :])
    return path


def test_probe_store_and_cli(tmp_path):
    m = _dataset(tmp_path)
    keys = sample_keys(m.samples)
    rng = np.random.default_rng(2)
    good = _store(tmp_path / "good", keys, _informative([s.extra["degradation"] for s in m.samples], rng))
    rep = probe_store(good, m.path)
    assert rep.n_train == 24 and rep.n_test == 12 and rep.dim == 32
    assert next(r for r in rep.rows if r.field == "sigma" and r.normalize == "standardize").score > 0.9
    out = tmp_path / "probe"
    assert main(["priors", "probe", str(good), "--manifest", str(m.path), "--out", str(out)]) == 0
    data = json.loads((out / "probe.json").read_text())
    assert {r["normalize"] for r in data["rows"]} == {"none", "l2", "standardize"}
    assert "| sigma | numeric |" in (out / "probe.md").read_text()
    assert (out / "probe.png").read_bytes()[:4] == b"\x89PNG"
    # rows without a prior: a clear error naming the store
    partial = _store(tmp_path / "partial", keys[:5], rng.normal(size=(5, 32)))
    assert main(["priors", "probe", str(partial), "--manifest", str(m.path)]) == 1


def test_fields_with_few_test_rows_are_flagged_not_scored(tmp_path):
    m = _dataset(tmp_path, n_train=24, n_test=9)  # one fewer test row than MIN_TEST_ROWS
    keys = sample_keys(m.samples)
    values = _informative([s.extra["degradation"] for s in m.samples], np.random.default_rng(2))
    rep = probe_store(_store(tmp_path / "s", keys, values), m.path)
    sigma = [r for r in rep.rows if r.field == "sigma"]
    assert sigma and all(r.score is None and "too few rows: 24 train / 9 test" in r.note for r in sigma)
    assert "too few rows" in rep.to_markdown()
