from ptg.cli.app import main
from ptg.pipeline.core.imageio import read_image
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.pipeline.datasets.samples import SKIMAGE_PHOTOS, SKIMAGE_TEST


def test_samples_real_photos_split_by_image(tmp_path):
    assert main(["data", "samples", "--out", str(tmp_path / "s"), "--max-side", "96", "--no-opencv"]) == 0
    m = load_manifest(tmp_path / "s/manifest.jsonl", check_sizes=True)
    assert len(m) == len(SKIMAGE_PHOTOS) >= 8
    assert {s.id for s in m.split("test")} == set(SKIMAGE_TEST)
    # the stereo pair is one scene: both views on the same side
    assert {s.split for s in m.samples if s.id.startswith("motorcycle_")} == {"train"}
    for s in m.samples:
        x = read_image(s.target)
        assert x.shape[-1] == 3 and max(x.shape[:2]) <= 96 and x.std() > 0.05  # a real photo, not flat


def test_samples_lowlight(tmp_path):
    assert main(["data", "samples", "--out", str(tmp_path / "l"), "--task", "lowlight", "--max-side", "64", "--no-opencv"]) == 0
    m = load_manifest(tmp_path / "l/manifest.jsonl")
    assert all("exposure" in s.extra["degradation"] for s in m.samples)


def test_samples_bad_args(tmp_path, capsys):
    assert main(["data", "samples", "--out", str(tmp_path / "x"), "--task", "sharpen"]) == 1
    assert main(["data", "samples", "--out", str(tmp_path / "x"), "--max-side", "8"]) == 1
    assert "--max-side" in capsys.readouterr().err


def test_samples_and_synth_refuse_an_unrelated_out_and_delete_nothing(tmp_path, photo_dir, capsys):
    mine = tmp_path / "mine"
    (mine / "clean").mkdir(parents=True)
    (mine / "clean" / "holiday.png").write_bytes((photo_dir / "chelsea.png").read_bytes())
    assert main(["data", "samples", "--out", str(mine), "--max-side", "64", "--no-opencv"]) == 1
    assert "not a ptg dataset" in capsys.readouterr().err
    assert main(["data", "synth", "--src", str(photo_dir), "--out", str(mine)]) == 1
    # forced: still refused, because clean/ holds an image the command did not write; nothing deleted
    assert main(["data", "samples", "--out", str(mine), "--max-side", "64", "--no-opencv", "--force"]) == 1
    assert "holiday.png" in capsys.readouterr().err
    assert (mine / "clean" / "holiday.png").read_bytes() == (photo_dir / "chelsea.png").read_bytes()


def test_samples_rerun_into_its_own_dataset_replaces_only_its_photos(tmp_path):
    out = tmp_path / "s"
    assert main(["data", "samples", "--out", str(out), "--max-side", "64", "--no-opencv"]) == 0
    (out / "notes.txt").write_text("mine")
    (out / "clean" / "README").write_text("mine too")  # not an image: never a row, never deleted
    assert main(["data", "samples", "--out", str(out), "--max-side", "80", "--no-opencv"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "clean" / "README").read_text() == "mine too"
    assert max(read_image(out / "clean" / "chelsea.png").shape[:2]) == 80
