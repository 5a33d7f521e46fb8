import numpy as np
import pytest
from PIL import Image

from ptg.cli.app import main
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.pipeline.datasets.pairing import build_from_template, list_datasets, load_template, pair_tree


def _img(path, v=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), v, np.uint8)).save(path)


@pytest.mark.parametrize("pair", [("input", "target"), ("lq", "gt"), ("low", "high"), ("blur", "sharp")])
def test_pair_tree_layouts(tmp_path, pair):
    a, b = pair
    for n in ("1", "2", "3"):
        _img(tmp_path / a / f"{n}.png"), _img(tmp_path / b / f"{n}.png")
    _img(tmp_path / a / "orphan.png")
    r = pair_tree(tmp_path)
    assert sorted(x["id"] for x in r.rows) == ["1", "2", "3"]
    assert r.unmatched == [f"{a}/orphan.png"]


def test_rain13k_style_tree_splits_and_ids(tmp_path):
    for split, name in (("train", "Rain13K"), ("test", "Rain100H"), ("test", "Rain100L")):
        for n in ("1", "2"):
            _img(tmp_path / split / name / "input" / f"{n}.png"), _img(tmp_path / split / name / "target" / f"{n}.png")
    r = pair_tree(tmp_path)
    ids = {x["id"]: x["split"] for x in r.rows}
    assert ids["train__Rain13K__1"] == "train" and ids["test__Rain100H__2"] == "test" and len(ids) == 6


def test_lol_layout_our485_eval15(tmp_path):
    _img(tmp_path / "our485/low/1.png"), _img(tmp_path / "our485/high/1.png")
    _img(tmp_path / "eval15/low/9.png"), _img(tmp_path / "eval15/high/9.png")
    assert {x["id"]: x["split"] for x in pair_tree(tmp_path).rows} == {"our485__1": "train", "eval15__9": "test"}


def test_no_pairs_is_an_error(tmp_path):
    _img(tmp_path / "photos/a.png")
    with pytest.raises(PtgError, match="no paired folders"):
        pair_tree(tmp_path)


def test_every_template_loads():
    names = list_datasets()
    for required in ("lol-real", "sid", "rain13k", "gopro", "hide", "realblur-r", "realblur-j", "dpdd", "sidd",
                     "cbsd68", "kodak24", "mcmaster", "urban100", "set12", "bsd68"):
        assert required in names
        assert load_template(required)["sets"]


def test_template_lol_real_regex_keys_and_missing(tmp_path):
    for n in ("00001", "00002"):
        _img(tmp_path / f"Test/Low/low{n}.png"), _img(tmp_path / f"Test/Normal/normal{n}.png")
    r = build_from_template("lol-real", tmp_path)
    assert sorted(x["id"] for x in r.rows) == ["test__00001", "test__00002"]
    assert any("Train/Low/" in m and "not found" in m for m in r.missing)
    assert any("expected 100 pairs, found 2" in m for m in r.missing)


def test_template_sidd_side_by_side(tmp_path):
    scene = tmp_path / "SIDD_Medium_Srgb/Data/0001_001_S6"
    _img(scene / "NOISY_SRGB_010.PNG"), _img(scene / "GT_SRGB_010.PNG")
    r = build_from_template("sidd", tmp_path)
    assert [x["id"] for x in r.rows] == ["SIDD-train__0001_001_S6__010"] and not r.unmatched


def test_template_sid_per_folder_targets(tmp_path):
    frame = np.zeros((4, 4, 3), np.float32)
    for scene in ("00001", "10003"):  # SID scene ids: 0xxxx train, 1xxxx test
        for folder in ("short_sid2", "long_sid2"):
            (tmp_path / folder / scene).mkdir(parents=True)
        for k in range(2):
            np.save(tmp_path / f"short_sid2/{scene}/s{k}.npy", frame)
        np.save(tmp_path / f"long_sid2/{scene}/gt.npy", frame)
    r = build_from_template("sid", tmp_path)
    splits = {x["id"]: x["split"] for x in r.rows}
    assert splits == {"train__00001__s0": "train", "train__00001__s1": "train", "test__10003__s0": "test", "test__10003__s1": "test"}


