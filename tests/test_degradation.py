"""The degradation prior: a fixed, fingerprinted layout built from each row's recorded parameters."""
import json

import numpy as np
import pytest

from ptg.cli.app import main
from ptg.pipeline.encoders import EncoderSpec, build_encoder, list_encoders
from ptg.pipeline.encoders.degradation import (DIM, LAYOUT, DegradationRows, degradation_vector, fields_of,
                                                layout_fingerprint)
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.priors.extract import extract_priors
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.pipeline.storage.store import open_priors, sample_keys
from ptg.pipeline.datasets.synth import AllInOneParams, BlurParams, NoiseParams, synthesize


def _at(v, name):
    return float(v[LAYOUT.index(name)])


def test_vector_layout_and_presence_bits():
    v = degradation_vector({"task": "denoise", "degradation": {"sigma": 25.0, "gray": False}})
    assert v.shape == (DIM,) and v.dtype == np.float32
    assert _at(v, "task=denoise") == 1 and _at(v, "task=blur") == 0
    assert _at(v, "sigma") == pytest.approx(0.5) and _at(v, "has_sigma") == 1
    assert _at(v, "exposure") == 0 and _at(v, "has_exposure") == 0  # absent: 0 plus presence 0
    b = degradation_vector({"task": "allinone", "degradation": {"task": "blur", "kind": "defocus", "radius": 3.0,
                                                                "noise_sigma": 1.0}})
    assert _at(b, "task=blur") == 1 and _at(b, "blur_kind=defocus") == 1 and _at(b, "blur_kind=motion") == 0
    assert _at(b, "blur_size") == pytest.approx(6 / 20) and _at(b, "has_blur_size") == 1  # diameter
    j = degradation_vector({"task": "jpeg", "degradation": {"quality": 30}})
    assert _at(j, "jpeg_quality") == pytest.approx(0.3) and _at(j, "has_jpeg_quality") == 1
    assert fields_of({"task": "allinone", "degradation": {"task": "blur", "kind": "motion", "length": 9}}) == \
        {"task": "blur", "blur_kind": "motion", "blur_size": 9.0}
    for bad, msg in [({"task": "denoise"}, "no 'degradation'"), ({"task": "rain", "degradation": {}}, "unknown degradation task"),
                     ({"task": "denoise", "degradation": {"sigma": "high"}}, "finite number"),
                     ({"task": "blur", "degradation": {"kind": "zoom"}}, "unknown blur kind")]:
        with pytest.raises(PtgError, match=msg):
            degradation_vector(bad)
    assert layout_fingerprint() == layout_fingerprint() and layout_fingerprint().startswith("degradation-")


def test_a_row_source_of_the_engine_not_a_registered_encoder(photo_dir, tmp_path):
    assert "degradation" not in {e.name for e in list_encoders()}
    with pytest.raises(PtgError, match="unknown encoder 'degradation'"):
        build_encoder(EncoderSpec("degradation"))
    man = synthesize(photo_dir, tmp_path / "d", "denoise", NoiseParams(), seed=1, split="train")
    by_name = extract_priors(man, "degradation", out=tmp_path / "a", dtype="float32")
    by_spec = extract_priors(man, EncoderSpec("degradation"), out=tmp_path / "b", dtype="float32")
    by_source = extract_priors(man, DegradationRows(), out=tmp_path / "c", dtype="float32")
    assert by_name.fingerprint == by_spec.fingerprint == by_source.fingerprint == layout_fingerprint()
    readers = [open_priors(tmp_path / d) for d in "abc"]
    keys = sample_keys(load_manifest(man).samples)
    assert all(np.array_equal(readers[0].get(keys), r.get(keys)) for r in readers[1:])


def test_store_matches_manifest_and_resumes(photo_dir, tmp_path):
    man = synthesize(photo_dir, tmp_path / "d", "allinone", AllInOneParams(), seed=2, split="train")
    m = load_manifest(man)
    s1 = extract_priors(m, "degradation", out=tmp_path / "s", views="flips", dtype="float32")
    assert s1.computed == 4 and s1.dim == DIM and s1.views == ("identity", "hflip", "vflip", "hvflip")
    r = open_priors(tmp_path / "s")
    assert r.metadata["encoder"]["name"] == "degradation" and r.fingerprint == layout_fingerprint()
    assert r.metadata["encoder"]["details"]["layout"] == list(LAYOUT)
    keys = sample_keys(m.samples)
    want = np.stack([degradation_vector(s.extra) for s in m.samples])
    for view in r.views:  # every view holds the same vector: a flip does not change the degradation
        np.testing.assert_array_equal(r.get(keys, view), want)
    assert not r.verify()
    s2 = extract_priors(m, "degradation", out=tmp_path / "s", views="flips", dtype="float32")
    assert s2.computed == 0 and s2.reused == 4


def test_cli_dispatch_and_bad_rows(photo_dir, tmp_path):
    man = synthesize(photo_dir, tmp_path / "d", "blur", BlurParams("motion"), seed=0)
    assert main(["extract-priors", "--manifest", str(man), "--model", "degradation", "--out", str(tmp_path / "s"),
                 "--views", "d4"]) == 0
    r = open_priors(tmp_path / "s")
    assert len(r) == 4 and len(r.views) == 8 and r.dim == DIM
    assert main(["encoders"]) == 0
    # a row without a degradation record: refused, naming the line, nothing written
    rows = [json.loads(l) for l in man.read_text().splitlines()]
    del rows[2]["degradation"]
    bad = tmp_path / "d" / "bad.jsonl"
    bad.write_text("".join(json.dumps(x) + "\n" for x in rows))
    assert main(["extract-priors", "--manifest", str(bad), "--model", "degradation", "--out", str(tmp_path / "t")]) == 1
    assert not (tmp_path / "t").exists()
    # a store of other settings is refused by the store's own compatibility check
    noise = synthesize(photo_dir, tmp_path / "n", "denoise", NoiseParams(25), seed=0)
    with pytest.raises(PtgError, match="other settings"):
        extract_priors(noise, "degradation", out=tmp_path / "s", views="identity")
