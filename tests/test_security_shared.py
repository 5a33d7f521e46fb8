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
from ptg.pipeline import fsio
from ptg.pipeline.errors import PtgError
from tests.test_restore import build_run
from tests.test_security import opened_files

pytestmark = pytest.mark.filterwarnings("ignore::ptg.pipeline.store.RandomInitWarning")
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


def test_recorded_paths_inside_the_artifact_or_remote_pass(tmp_path, monkeypatch):
    _not_yours(monkeypatch)
    ck = tmp_path / "run" / "best.pt"
    ck.parent.mkdir()
    ck.write_bytes(b"x")
    (ck.parent / "m.jsonl").write_text("")
    fsio.check_recorded_paths(ck, {"manifest": str(ck.parent / "m.jsonl"), "store": "s3://bucket/p", "root": None},
                              trust=False, fixes="--manifest M")
    (ck.parent / "out.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(PtgError, match=r"records the manifest .*out.jsonl.*--manifest M.*--trust-recorded"):
        fsio.check_recorded_paths(ck, {"manifest": str(ck.parent / "out.jsonl")}, trust=False, fixes="--manifest M")
    fsio.check_recorded_paths(ck, {"manifest": "/anything"}, trust=True, fixes="--manifest M")


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
