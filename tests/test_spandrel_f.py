"""Any pre-trained F from its checkpoint (spandrel): detection, `ptg models inspect`, output equal
to spandrel's own, refine/joint training, safe reading, and refusal of non-1x-restoration models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("spandrel")

from ptg.cli.app import main
from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.models import create_model
from ptg.ptgrm.models.spandrel_f import file_sha256, read_state_dict
from ptg.ptgrm.train.checkpoint import load_checkpoint
from ptg.ptgrm.train.config import resolve
from ptg.ptgrm.train.trainer import train

from .spandrel_zoo import REFUSED, RESTORATION, build, save
from .test_train_units import make_samples, make_store

# Formats/wrappers rotate over the zoo, so every reading path meets real architectures.
_FORMATS = [(".pth", None), (".safetensors", None), (".pth", "params_ema"), (".ckpt", "state_dict")]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("zoo")
    files = {}
    for i, (name, (mod, cls, kw, _arch, _side)) in enumerate(RESTORATION.items()):
        suffix, wrap = _FORMATS[i % len(_FORMATS)]
        net = build(mod, cls, kw)
        try:
            files[name] = save(net, d / f"{name}{suffix}", wrap)
        except RuntimeError:  # tied tensors: safetensors refuses shared storage; fall back to .pth
            files[name] = save(net, d / f"{name}.pth", wrap)
    return files


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("spandrel_train")
    manifest = make_samples(root / "samples")
    return {"manifest": manifest, "store": make_store(root / "s8.zarr", manifest, dim=8)}


def _spandrel_reference(path: Path):
    """spandrel's own loading of the same file (its restricted unpickler / safetensors), extra arches on."""
    import spandrel
    import spandrel_extra_arches

    reg = spandrel.ArchRegistry()
    reg.add(*spandrel.MAIN_REGISTRY)
    reg.add(*spandrel_extra_arches.EXTRA_REGISTRY, ignore_duplicates=True)
    return spandrel.ModelLoader(device="cpu", registry=reg).load_from_file(path).eval()


