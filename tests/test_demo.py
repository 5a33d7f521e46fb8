"""`ptg demo`'s data stage: one blind manifest over the noise levels with a validation split
carved from the training photos (seeded, by photo), so the demo never validates on test."""
from __future__ import annotations

import pytest

from ptg.cli.demo_cmd import _parse_sigmas, blind_manifest
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.pipeline.datasets.samples import build_samples


def test_blind_manifest_carves_val_photos_from_train(tmp_path):
    levels = [10.0, 50.0]
    for i, s in enumerate(levels):
        build_samples(tmp_path / f"s{s:g}", task="denoise", sigma=s, seed=i, max_side=64, use_opencv=False)
    m = load_manifest(blind_manifest(tmp_path, levels, tmp_path / "manifest.jsonl", seed=0))
    split_of = {}
    for s in m.samples:
        level, photo = s.extra["sigma"], s.extra["photo"]
        assert s.id.startswith(f"s{level:g}") and photo in s.id
        split_of.setdefault(photo, set()).add(s.split)
    assert all(len(v) == 1 for v in split_of.values())  # one photo, one split, at every level
    single = load_manifest(tmp_path / "s10" / "manifest.jsonl").samples
    val = {p for p, v in split_of.items() if v == {"val"}}
    train = {x.id for x in single if x.split == "train"}
    test = {x.id for x in single if x.split == "test"}
    assert val and val <= train and {p for p, v in split_of.items() if v == {"test"}} == test
    assert len(val) == max(1, round(0.25 * len(train)))
    again = load_manifest(blind_manifest(tmp_path, levels, tmp_path / "again.jsonl", seed=0))
    assert [s.split for s in again.samples] == [s.split for s in m.samples]  # seeded


def test_sigmas_are_checked():
    assert _parse_sigmas("10, 30,50") == [10.0, 30.0, 50.0]
    for bad in ("", "10,x", "10,10", "-5"):
        with pytest.raises(PtgError, match="--sigmas"):
            _parse_sigmas(bad)
