"""Trust and run control: hostile pickles refused on every load path (nothing runs), model names
never imported because a file says so, SIGINT saves and resumes exactly, one trainer per folder,
an interrupted start does not block the next command, and deep config merges."""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from ptg.cli.app import main
from ptg.pipeline.core.fsio import atomic_save, file_sha256
from ptg.ptgrm.train.config import resolve, save_yaml
from ptg.ptgrm.train.trainer import train

from .test_train import TINY, _cfg, _ptg_no_fm
from .test_train_units import make_samples, make_store


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file proves that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    manifest = make_samples(root / "samples")
    return {"root": root, "manifest": manifest, "store": make_store(root / "s16.zarr", manifest, dim=16)}


def _hostile(path: Path, marker: Path, as_checkpoint: bool = True) -> Path:
    obj = {"format": "ptg-train/2", "step": 1, "x": Payload(marker)} if as_checkpoint else {"weight": Payload(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def _refused(rc: int, capsys, marker: Path) -> None:
    err = capsys.readouterr().err
    assert rc == 1, err
    assert not marker.exists(), "the pickle's code ran"
    assert "refused to load" in err and "Nothing in it was run" in err, err


def test_hostile_pickle_is_refused_on_every_load_path(data, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    evil = _hostile(tmp_path / "evil.pt", marker)
    _refused(main(["eval", "--ckpt", str(evil), "--out", str(tmp_path / "e1")]), capsys, marker)
    run = tmp_path / "run"
    _hostile(run / "checkpoints" / "best.pt", marker)
    _refused(main(["eval", "--run", str(run), "--manifest", str(data["manifest"])]), capsys, marker)
    _refused(main(["restore", "--ckpt", str(evil), "--input", str(data["manifest"].parent / "input"), "--output",
                   str(tmp_path / "r")]), capsys, marker)
    _refused(main(["export", str(run), "--out", str(tmp_path / "x")]), capsys, marker)
    # train --resume: the run's own config.yaml and a hostile last.pt
    cfg = _cfg(data, run, "joint", steps=2)
    save_yaml(cfg, run / "config.yaml")
    _hostile(run / "checkpoints" / "last.pt", marker)
    _refused(main(["train", "--out", str(run), "--resume", "--quiet"]), capsys, marker)
    # --baseline-weights as a ptg checkpoint and as a plain state dict
    sets = [a for s in TINY for a in ("--set", s)]
    for i, as_ckpt in enumerate((True, False)):
        weights = _hostile(tmp_path / f"w{i}.pt", marker, as_checkpoint=as_ckpt)
        _refused(main(["train", "--manifest", str(data["manifest"]), "--priors", str(data["store"]), "--mode", "refine",
                       "--steps", "1", "--quiet", "--out", str(tmp_path / f"ref{i}"), "--baseline-weights", str(weights)]
                      + sets), capsys, marker)
    # an export folder whose weights file is a pickle (with a matching recorded hash)
    exp = tmp_path / "export"
    exp.mkdir()
    _hostile(exp / "baseline.safetensors", marker, as_checkpoint=False)
    (exp / "config.json").write_text(json.dumps({
        "format": "ptg-export/1", "mode": "baseline", "step": 1, "priors": [], "refiner": None, "prior_stats": None,
        "baseline": {"name": "dncnn", "args": {}, "kind": "restorer", "file": "baseline.safetensors",
                     "sha256": file_sha256(exp / "baseline.safetensors")},
        "prior_transform": {"dims": [], "normalize": "l2", "control": "real", "seed": 0}, "source": {}}))
    rc = main(["restore", "--ckpt", str(exp), "--input", str(data["manifest"].parent / "input"), "--output", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert rc == 1 and not marker.exists() and "cannot read" in err and "safetensors" in err, err


@pytest.mark.parametrize("name", ["h11_untrusted_mod:Net", "os:system", "this:Net"])
def test_checkpoint_naming_a_module_imports_nothing(tmp_path, monkeypatch, capsys, name):
    module = name.split(":")[0]
    marker = tmp_path / "IMPORTED"
    (tmp_path / "h11_untrusted_mod.py").write_text(f"open({str(marker)!r}, 'w')\nimport torch\nNet = torch.nn.Conv2d\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    had = module in sys.modules
    ck = {"format": "ptg-train/2", "step": 1, "mode": "baseline", "config": {}, "priors": [],
          "baseline": {"name": name, "args": {}, "kind": "restorer", "state_dict": {}}, "refiner": None, "ema": None}
    atomic_save(ck, tmp_path / "c.pt")
    assert main(["eval", "--ckpt", str(tmp_path / "c.pt"), "--out", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert "never imports code because a file names it" in err, err
    assert not marker.exists() and (module in sys.modules) == had


def test_sigint_saves_exits_130_and_resumes_to_the_same_digest(data, tmp_path):
    sets = TINY + ["model.baseline_args.width=16", "model.baseline_args.depth=3", "data.crop=48", "data.batch_size=4",
                   "run.checkpoint_every=50", "priors.noise=0.01"]
    args = ["train", "--manifest", str(data["manifest"]), "--priors", str(data["store"]), "--baseline", "unet",
            "--mode", "joint", "--steps", "24", "--save-every", "4", "--seed", "3", "--quiet"]
    args += [a for s in sets for a in ("--set", s)]
    run = tmp_path / "run"
    proc = _ptg_no_fm(args + ["--out", str(run)])
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step_000004.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and f"ptg train --out {run} --resume" in " ".join(err.split())
    assert not (run / "final.json").exists()
    step = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 4 <= step < 24  # saved at the step reached (checkpoint_every=50 would have saved nothing)
    # a second trainer in the same folder is refused while one runs
    proc = _ptg_no_fm(["train", "--out", str(run), "--resume", "--quiet"])
    lock = run / "train.lock"
    while not (lock.is_file() and lock.read_text()) and proc.poll() is None:
        time.sleep(0.005)
    rc = main(["train", "--out", str(run), "--resume", "--quiet"])
    _, err2 = proc.communicate(timeout=300)
    assert rc == 1 and proc.returncode == 0, err2
    resumed = json.loads((run / "final.json").read_text())
    straight = train(resolve(overrides={"out": str(tmp_path / "straight"), "mode": "joint", "steps": 24, "seed": 3,
                                        "model": {"baseline": "unet"}, "run": {"save_every": 4},
                                        "data": {"manifest": str(data["manifest"]), "priors": [str(data["store"])]}},
                             sets=sets))
    assert resumed["digest"] == straight["digest"] and resumed["val"] == straight["val"]


def test_second_trainer_is_refused_while_one_holds_the_folder(data, tmp_path, capsys):
    from ptg.pipeline.core.fsio import exclusive_lock

    run = tmp_path / "run"
    with exclusive_lock(run / "train.lock", "test"):  # as a live trainer holds it
        (run / ".ptg-artifact.json").write_text(json.dumps({"kind": "run"}))
        assert main(["train", "--manifest", str(data["manifest"]), "--mode", "baseline", "--steps", "1", "--quiet",
                     "--out", str(run)] + [a for s in TINY for a in ("--set", s)]) == 1
    err = capsys.readouterr().err
    assert f"the run folder {run} is in use by pid" in " ".join(err.split())


def test_out_folder_rules_and_a_failed_start_does_not_block(data, tmp_path, capsys):
    sets = [a for s in TINY for a in ("--set", s)]
    base = ["train", "--manifest", str(data["manifest"]), "--mode", "baseline", "--steps", "1", "--quiet",
            "--set", "data.augment=none"] + sets
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    assert main(base + ["--out", str(other)]) == 1
    assert "is not a ptg run" in capsys.readouterr().err
    # a start that fails before its first checkpoint (bad first batch) ...
    run = tmp_path / "run"
    assert main(base + ["--out", str(run), "--set", "data.crop=4096"]) == 1
    capsys.readouterr()
    # ... leaves a folder the next command accepts
    assert main(base + ["--out", str(run)]) == 0
    assert (run / "final.json").is_file()
    assert main(base + ["--out", str(other), "--force"]) == 0 and (other / "notes.txt").read_text() == "keep"


def test_config_merge_is_deep_and_old_l2_key_is_read(tmp_path):
    cfg = resolve(preset_name="samples", sets=["model.refiner_args.width=4"])
    assert cfg.model.refiner_args == {"long_blocks": 2, "width": 4}  # the preset's long_blocks survives
    assert cfg.model.baseline_args == {"width": 12, "depth": 3}
    (tmp_path / "c.yaml").write_text("priors: {l2_normalize: false}\nmodel: {baseline_args: {depth: 2}}\n")
    cfg = resolve(tmp_path / "c.yaml", preset_name="samples")
    assert cfg.priors.normalize == "none" and cfg.model.baseline_args == {"width": 12, "depth": 2}
    from ptg.pipeline.core.errors import PtgError

    with pytest.raises(PtgError, match="contradicts"):
        resolve(sets=["priors.l2_normalize=true", "priors.normalize=standardize"])


def test_resume_from_run_config_never_imports_a_named_user_network(tmp_path):
    from ptg.pipeline.core.errors import PtgError
    from ptg.ptgrm.models import uses_priors

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {baseline: 'os:system'}\n")
    with pytest.raises(PtgError, match="add --baseline os:system"):
        resolve(overrides={"out": str(run), "resume": True})
    cfg = resolve(overrides={"out": str(run), "resume": True, "model": {"baseline": "os:system"}})
    assert cfg.model.baseline == "os:system"  # named on the command line: the user's choice
    assert uses_priors("ptgrm") and not uses_priors("ptgrm-large") and not uses_priors("ptgrm", prior_mode="none")
    assert uses_priors("unet-f") and not uses_priors("unet") and not uses_priors("pkg.mod:Net")


def test_every_arm_can_train_with_the_store_views(data, tmp_path):
    root, manifest = tmp_path, data["manifest"]
    store = make_store(root / "flips.zarr", manifest, dim=8, views="flips")
    base = {"mode": "baseline", "steps": 1, "data": {"manifest": str(manifest)}}
    final = train(resolve(overrides={**base, "out": str(root / "a"), "data": {**base["data"], "priors": [str(store)]}},
                          sets=TINY))
    assert final["augment"] == ["identity", "hflip", "vflip", "hvflip"] and final["prior_dims"] == []
    with pytest.warns(UserWarning, match="no priors store is given: training crops use the identity view only"):
        final = train(resolve(overrides={**base, "out": str(root / "b")}, sets=TINY))
    assert final["augment"] == ["identity"]


def test_eval_and_restore_load_a_user_network_only_with_trust_network(data, tmp_path, capsys):
    name = "tests.test_models_registry:TinyUserNet"
    run = tmp_path / "run"
    train(_cfg(data, run, "baseline", steps=2, sets=[f"model.baseline={name}", "model.baseline_args={}"]))
    images = data["manifest"].parent / "input"
    assert main(["eval", "--run", str(run), "--out", str(tmp_path / "e0"), "--no-images", "--grids", "0"]) == 1
    assert f"--trust-network {name}" in capsys.readouterr().err
    assert main(["restore", "--ckpt", str(run), "--input", str(images), "--output", str(tmp_path / "r0")]) == 1
    assert not (tmp_path / "r0").exists()
    trust = ["--trust-network", name]
    assert main(["eval", "--run", str(run), "--out", str(tmp_path / "e1"), "--no-images", "--grids", "0", *trust]) == 0
    assert json.loads((tmp_path / "e1" / "metrics.json").read_text())["images"]
    assert main(["restore", "--ckpt", str(run), "--input", str(images), "--output", str(tmp_path / "r1"), *trust]) == 0
    assert len(list((tmp_path / "r1").glob("*.png"))) == len(list(images.iterdir()))
