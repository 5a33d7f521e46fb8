"""F's outputs cached like priors: `ptg extract-outputs` (crash-safe, resumable, verified), then
`ptg train --mode refine --f-outputs` with neither F's nor G's packages importable, the crops of
``Ihat`` cut where ``Id`` is cut, and the run's record of which F made the outputs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("spandrel")

from ptg.cli.app import main
from ptg.pipeline.storage.imagestore import ImageStore
from ptg.pipeline.core.imageio import read_image
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.ptgrm.artifacts import load
from ptg.ptgrm.f_outputs import SETTINGS_KEY, f_fingerprint, open_cached_outputs, output_key
from ptg.ptgrm.models import create_model

from .spandrel_zoo import RESTORATION, build, save
from .test_train_units import make_samples, make_store

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("spandrel", "spandrel_extra_arches", "pyoidn", "neuro_low_light", "open_clip", "transformers", "diffusers")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fout")
    manifest = make_samples(root / "samples")
    weights = save(build(*RESTORATION["nafnet"][:3]), root / "nafnet.pth")
    return {"root": root, "manifest": manifest, "store": make_store(root / "s8.zarr", manifest, dim=8), "weights": weights}


def _extract(data, out, *extra) -> int:
    return main(["extract-outputs", "--manifest", str(data["manifest"]), "--baseline", "spandrel", "--baseline-weights",
                 str(data["weights"]), "--out", str(out), "--device", "cpu", *extra])


def _arrays(store: Path) -> dict[str, np.ndarray]:
    st = ImageStore(store)
    return {k: np.array(st.array(k)) for k in st._index}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / ".ptgpath")}


def test_killed_mid_extraction_then_rerun_equals_an_uninterrupted_run(data, tmp_path):
    whole = tmp_path / "whole"
    assert _extract(data, whole, "--views", "flips", "--shard-mb", "0.01") == 0  # one output per shard
    n = len(ImageStore(whole))
    assert n == 9 * 4
    killed = tmp_path / "killed"
    # the same extraction, slowed by its progress callback so the kill lands mid-way
    # the same thread count as this process: CPU convolutions sum in another order on another count
    script = textwrap.dedent(f"""
        import time
        import torch
        torch.set_num_threads({torch.get_num_threads()})
        from ptg.pipeline.datasets.manifest import load_manifest
        from ptg.pipeline.datasets.views import parse_views
        from ptg.ptgrm.f_outputs import extract_outputs
        from ptg.ptgrm.models import create_model
        f = create_model("spandrel", weights={str(data["weights"])!r}).eval()
        extract_outputs(f, "spandrel", load_manifest({str(data["manifest"])!r}).samples, parse_views("flips"),
                        {str(killed)!r}, shard_bytes=10485, on_progress=lambda k: time.sleep(0.3))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=_env())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((killed / "commits").glob("shard-*.json"))) < 3:
        assert proc.poll() is None, "the extraction ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((killed / "commits").glob("shard-*.json")))
    assert 3 <= done < n  # killed mid-way, some outputs committed
    assert _extract(data, killed, "--views", "flips", "--shard-mb", "0.01") == 0  # resumes
    a, b = _arrays(whole), _arrays(killed)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert ImageStore(killed).verify() == []
    assert not list(killed.rglob("*.tmp-*"))


def test_outputs_are_f_of_each_view_in_the_input_orientation(data, tmp_path):
    out = tmp_path / "o32"
    assert _extract(data, out, "--views", "flips", "--dtype", "float32") == 0
    st = ImageStore(out)
    f = create_model("spandrel", weights=str(data["weights"])).eval()
    meta = st.settings[SETTINGS_KEY]
    assert meta["fingerprint"] == f_fingerprint("spandrel", f) and meta["dtype"] == "float32"
    s = load_manifest(data["manifest"]).samples[0]
    img = read_image(s.input)
    from ptg.pipeline.core.fsio import file_sha256

    with torch.no_grad():
        for view, back in (("identity", lambda a: a), ("hflip", lambda a: a[:, ::-1]), ("vflip", lambda a: a[::-1])):
            y = f(torch.from_numpy(np.ascontiguousarray(back(img)).transpose(2, 0, 1).copy())[None])[0]
            got = st.array(output_key(file_sha256(s.input), meta["fingerprint"], view))
            assert np.array_equal(got, back(y.permute(1, 2, 0).numpy()))  # F(view(Id)) stored unviewed
    # another F into the same store is refused by name
    assert main(["extract-outputs", "--manifest", str(data["manifest"]), "--baseline", "oidn", "--out", str(out)]) == 1


