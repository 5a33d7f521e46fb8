import json

import numpy as np
import pytest

from ptg.cli.app import main
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.imageio import read_image
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.pipeline.datasets.synth import (AllInOneParams, BlurParams, JpegParams, LowLightParams, NoiseParams, disk_kernel,
                                motion_kernel, synthesize)


def _outputs(out):
    return {p.name: p.read_bytes() for p in sorted((out / "input").glob("*.png"))}


@pytest.mark.parametrize("task,params", [("denoise", NoiseParams(25)), ("denoise", NoiseParams(50, gray=True)),
                                         ("lowlight", LowLightParams()), ("blur", BlurParams("motion")),
                                         ("blur", BlurParams("defocus")), ("jpeg", JpegParams((10, 30))),
                                         ("allinone", AllInOneParams())])
def test_deterministic_and_order_independent(photo_dir, tmp_path, task, params):
    a = synthesize(photo_dir, tmp_path / "a", task, params, seed=3)
    b = synthesize(photo_dir, tmp_path / "b", task, params, seed=3)
    c = synthesize(photo_dir, tmp_path / "c", task, params, seed=4)
    assert _outputs(tmp_path / "a") == _outputs(tmp_path / "b")
    assert _outputs(tmp_path / "a") != _outputs(tmp_path / "c")
    # one image alone gets the same degradation as within the folder (seeded by id, not order)
    solo = tmp_path / "solo"
    solo.mkdir()
    (solo / "coffee.png").write_bytes((photo_dir / "coffee.png").read_bytes())
    synthesize(solo, tmp_path / "d", task, params, seed=3)
    assert _outputs(tmp_path / "d")["coffee.png"] == _outputs(tmp_path / "a")["coffee.png"]
    rows = [json.loads(l) for l in a.read_text().splitlines()]
    assert len(rows) == 4 and all(r["task"] == task and r["degradation"] for r in rows)
    assert len(load_manifest(a, check_sizes=True)) == 4


def test_noise_level_matches_sigma(photo_dir, tmp_path):
    m = load_manifest(synthesize(photo_dir, tmp_path / "n", "denoise", NoiseParams(25), seed=0))
    resid = np.concatenate([(read_image(s.input) - read_image(s.target)).ravel() for s in m.samples])
    # clipping at 0/1 and 8-bit rounding shrink the spread slightly
    assert 21 / 255 < resid.std() < 26 / 255


def test_gray_noise_is_single_channel(photo_dir, tmp_path):
    m = load_manifest(synthesize(photo_dir, tmp_path / "g", "denoise", NoiseParams(15, gray=True), seed=0))
    assert read_image(m.samples[0].input, channels=None).shape[-1] == 1


def test_lowlight_records_params_and_darkens(photo_dir, tmp_path):
    m = load_manifest(synthesize(photo_dir, tmp_path / "l", "lowlight", seed=0))
    for s in m.samples:
        d = s.extra["degradation"]
        assert set(d) == {"exposure", "gamma", "photons", "read_sigma"}
        assert read_image(s.input).mean() < 0.5 * read_image(s.target).mean()


def test_blur_kernels_recorded(photo_dir, tmp_path):
    out = tmp_path / "b"
    m = load_manifest(synthesize(photo_dir, out, "blur", BlurParams("motion"), seed=0))
    k = np.load(out / m.samples[0].extra["degradation"]["kernel"])
    assert k.ndim == 2 and abs(k.sum() - 1) < 1e-5
    assert abs(motion_kernel(9, 30).sum() - 1) < 1e-6 and disk_kernel(3.0)[3, 3] > 0


def test_bad_inputs(tmp_path, photo_dir):
    with pytest.raises(PtgError, match="not found"):
        synthesize(tmp_path / "nope", tmp_path / "o", "denoise")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PtgError, match="no images"):
        synthesize(tmp_path / "empty", tmp_path / "o", "denoise")
    with pytest.raises(PtgError, match="unknown task"):
        synthesize(photo_dir, tmp_path / "o", "sharpen")