@pytest.mark.parametrize("name", sorted(RESTORATION))
def test_inspect_names_the_architecture(name, zoo, capsys):
    assert main(["models", "inspect", str(zoo[name]), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["architecture"] == RESTORATION[name][3]
    assert (d["purpose"], d["scale"], d["input_channels"], d["output_channels"]) == ("Restoration", 1, 3, 3)
    assert d["refused"] is None and d["parameters"] > 0 and d["sha256"] == file_sha256(zoo[name])


@pytest.mark.parametrize("name", sorted(RESTORATION))
def test_output_equals_spandrels_own(name, zoo):
    torch.manual_seed(1)
    side = RESTORATION[name][4]
    f = create_model("spandrel", weights=str(zoo[name])).eval()
    ref = _spandrel_reference(zoo[name])
    x = torch.rand(1, 3, side, side)
    with torch.no_grad():
        ours, theirs = f(x).clamp(0, 1), ref(x)  # spandrel's call clamps its output; ptg's F does not
        odd = f(torch.rand(1, 3, side - 3, side + 5))
    assert ours.shape == theirs.shape == x.shape
    assert (ours - theirs).abs().max().item() <= 1e-6
    assert odd.shape == (1, 3, side - 3, side + 5)  # padded to the size requirements and cropped back
    assert f.record == {"architecture": RESTORATION[name][3], "sha256": file_sha256(zoo[name])}


def _train_cfg(data, out, weights, mode="refine", steps=5, crop=32):
    sets = [f"data.crop={crop}", "data.batch_size=2", "model.refiner_args.width=4", "model.refiner_args.long_blocks=1",
            "model.refiner_args.prior_hidden=8", "model.refiner_args.prior_embed=8", "run.threads=1",
            "data.val_max_images=1", "data.val_crop=48", "run.val_every=0"]
    overrides = {"out": str(out), "mode": mode, "steps": steps,
                 "model": {"baseline": "spandrel", "baseline_weights": str(weights)},
                 "data": {"manifest": str(data["manifest"]), "priors": [str(data["store"])]}}
    return resolve(overrides=overrides, sets=sets)


@pytest.mark.parametrize("name", sorted(RESTORATION))
def test_refine_trains_r_on_the_frozen_checkpoint(name, zoo, data, tmp_path):
    out = tmp_path / "run"
    cfg = _train_cfg(data, out, zoo[name], crop=40 if name == "mixdehazenet" else 32)
    final = train(cfg)
    assert final["step"] == 5
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ck["baseline"]["name"] == "spandrel"
    args = ck["baseline"]["args"]
    assert args["architecture"] == RESTORATION[name][3] and args["sha256"] == file_sha256(zoo[name])
    want = read_state_dict(zoo[name])  # F stayed frozen: bit-identical to the file
    got = {k.removeprefix("net."): v for k, v in ck["baseline"]["state_dict"].items()}
    assert set(want) == set(got)
    # SPAN's eval_conv is re-derived from its training branches whenever it runs in eval mode
    # (structural re-parameterisation), so only that copy may differ from the file
    assert all(torch.equal(got[k], want[k]) for k in want if "eval_conv" not in k)


def test_cli_refine_and_joint_finetune(zoo, data, tmp_path):
    common = ["--manifest", str(data["manifest"]), "--priors", str(data["store"]), "--baseline", "spandrel",
              "--baseline-weights", str(zoo["nafnet"]), "--steps", "3", "--crop", "32", "--batch-size", "2", "-q",
              "--set", "model.refiner_args.width=4", "--set", "model.refiner_args.long_blocks=1",
              "--set", "run.threads=1", "--set", "data.val_max_images=1", "--set", "run.val_every=0"]
    assert main(["train", "--out", str(tmp_path / "ref"), "--mode", "refine", *common]) == 0
    assert main(["train", "--out", str(tmp_path / "joint"), "--mode", "joint", *common]) == 0
    ck = load_checkpoint(tmp_path / "joint" / "checkpoints" / "last.pt")
    want = read_state_dict(zoo["nafnet"])
    got = {k.removeprefix("net."): v for k, v in ck["baseline"]["state_dict"].items()}
    changed = [k for k in want if want[k].is_floating_point() and not torch.equal(got[k], want[k])]
    assert changed  # joint: F started from the file and was fine-tuned
    assert ck["config"]["model"]["baseline_args"]["weights"] == str(zoo["nafnet"])


def test_resume_refuses_a_changed_weights_file(zoo, tmp_path):
    with pytest.raises(PtgError, match="SHA-256"):
        create_model("spandrel", weights=str(zoo["dncnn"]), sha256="0" * 64)
    with pytest.raises(PtgError, match="holds DnCNN, not the recorded NAFNet"):
        create_model("spandrel", weights=str(zoo["dncnn"]), architecture="NAFNet")
    with pytest.raises(PtgError, match="--baseline-weights FILE"):
        create_model("spandrel")


class _Payload:
    """Pickles as a call of Path.touch: loading it unsafely creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payload_in_weights_runs_nothing(zoo, data, tmp_path, capsys):
    marker = tmp_path / "ran"
    state = read_state_dict(zoo["nafnet"])
    bad = tmp_path / "evil.pth"
    torch.save({"params": state, "hook": _Payload(marker)}, bad)
    assert main(["models", "inspect", str(bad)]) == 1
    assert "Nothing in it was run" in capsys.readouterr().err
    with pytest.raises(PtgError, match="weights_only"):
        train(_train_cfg(data, tmp_path / "run", bad, steps=1))
    assert not marker.exists()
    torch.load(bad, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.exists()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_non_restoration_models_are_refused(name, tmp_path, capsys):
    mod, cls, kw, purpose, scale = REFUSED[name]
    path = save(build(mod, cls, kw), tmp_path / f"{name}.pth")
    assert main(["models", "inspect", str(path)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"purpose {purpose}, scale {scale}x" in err
    with pytest.raises(PtgError, match=f"purpose {purpose}, scale {scale}x"):
        create_model("spandrel", weights=str(path))


def test_wrappers_prefixes_and_unknown_weights(zoo, tmp_path, capsys):
    state = read_state_dict(zoo["dncnn"])
    other = {k: torch.zeros_like(v) for k, v in state.items()}
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"params": other, "params_ema": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    got = read_state_dict(wrapped)  # the EMA weights win, DataParallel's prefix is stripped
    assert set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)
    unknown = tmp_path / "unknown.pth"
    torch.save({"layer.weight": torch.zeros(3, 3)}, unknown)
    assert main(["models", "inspect", str(unknown)]) == 1
    assert "recognises no architecture" in capsys.readouterr().err
    assert main(["models", "inspect", str(tmp_path / "missing.pth")]) == 1


def test_rebuilt_from_the_run_record_without_the_file(zoo, data, tmp_path):
    """A checkpoint alone rebuilds F (architecture detected from its recorded weights): same output."""
    from ptg.ptgrm.train.checkpoint import build_network

    src = tmp_path / "mprnet.pth"
    src.write_bytes(zoo["mprnet"].read_bytes())
    out = tmp_path / "run"
    train(_train_cfg(data, out, src, steps=1))
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    live = create_model("spandrel", weights=str(src)).eval()
    src.unlink()  # the original file is gone
    rebuilt = build_network("spandrel", ck["baseline"]["args"], ck["baseline"]["state_dict"]).eval()
    x = torch.rand(2, 3, 24, 40)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), live(x))
    with pytest.raises(PtgError, match="holds MPRNet, not the recorded NAFNet"):
        build_network("spandrel", {**ck["baseline"]["args"], "architecture": "NAFNet"}, ck["baseline"]["state_dict"])


def test_resume_reads_the_recorded_file_and_refuses_a_changed_one(zoo, data, tmp_path):
    src = tmp_path / "nafnet.pth"
    src.write_bytes(zoo["nafnet"].read_bytes())
    out = tmp_path / "run"
    train(_train_cfg(data, out, src, steps=2))
    again = resolve(overrides={"out": str(out), "resume": True, "steps": 3})  # the run's own config.yaml
    assert again.model.baseline_args["sha256"] == file_sha256(src)
    assert train(again)["step"] == 3
    net = build(*RESTORATION["dncnn"][:3])  # the same path now holds other weights
    save(net, src)
    with pytest.raises(PtgError, match="SHA-256"):
        train(resolve(overrides={"out": str(out), "resume": True, "steps": 4}))
