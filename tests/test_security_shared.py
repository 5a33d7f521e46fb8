"""Security cases for a teammate's run folder and manifests (issue 21): paths a run records are
followed only from your own run (or with --trust-recorded), and every command that reads a
manifest honours --allow-outside the same way."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ptg.cli.app import main
from ptg.pipeline.core import fsio
from ptg.pipeline.core.errors import PtgError
from tests.test_restore import build_run
from tests.test_security import opened_files

pytestmark = pytest.mark.filterwarnings("ignore::ptg.pipeline.storage.store.RandomInitWarning")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    return build_run(tmp_path_factory.mktemp("shared_run"))


def _not_yours(monkeypatch) -> None:
    """As if every file here belonged to a teammate: this process runs under another uid."""
    uid = os.geteuid() + 4242
    monkeypatch.setattr(fsio.os, "geteuid", lambda: uid)


# ---------------------------------------------------------------------------------------------
# the rule


def test_written_by_you_needs_your_uid_and_no_one_else_writing(tmp_path, monkeypatch):
    f = tmp_path / "best.pt"
    f.write_bytes(b"x")
    os.chmod(f, 0o644)
    assert fsio.written_by_you(f)
    os.chmod(f, 0o646)  # anyone may rewrite it: not yours any more
    assert not fsio.written_by_you(f)
    os.chmod(f, 0o664)
    monkeypatch.setattr(fsio.os, "getegid", lambda: os.stat(f).st_gid + 1)  # a group shared with others
    assert not fsio.written_by_you(f)
    monkeypatch.undo()
    assert fsio.written_by_you(f)  # group-writable by your own primary group (umask 002)
    link = tmp_path / "link.pt"
    link.symlink_to(f)
    assert not fsio.written_by_you(link) and not fsio.written_by_you(tmp_path / "absent.pt")
    _not_yours(monkeypatch)
    assert not fsio.written_by_you(f)


def test_recorded_paths_inside_the_run_pass_links_and_bucket_urls_do_not(tmp_path, monkeypatch):
    _not_yours(monkeypatch)
    run = tmp_path / "run"
    ck = run / "checkpoints" / "best.pt"
    ck.parent.mkdir(parents=True)
    ck.write_bytes(b"x")
    (run / "m.jsonl").write_text("")
    fsio.check_recorded_paths(ck, {"manifest": str(run / "m.jsonl"), "root": None}, trust=False, fixes="--manifest M")
    (run / "out.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(PtgError, match=r"records the manifest .*out.jsonl.*--manifest M.*--trust-recorded"):
        fsio.check_recorded_paths(ck, {"manifest": str(run / "out.jsonl")}, trust=False, fixes="--manifest M")
    with pytest.raises(PtgError, match=r"records the store 's3://bucket/p'"):  # your credentials, their bucket
        fsio.check_recorded_paths(ck, {"store": "s3://bucket/p"}, trust=False, fixes="--priors STORE")
    fsio.check_recorded_paths(ck, {"manifest": "/anything", "store": "s3://b/p"}, trust=True, fixes="--manifest M")


# ---------------------------------------------------------------------------------------------
# `ptg eval --run` on your own run and on a teammate's


def test_eval_own_run_follows_recorded_paths(built, tmp_path):
    assert main(["eval", "--run", str(built["run"]), "--out", str(tmp_path / "e"), "--grids", "0", "--no-images"]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["n_scored"] > 0


def test_eval_teammates_run_does_not_open_recorded_manifest_or_store(built, tmp_path, monkeypatch, capsys):
    _not_yours(monkeypatch)
    out = tmp_path / "e"
    with opened_files() as seen:
        assert main(["eval", "--run", str(built["run"]), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert str(built["manifest"]) in err and "--manifest M" in err and "--trust-recorded" in err
    assert str(built["manifest"]) not in seen and not out.exists()

    # the manifest named: the recorded store is still refused, by name, before any image is written
    with opened_files() as seen:
        assert main(["eval", "--run", str(built["run"]), "--manifest", str(built["manifest"]), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "priors store" in err and str(built["store"]) in err and "--priors STORE" in err
    assert not [p for p in seen if p.startswith(str(built["store"]))]
    assert not (out / "metrics.json").exists()

    # named on the command line, or trusted explicitly: it runs
    assert main(["eval", "--run", str(built["run"]), "--manifest", str(built["manifest"]), "--priors", str(built["store"]),
                 "--out", str(tmp_path / "named"), "--grids", "0", "--no-images"]) == 0
    assert main(["eval", "--run", str(built["run"]), "--trust-recorded", "--out", str(tmp_path / "trusted"),
                 "--grids", "0", "--no-images"]) == 0
    a = json.loads((tmp_path / "named" / "metrics.json").read_text())["mean"]["ptgrm"]["psnr"]
    b = json.loads((tmp_path / "trusted" / "metrics.json").read_text())["mean"]["ptgrm"]["psnr"]
    assert a == pytest.approx(b, abs=1e-9)


def test_eval_run_writable_by_others_is_not_yours(built, tmp_path, capsys):
    ck = built["run"] / "checkpoints" / "best.pt"
    mode = stat.S_IMODE(os.stat(ck).st_mode)
    os.chmod(ck, mode | stat.S_IWOTH)
    try:
        assert main(["eval", "--run", str(built["run"]), "--out", str(tmp_path / "e")]) == 1
    finally:
        os.chmod(ck, mode)
    assert "others can write it" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# --allow-outside on every command that reads a manifest


def _outside_manifest(tmp_path: Path) -> tuple[Path, Path]:
    """A manifest whose rows read images outside its folder (by '..'), with degradation records."""
    rng = np.random.default_rng(0)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    rows = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(outside / f"r{i}.png")
        rows.append({"id": f"r{i}", "input": f"../elsewhere/r{i}.png", "target": f"../elsewhere/r{i}.png",
                     "split": "test" if i == 5 else "train", "task": "denoise", "degradation": {"sigma": 5.0 * (i + 1)}})
    m = tmp_path / "data" / "m.jsonl"
    m.parent.mkdir()
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return m, outside


def test_commands_refuse_manifest_paths_outside_unless_allowed(tmp_path, capsys):
    m, outside = _outside_manifest(tmp_path)
    store = tmp_path / "deg.zarr"
    extract = ["extract-priors", "--manifest", str(m), "--model", "degradation", "--out", str(store)]
    pred = ["eval", "--pred", str(outside), "--manifest", str(m), "--out", str(tmp_path / "s.json"), "--split", "train"]
    probe = ["priors", "probe", str(store), "--manifest", str(m)]
    distill = ["distill", "--priors", str(store), "--manifest", str(m), "--out", str(tmp_path / "dist"), "--steps", "1",
               "--quiet", "--device", "cpu"]
    assert main(extract) == 1 and "--allow-outside" in capsys.readouterr().err
    assert not store.exists()
    for argv in (extract, pred, probe, distill):
        if argv is not extract:
            assert main(argv) == 1, argv
            assert "--allow-outside" in capsys.readouterr().err, argv
        assert main([*argv, "--allow-outside"]) == 0, argv
    assert json.loads((tmp_path / "s.json").read_text())["mean"]["psnr"] == float("inf")  # the targets are the inputs
    assert (tmp_path / "dist" / "student.safetensors").is_file()


# ---------------------------------------------------------------------------------------------
# crafted export configs: every field is type-checked into a named error


def _set(cfg: dict, dotted: str, value) -> dict:
    """A copy of ``cfg`` with the dotted key (``a.b.0.c``) set to ``value``, or removed when ``value`` is DROP."""
    cfg = json.loads(json.dumps(cfg))
    *path, last = dotted.split(".")
    node = cfg
    for k in path:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if isinstance(node, list):
        node[int(last)] = value
    elif value is DROP:
        node.pop(last)
    else:
        node[last] = value
    return cfg


DROP = object()
CRAFTED = [
    ("baseline", DROP), ("baseline", "dncnn"), ("baseline.name", 3), ("baseline.args", []), ("baseline.args", {"nope": 1}),
    ("baseline.args", {"width": "wide"}), ("baseline.args", {"width": 10**9}), ("baseline.file", None),
    ("baseline.sha256", 5), ("baseline.kind", ["restorer"]), ("refiner", "ptgrm"), ("refiner.args", {"width": -3}),
    ("step", "7"), ("step", DROP), ("step", 1.5), ("mode", "sideways"), ("mode", 3), ("priors", {}),
    ("priors.0", "store"), ("priors.0.dim", "16"), ("priors.0.dim", 2**40), ("priors.0.dim", 0), ("priors.0.path", None),
    ("priors.0.views", "identity"), ("priors.0.metadata", []), ("prior_transform", DROP), ("prior_transform.dims", "16"),
    ("prior_transform.dims", [True]), ("prior_transform.normalize", "bogus"), ("prior_transform.control", 5),
    ("prior_transform.seed", "0"), ("prior_stats", {"file": 3}), ("students", "students/0"), ("students", [3]),
    ("students", ["../x"]), ("source", []), ("source.config", "x"), ("source.step", "7"),
]


@pytest.fixture(scope="module")
def export_cfg(built, tmp_path_factory) -> tuple[Path, dict]:
    from ptg.ptgrm.artifacts import export_run

    out = tmp_path_factory.mktemp("export") / "exp"
    return out, export_run(built["run"], out)


@pytest.mark.parametrize("key,value", CRAFTED, ids=[f"{k}={'DROP' if v is DROP else repr(v)[:20]}" for k, v in CRAFTED])
def test_crafted_export_config_is_a_named_error(export_cfg, tmp_path, key, value):
    import shutil

    from ptg.ptgrm.artifacts import load

    src, cfg = export_cfg
    folder = tmp_path / "exp"
    shutil.copytree(src, folder)
    (folder / "config.json").write_text(json.dumps(_set(cfg, key, value)))
    with pytest.raises(PtgError) as err:
        load(folder)
    assert "\n" not in str(err.value).strip()  # one line


def test_export_config_not_a_dict_is_a_named_error(export_cfg, tmp_path):
    from ptg.ptgrm.artifacts import load

    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(PtgError, match="not a `ptg export` folder"):
        load(folder)
    src, _ = export_cfg
    assert load(src)[1].step == 7  # the real one loads


def test_restore_with_a_teammates_run_opens_no_local_encoder_file_it_names(built, tmp_path, monkeypatch, capsys):
    """The tiny CLIP's architecture is a local .json recorded in the run: followed for your own run
    (tests/test_restore.py), refused by name for someone else's."""
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.png").write_bytes((built["data"] / "astronaut_in.png").read_bytes())
    arch = built["run"].parent / "tiny-clip.json"
    _not_yours(monkeypatch)
    with opened_files() as seen:
        assert main(["restore", "--ckpt", str(built["run"]), "--input", str(inp), "--output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "encoder architecture recorded" in err and "tiny-clip.json" in err and "--priors STORE" in err
    assert str(arch) not in seen and not (tmp_path / "o").exists()
    assert main(["restore", "--ckpt", str(built["run"]), "--input", str(inp), "--output", str(tmp_path / "o"),
                 "--priors", str(built["store"])]) == 0  # named by the user: fine


def test_crafted_encoder_spec_is_a_named_error(tmp_path):
    from ptg.ptgrm.artifacts.info import PriorStoreInfo
    from ptg.ptgrm.infer import EncoderPriors

    for spec in ({"name": 3}, {"name": "imagenet", "seed": "0"}, {"name": "imagenet", "evil": 1}, ["imagenet"]):
        entry = PriorStoreInfo.from_entry({"path": "s.zarr", "dim": 8, "metadata": {"encoder": {"spec": spec}}})
        with pytest.raises(PtgError, match="encoder spec"):
            EncoderPriors([entry])


CRAFTED_CKPT = [("baseline", DROP), ("baseline", "x"), ("baseline.state_dict", DROP), ("baseline.state_dict", [1]),
                ("baseline.args", [1]), ("step", "x"), ("mode", 3), ("mode", "weird"), ("priors", "x"),
                ("priors.0.dim", "16"), ("refiner", [1]), ("ema", [1]), ("config", "x"), ("config.data", "x"),
                ("config.data.manifest", 5), ("prior_transform", {"dims": "x"})]


@pytest.mark.parametrize("key,value", CRAFTED_CKPT, ids=[f"{k}={'DROP' if v is DROP else repr(v)[:20]}" for k, v in CRAFTED_CKPT])
def test_crafted_checkpoint_fields_are_a_named_error(built, tmp_path, key, value):
    from ptg.ptgrm.artifacts import load

    ck = torch.load(built["run"] / "checkpoints" / "best.pt", weights_only=True)
    *path, last = key.split(".")
    node = ck
    for k in path:
        node = node[int(k)] if isinstance(node, list) else node[k]
    if value is DROP:
        node.pop(last)
    else:
        node[last] = value
    torch.save(ck, tmp_path / "c.pt")
    with pytest.raises(PtgError, match=r"checkpoint .*c\.pt: .*(must be|is missing)"):
        load(tmp_path / "c.pt")