def test_training_crops_ihat_where_it_crops_id(data, tmp_path):
    from ptg.ptgrm.train.config import DataConfig, PriorConfig
    from ptg.ptgrm.train.data import TrainDataset

    out = tmp_path / "o32"
    assert _extract(data, out, "--views", "flips", "--dtype", "float32") == 0
    samples = load_manifest(data["manifest"]).split("train")
    outs = open_cached_outputs(out, samples)
    f = create_model("spandrel", weights=str(data["weights"])).eval()
    ds = TrainDataset(samples, [], DataConfig(crop=24), PriorConfig(), ("identity", "hflip", "vflip"), seed=3,
                      need_target=False, f_outputs=outs)
    flips = {"identity": lambda a: a, "hflip": lambda a: a[:, ::-1], "vflip": lambda a: a[::-1]}
    seen = set()
    for index in range(12):
        item = ds[(0, index)]
        s = samples[index % len(samples)]
        img = read_image(s.input)
        h, w = img.shape[:2]
        top, left, view, _ = ds.draw(0, index, h, w)
        seen.add(view)
        with torch.no_grad():
            full = f(torch.from_numpy(np.ascontiguousarray(flips[view](img)).transpose(2, 0, 1).copy())[None])[0]
        # the crop box in the flipped image's coordinates
        t = h - top - 24 if view == "vflip" else top
        l = w - left - 24 if view == "hflip" else left
        assert torch.equal(item["ihat"], full[:, t : t + 24, l : l + 24])
        assert torch.equal(item["x"], torch.from_numpy(np.ascontiguousarray(
            flips[view](img[top : top + 24, left : left + 24]).transpose(2, 0, 1))))
    assert len(seen) > 1


