"""Restoring without the foundation model: `--prior-from` a distilled student in `ptg restore` and
`ptg eval` (teacher and student side by side), and a student carried inside `ptg export`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ptg.cli.app import main
from ptg.ptgrm.distill import DistillConfig, distill
from ptg.ptgrm.train.trainer import train

from .test_export import WHOLE
from .test_train import _NO_FM, _cfg
from .test_train_units import make_samples, make_store


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior_from")
    manifest = make_samples(root / "samples")
    store = make_store(root / "s16.zarr", manifest, dim=16)
    d = {"root": root, "manifest": manifest, "store": store, "store8": make_store(root / "s8.zarr", manifest, dim=8)}
    train(_cfg(d, root / "run", "joint", steps=2, sets=WHOLE))
    distill(DistillConfig(priors=str(store), manifest=str(manifest), out=str(root / "student"), steps=3, size=32,
                          batch_size=4, threads=1, device="cpu"))
    distill(DistillConfig(priors=str(d["store8"]), manifest=str(manifest), out=str(root / "student8"), steps=2, size=32,
                          batch_size=4, threads=1, device="cpu"))
    return d


def test_export_with_a_student_restores_without_any_foundation_model(data, tmp_path):
    root = data["root"]
    inp = data["manifest"].parent / "input"
    assert main(["restore", "--ckpt", str(root / "run"), "--input", str(inp), "--prior-from", str(root / "student"),
                 "--output", str(tmp_path / "a")]) == 0
    exp = tmp_path / "exported"
    assert main(["export", str(root / "run"), "--out", str(exp), "--student", str(root / "student")]) == 0
    assert json.loads((exp / "config.json").read_text())["students"] == ["students/0"]
    # no --priors, no store, no encoder: the export's student computes the priors, in a process
    # where importing open_clip / transformers / diffusers fails
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["restore", "--ckpt", str(exp), "--input", str(inp), "--output", str(tmp_path / "b")]
    done = subprocess.run([sys.executable, "-c", _NO_FM, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "computed by the distilled student" in " ".join(done.stdout.split())
    names = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert names and names == sorted(p.name for p in (tmp_path / "b").glob("*.png"))
    for n in names:  # the same student, loaded from the export or from its own folder: the same bits
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes()
    # eval of the export uses its student too, beside the teacher's stores when they are readable
    assert main(["eval", "--ckpt", str(exp), "--out", str(tmp_path / "e"), "--grids", "0", "--no-images"]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["info"]["prior_from"] == [str(exp / "students" / "0")]
    assert (tmp_path / "e" / "teacher_vs_student.md").is_file()


def test_eval_shows_teacher_and_student_priors_side_by_side(data, tmp_path):
    out = tmp_path / "e"
    assert main(["eval", "--run", str(data["root"] / "run"), "--prior-from", str(data["root"] / "student"),
                 "--out", str(out), "--grids", "0", "--no-images"]) == 0
    table = (out / "teacher_vs_student.md").read_text()
    assert "F + R, teacher priors PSNR" in table and "student − teacher PSNR" in table
    student = json.loads((out / "metrics.json").read_text())
    teacher = json.loads((out / "teacher" / "metrics.json").read_text())
    assert student["info"]["prior_from"] == [str(data["root"] / "student")]
    assert student["mean"]["baseline"] == teacher["mean"]["baseline"]  # F does not see priors


def test_a_student_of_another_teacher_is_refused(data, tmp_path, capsys):
    capsys.readouterr()
    assert main(["restore", "--ckpt", str(data["root"] / "run"), "--input", str(data["manifest"].parent / "input"),
                 "--prior-from", str(data["root"] / "student8"), "--output", str(tmp_path / "x")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "imitates" in err and "Distil a student" in err
    assert main(["export", str(data["root"] / "run"), "--out", str(tmp_path / "exp"), "--student",
                 str(data["root"] / "student8")]) == 1
    assert not (tmp_path / "exp").exists()  # refused before anything was written