def test_cli_synth(photo_dir, tmp_path, capsys):
    assert main(["data", "synth", "--task", "lowlight", "--src", str(photo_dir), "--out", str(tmp_path / "o"),
                 "--exposure", "0.1,0.2", "--split", "train"]) == 0
    assert len(load_manifest(tmp_path / "o/manifest.jsonl").split("train")) == 4
    assert main(["data", "synth", "--task", "lowlight", "--src", str(photo_dir), "--out", str(tmp_path / "p"),
                 "--exposure", "0.3"]) == 1
    assert "--exposure" in capsys.readouterr().err
    assert main(["data", "synth", "--task", "denoise", "--sigma", "-5", "--src", str(photo_dir), "--out", str(tmp_path / "q")]) == 1


def test_jpeg_records_quality_and_lower_quality_is_worse(photo_dir, tmp_path):
    from ptg.pipeline.core.metrics import psnr

    def mean_psnr(q: int) -> float:
        m = load_manifest(synthesize(photo_dir, tmp_path / f"j{q}", "jpeg", JpegParams((q, q)), seed=0))
        assert all(s.extra["degradation"] == {"quality": q} for s in m.samples)
        return float(np.mean([psnr(read_image(s.input), read_image(s.target)) for s in m.samples]))

    low, high = mean_psnr(5), mean_psnr(90)
    assert low < high - 5  # quality 5 leaves visible blocks, 90 almost none
    assert high < 60  # but 90 is still lossy: the input is a real JPEG round trip, not the clean image
    with pytest.raises(PtgError, match="quality"):
        synthesize(photo_dir, tmp_path / "bad", "jpeg", JpegParams((0, 120)))


def test_allinone_draws_recorded_tasks(tmp_path):
    from PIL import Image

    from tests.conftest import small_photo

    src = tmp_path / "many"
    src.mkdir()
    base = small_photo("astronaut", 24)
    for i in range(30):  # ids drive the draws; 30 images see every choice with near certainty
        Image.fromarray(np.roll(base, i, axis=1)).save(src / f"im{i:02d}.png")
    m = load_manifest(synthesize(src, tmp_path / "a", "allinone", AllInOneParams(sigmas=(10.0, 30.0, 50.0)), seed=1))
    tasks = {s.extra["degradation"]["task"] for s in m.samples}
    assert tasks == {"denoise", "lowlight", "blur", "jpeg"}
    for s in m.samples:
        d = s.extra["degradation"]
        assert s.extra["task"] == "allinone"
        if d["task"] == "denoise":
            assert d["sigma"] in (10.0, 30.0, 50.0)
        if d["task"] == "blur":
            assert d["kind"] in ("motion", "defocus") and (tmp_path / "a" / d["kernel"]).is_file()
    blind = load_manifest(synthesize(src, tmp_path / "b", "allinone", AllInOneParams(choices=("noise",), sigmas=(10.0, 50.0))))
    assert {s.extra["degradation"]["sigma"] for s in blind.samples} == {10.0, 50.0}
    with pytest.raises(PtgError, match="choices"):
        AllInOneParams(choices=("rain",))


def test_cli_synth_jpeg_and_allinone(photo_dir, tmp_path):
    assert main(["data", "synth", "--src", str(photo_dir), "--out", str(tmp_path / "j"), "--task", "jpeg", "--quality", "20"]) == 0
    rows = [json.loads(l) for l in (tmp_path / "j" / "manifest.jsonl").read_text().splitlines()]
    assert {r["degradation"]["quality"] for r in rows} == {20}
    assert main(["data", "synth", "--src", str(photo_dir), "--out", str(tmp_path / "a"), "--task", "allinone",
                 "--choices", "noise", "--sigmas", "10,30,50"]) == 0
    rows = [json.loads(l) for l in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert all(r["degradation"]["task"] == "denoise" and r["degradation"]["sigma"] in (10, 30, 50) for r in rows)
    assert main(["data", "synth", "--src", str(photo_dir), "--out", str(tmp_path / "x"), "--task", "jpeg", "--quality", "0,99"]) == 1