def test_refine_trains_with_f_and_g_packages_blocked(data, tmp_path):
    outs = tmp_path / "outs"
    assert _extract(data, outs) == 0
    run = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys
        BLOCKED = {BLOCKED!r}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked by the test: {{name}}")
                return None
        sys.meta_path.insert(0, Block())
        from ptg.cli.app import main
        rc = main(["train", "--mode", "refine", "--f-outputs", {str(outs)!r}, "--manifest", {str(data["manifest"])!r},
                   "--priors", {str(data["store"])!r}, "--out", {str(run)!r}, "--steps", "3", "--crop", "32",
                   "--batch-size", "2", "-q", "--set", "model.refiner_args.width=4", "--set", "run.threads=1",
                   "--set", "data.val_max_images=1"])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        sys.exit(rc)
    """)
    res = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    restorer, info = load(run)
    f = create_model("spandrel", weights=str(data["weights"]))
    assert info.baseline.kind == "cached-outputs" and info.baseline.name == "f-outputs"
    assert info.baseline.args["f"] == "spandrel" and info.baseline.weights_sha256 == f_fingerprint("spandrel", f)
    assert sum(p.numel() for p in restorer.f.parameters()) == 0  # no F in the run


def test_a_folder_of_outputs_from_another_tool_trains_too(data, tmp_path):
    from ptg.pipeline.core.imageio import write_image

    folder = tmp_path / "folder"
    f = create_model("spandrel", weights=str(data["weights"])).eval()
    for s in load_manifest(data["manifest"]).samples:
        with torch.no_grad():
            y = f(torch.from_numpy(read_image(s.input).transpose(2, 0, 1).copy())[None])[0]
        write_image(folder / f"{s.id}.png", y.clamp(0, 1).permute(1, 2, 0).numpy())
    run = tmp_path / "run"
    assert main(["train", "--mode", "refine", "--f-outputs", str(folder), "--manifest", str(data["manifest"]), "--priors",
                 str(data["store"]), "--out", str(run), "--steps", "2", "--crop", "32", "--batch-size", "2", "-q",
                 "--set", "model.refiner_args.width=4", "--set", "data.val_max_images=1"]) == 0
    _, info = load(run)
    assert info.baseline.kind == "cached-outputs" and info.baseline.args["kind"] == "folder"
    assert main(["train", "--out", str(run), "--resume", "--steps", "3", "-q"]) == 0  # resumes from its config.yaml
    assert load(run)[1].step == 3
    # a cache is for refine mode only
    assert main(["train", "--mode", "joint", "--f-outputs", str(folder), "--manifest", str(data["manifest"]),
                 "--priors", str(data["store"]), "--out", str(tmp_path / "j"), "--steps", "1", "-q"]) == 1


def _metrics(folder: Path) -> dict:
    import json

    return json.loads((folder / "metrics.json").read_text())


def test_eval_with_cached_outputs_agrees_with_live_f(data, tmp_path):
    """A refine run on a live spandrel F, scored live and with its cached outputs (float32, float16)."""
    from .test_spandrel_f import _train_cfg
    from ptg.ptgrm.train.trainer import train

    run = tmp_path / "run"
    train(_train_cfg({"manifest": data["manifest"], "store": data["store"]}, run, data["weights"], steps=2))
    evals = {}
    for dtype in ("float32", "float16"):
        outs = tmp_path / f"outs-{dtype}"
        assert _extract(data, outs, "--split", "test", "--dtype", dtype) == 0
        assert main(["eval", "--run", str(run), "--f-outputs", str(outs), "-o", str(tmp_path / dtype), "--device", "cpu",
                     "--grids", "0", "--no-images"]) == 0
        evals[dtype] = _metrics(tmp_path / dtype)
    assert main(["eval", "--run", str(run), "-o", str(tmp_path / "live"), "--device", "cpu", "--grids", "0",
                 "--no-images"]) == 0
    live = _metrics(tmp_path / "live")
    assert live["info"]["f_source"] == "live" and evals["float16"]["info"]["f_source"].startswith("cached store")
    # measured on these 128x85 photos: abs(dPSNR) <= 0.0075 dB, abs(dSSIM) <= 1.5e-5 for float32 and float16 alike. The
    # live eval pads Id to R's size multiple before F runs (F sees 88 rows); the cache holds F of the unpadded image
    for dtype, tol in (("float32", 0.02), ("float16", 0.02)):  # dB
        for method in ("baseline", "ptgrm"):
            for a, b in zip(live["images"], evals[dtype]["images"]):
                assert abs(a[method]["psnr"] - b[method]["psnr"]) <= tol, (dtype, method, a, b)
    # outputs of another F are refused
    other = tmp_path / "other"
    save(build(*RESTORATION["nafnet"][:3], seed=1), tmp_path / "other.pth")
    assert main(["extract-outputs", "--manifest", str(data["manifest"]), "--baseline", "spandrel", "--baseline-weights",
                 str(tmp_path / "other.pth"), "--out", str(other), "--split", "test"]) == 0
    assert main(["eval", "--run", str(run), "--f-outputs", str(other), "-o", str(tmp_path / "x"), "--device", "cpu"]) == 1


def test_outputs_only_run_scores_cached_or_live_and_refuses_new_photos(data, tmp_path, capsys):
    outs = tmp_path / "outs"
    assert _extract(data, outs, "--dtype", "float32") == 0
    run = tmp_path / "run"
    assert main(["train", "--mode", "refine", "--f-outputs", str(outs), "--manifest", str(data["manifest"]), "--priors",
                 str(data["store"]), "--out", str(run), "--steps", "2", "--crop", "32", "--batch-size", "2", "-q",
                 "--set", "model.refiner_args.width=4", "--set", "data.val_max_images=1"]) == 0
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "-o", str(tmp_path / "e0"), "--device", "cpu"]) == 1
    assert "--f-outputs OUTS" in capsys.readouterr().err
    assert main(["eval", "--run", str(run), "--f-outputs", str(outs), "-o", str(tmp_path / "cached"), "--device", "cpu",
                 "--grids", "0"]) == 0
    assert main(["eval", "--run", str(run), "--baseline", "spandrel", "--baseline-weights", str(data["weights"]),
                 "-o", str(tmp_path / "live"), "--device", "cpu", "--grids", "0"]) == 0
    cached, live = _metrics(tmp_path / "cached"), _metrics(tmp_path / "live")
    for a, b in zip(cached["images"], live["images"]):
        assert abs(a["ptgrm"]["psnr"] - b["ptgrm"]["psnr"]) <= 0.02
    other = save(build(*RESTORATION["nafnet"][:3], seed=2), tmp_path / "other.pth")
    assert main(["eval", "--run", str(run), "--baseline", "spandrel", "--baseline-weights", str(other),
                 "-o", str(tmp_path / "wrong"), "--device", "cpu"]) == 1
    assert "fingerprint" in capsys.readouterr().err
    photo = load_manifest(data["manifest"]).samples[0].input
    assert main(["restore", "--ckpt", str(run), "-i", str(photo), "-o", str(tmp_path / "restored")]) == 1
    err = capsys.readouterr().err
    assert "cannot restore new photos" in err and "cached outputs of F 'spandrel'" in err and "--baseline NAME" in err
    # the F that made the outputs, given live, restores them
    assert main(["restore", "--ckpt", str(run), "-i", str(photo), "-o", str(tmp_path / "restored"), "--priors",
                 str(data["store"]), "--baseline", "spandrel", "--baseline-weights", str(data["weights"])]) == 0
    assert (tmp_path / "restored" / f"{photo.stem}.png").is_file()