def test_template_clean_only_needs_sigma(tmp_path):
    for n in range(3):
        _img(tmp_path / "CBSD68" / f"{n}.png", 100)
    with pytest.raises(PtgError, match="--sigma"):
        build_from_template("cbsd68", tmp_path)
    r = build_from_template("cbsd68", tmp_path, out=tmp_path / "synth", sigma=15)
    assert len(r.rows) == 3 and all(x["input"] != x["target"] for x in r.rows)
    assert r.missing == ["CBSD68: expected 68 pairs, found 3"]


def test_cli_build(tmp_path, capsys):
    _img(tmp_path / "d/input/a.png"), _img(tmp_path / "d/target/a.png"), _img(tmp_path / "d/input/b.png")
    assert main(["manifest", "build", "--root", str(tmp_path / "d"), "--out", str(tmp_path / "m.jsonl")]) == 0
    assert len(load_manifest(tmp_path / "m.jsonl")) == 1
    assert "input/b.png" in capsys.readouterr().err
    assert main(["manifest", "build", "--dataset", "nosuch", "--root", str(tmp_path), "--out", str(tmp_path / "x.jsonl")]) == 1
    assert "unknown dataset 'nosuch'" in capsys.readouterr().err


def test_flat_folder_is_split_by_a_seeded_image_level_ratio(tmp_path):
    for n in range(10):
        _img(tmp_path / f"input/{n}.png"), _img(tmp_path / f"target/{n}.png")
    r = pair_tree(tmp_path, test_fraction=0.3, seed=1)
    assert r.counts() == {"train": 7, "test": 3} and r.drawn == 10
    assert {x["id"]: x["split"] for x in pair_tree(tmp_path, test_fraction=0.3, seed=1).rows} == \
        {x["id"]: x["split"] for x in r.rows}  # same seed, same split
    other = {x["id"]: x["split"] for x in pair_tree(tmp_path, test_fraction=0.3, seed=2).rows}
    assert other != {x["id"]: x["split"] for x in r.rows}
    assert pair_tree(tmp_path, default_split="val").counts() == {"val": 10}
    two = tmp_path / "two"
    for n in range(2):
        _img(two / f"input/{n}.png"), _img(two / f"target/{n}.png")
    assert pair_tree(two, test_fraction=0.2).counts() == {"train": 1, "test": 1}  # each side keeps one
    with pytest.raises(PtgError, match="--test-fraction"):
        pair_tree(tmp_path, test_fraction=1.0)


def test_cli_build_flat_folder_says_where_rows_went_and_trains_on_both_layouts(tmp_path, capsys):
    for n in range(5):
        _img(tmp_path / f"flat/input/{n}.png"), _img(tmp_path / f"flat/target/{n}.png")
        _img(tmp_path / f"split/{'test' if n < 2 else 'train'}/input/{n}.png")
        _img(tmp_path / f"split/{'test' if n < 2 else 'train'}/target/{n}.png")
    assert main(["manifest", "build", "--root", str(tmp_path / "flat"), "--out", str(tmp_path / "flat")]) == 0
    out = capsys.readouterr().out
    assert "5 pairs (train 4, test 1)" in out and "--test-fraction 0.2" in out
    assert len(load_manifest(tmp_path / "flat/manifest.jsonl").split("train")) == 4
    assert main(["manifest", "build", "--root", str(tmp_path / "split"), "--out", str(tmp_path / "split")]) == 0
    out = capsys.readouterr().out
    assert "5 pairs (train 3, test 2)" in out and "drawn" not in out
    ids = [s.id for s in load_manifest(tmp_path / "split/manifest.jsonl").samples]
    assert "train__2" in ids and "test__0" in ids
