from ptg.cli.app import main
from ptg.pipeline.imageio import read_image
from ptg.pipeline.manifest import load_manifest
from ptg.pipeline.samples import SKIMAGE_PHOTOS, SKIMAGE_TEST


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
