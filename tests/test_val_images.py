"""Validation images while training (files and TensorBoard), and the optional wandb logger: offline
it writes scalars and images; off, it is never imported."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.train.config import resolve
from ptg.ptgrm.train.trainer import train

from .test_train import TINY
from .test_train_units import make_samples, make_store


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("valimg")
    manifest = make_samples(root / "samples")
    return {"manifest": manifest, "store": make_store(root / "s16.zarr", manifest, dim=16)}


def _cfg(data, out, steps, sets=()):
    overrides = {"out": str(out), "mode": "joint", "steps": steps,
                 "data": {"manifest": str(data["manifest"]), "priors": [str(data["store"])]}}
    # two validation images (the samples' 2 test rows), whole 128² photos: panel crops come from the trainer
    return resolve(overrides=overrides, sets=TINY + ["data.val_max_images=0", "data.val_crop=0", "data.crop=24"] + list(sets))


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_fifty_steps_validating_every_ten_write_images_at_five_steps(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    run = tmp_path / "run"
    train(_cfg(data, run, 50, ["run.val_every=10", "run.log_every=10", "run.val_images=4", "run.val_image_side=128"]))
    steps = sorted(p.name for p in (run / "val_images").iterdir())
    assert steps == [f"step_{s:06d}" for s in (10, 20, 30, 40, 50)]
    files = sorted((run / "val_images" / "step_000050").iterdir())
    assert len(files) == 2  # 4 asked, the manifest has 2 validation (test) images
    with Image.open(files[0]) as im:
        # input | F | F + R | target (the 128 px wide photos) with 4 px gaps, under a 26 px caption strip
        assert im.width == 4 * 128 + 3 * 4 and 26 < im.height <= 128 + 26
        strip = np.asarray(im.convert("RGB"))
        size = im.size
    target_panel = strip[26:, 3 * 132:]
    input_panel = strip[26:, :128]
    assert np.abs(target_panel.astype(int) - input_panel).mean() > 2  # noisy input vs clean target: not the same picture
    # the same crops every time: the input and target panels do not change between steps
    first = np.asarray(Image.open(sorted((run / "val_images" / "step_000010").iterdir())[0]).convert("RGB"))
    assert np.array_equal(first[26:, :128], input_panel) and np.array_equal(first[26:, 3 * 132:], target_panel)
    # TensorBoard: the same images, by step, read back from the event files
    acc = EventAccumulator(str(run / "tb"), size_guidance={IMAGES: 0})
    acc.Reload()
    tags = acc.Tags()[IMAGES]
    assert len(tags) == 2 and all(t.startswith("val_images/") for t in tags)
    events = acc.Images(tags[0])
    assert [e.step for e in events] == [10, 20, 30, 40, 50]
    assert (events[0].width, events[0].height) == size
    # a few MB at most: strips and their TensorBoard copies of 5 validations
    grown = _size(run / "val_images") + _size(run / "tb")
    assert grown < 3 * 2**20, grown


def test_val_images_zero_writes_none_and_bad_counts_are_named(data, tmp_path):
    run = tmp_path / "run"
    train(_cfg(data, run, 2, ["run.val_images=0"]))
    assert not (run / "val_images").exists()
    with pytest.raises(PtgError, match="run.val_images=17"):
        _cfg(data, tmp_path / "bad", 2, ["run.val_images=17"])
    with pytest.raises(PtgError, match="run.val_image_side=16"):
        _cfg(data, tmp_path / "bad", 2, ["run.val_image_side=16"])


def test_panel_crops_are_bounded(data, tmp_path):
    import torch

    from ptg.ptgrm.train.val_images import centre_crop, safe_name

    t = torch.arange(3 * 600 * 300, dtype=torch.float32).reshape(3, 600, 300)
    c = centre_crop(t, 256)
    assert c.shape == (3, 256, 256) and c[0, 0, 0] == t[0, 172, 22]
    assert safe_name("s30/../a b?") == "s30_.._a_b" and safe_name("///") == "image"


_OFF = textwrap.dedent("""
    import sys
    from ptg.ptgrm.train.config import resolve
    from ptg.ptgrm.train.trainer import train
    sets = sys.argv[4:]
    train(resolve(overrides={"out": sys.argv[1], "mode": "joint", "steps": 2,
                             "data": {"manifest": sys.argv[2], "priors": [sys.argv[3]]}}, sets=sets))
    assert "wandb" not in sys.modules, "wandb was imported with run.wandb unset"
    print("no wandb")
""")


def test_wandb_is_never_imported_when_off(data, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PTG_WANDB_PROJECT"}
    proc = subprocess.run([sys.executable, "-c", _OFF, str(tmp_path / "run"), str(data["manifest"]), str(data["store"]),
                           *TINY, "run.val_images=1"], env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no wandb" in proc.stdout
    assert (tmp_path / "run" / "val_images").is_dir() and not (tmp_path / "run" / "wandb").exists()


def test_wandb_offline_run_writes_scalars_images_and_config(data, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install 'ptg[wandb]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # not the user's ~/.config/wandb
    monkeypatch.delenv("PTG_WANDB_PROJECT", raising=False)
    run = tmp_path / "run"
    train(_cfg(data, run, 4, ["run.val_every=2", "run.log_every=2", "run.val_images=1", "run.wandb=ptg-test"]))
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, list((run / "wandb").iterdir())
    images = sorted((offline[0] / "files" / "media" / "images").rglob("*.png"))
    assert len(images) == 2  # one validation image at steps 2 and 4
    history, config = _wandb_records(next(offline[0].glob("run-*.wandb")))
    by_step = {int(h["_step"]): h for h in history}
    assert set(by_step) == {2, 4}
    for step in (2, 4):
        assert by_step[step]["train/loss"] > 0 and by_step[step]["val/psnr"] > 10
        image = {k.rsplit(".", 1)[-1]: v for k, v in by_step[step].items() if k.startswith("val_images/00_")}
        assert image["_type"] == "image-file" and image["format"] == "png" and image["width"] > 0
    assert config["run"]["wandb"] == "ptg-test" and config["run"]["val_images"] == 1 and config["steps"] == 4
    assert (run / "wandb_id.txt").read_text().strip() in offline[0].name


def _wandb_records(path: Path) -> tuple[list[dict], dict]:
    """The history rows and the config of a wandb offline run file (a LevelDB log of protobuf
    `Record`s after a 7-byte ':W&B' header; wandb no longer ships a Python reader)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, part, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's trailer: zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        part += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST fragment
            records.append(part)
            part = b""
    history, config = [], {}
    for raw in records:
        r = pb.Record()
        r.ParseFromString(raw)
        if r.WhichOneof("record_type") == "history":
            history.append({i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif r.WhichOneof("record_type") in ("config", "run"):  # the config comes with the run record
            updates = r.config.update if r.WhichOneof("record_type") == "config" else r.run.config.update
            config.update({u.key or ".".join(u.nested_key): json.loads(u.value_json) for u in updates})
    return history, {k: v.get("value", v) if isinstance(v, dict) else v for k, v in config.items()}


def test_wandb_missing_package_is_a_named_error(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(PtgError, match=r"run.wandb='proj' needs the wandb package"):
        train(_cfg(data, tmp_path / "run", 2, ["run.wandb=proj"]))
