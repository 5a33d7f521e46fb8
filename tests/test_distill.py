"""`ptg distill`: the student registry, distilling a tiny store, the student's output space,
resume after an interruption, clear errors, and a process that cannot import a foundation model."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ptg.cli.app import main
from ptg.pipeline.core.errors import Interrupted, PtgError
from ptg.pipeline.core.imageio import read_image
from ptg.pipeline.datasets.manifest import load_manifest
from ptg.ptgrm import students as S
from ptg.ptgrm.artifacts import PriorStoreInfo, load_student, student_priors
from ptg.ptgrm.distill import DistillConfig, distill
from ptg.ptgrm.distill_agreement import probe_report
from ptg.ptgrm.models.summary import count_macs

from .test_train import _NO_FM
from .test_train_units import make_samples, make_store

TINY = {"size": 32, "batch_size": 4, "threads": 1, "device": "cpu"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    manifest = make_samples(root / "samples")  # 9 real photos at 128 px: 7 train, 2 test
    return {"manifest": manifest, "store": make_store(root / "s.zarr", manifest, dim=16, views="flips"),
            "partial": make_store(root / "p.zarr", manifest, dim=16, drop_ids=("chelsea",))}


def _cfg(data, out, **kw) -> DistillConfig:
    return DistillConfig(priors=str(data["store"]), manifest=str(data["manifest"]), out=str(out), **{**TINY, **kw})


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_is_explicit_and_refuses_duplicates_and_unknown_names():
    assert [s.name for s in S.list_students()] == ["cnn", "efficientnet-lite0"]
    with pytest.raises(ValueError, match="already registered"):
        S.register_student("cnn", summary="again", mean=(0, 0, 0), std=(1, 1, 1))(lambda d: None)
    with pytest.raises(PtgError, match="unknown student 'resnet'.*cnn.*efficientnet-lite0"):
        S.create_student("resnet", 8)
    with pytest.raises(PtgError, match="positive integer"):
        S.create_student("cnn", 0)


@pytest.mark.parametrize("name", ["cnn", "efficientnet-lite0"])
@pytest.mark.parametrize("dim", [192, 512, 1280, 1804])
def test_students_fit_5m_parameters_and_1_gmac_at_224(name, dim):
    kw = {"pretrained": False} if name == "efficientnet-lite0" else {}
    with torch.device("meta"):
        net = S.create_student(name, dim, **kw)
    assert sum(p.numel() for p in net.parameters()) <= 5_000_000
    assert count_macs(net, "restorer", 224, 224) <= 1_000_000_000
    with torch.device("meta"):
        assert net(torch.empty(2, 3, 224, 224)).shape == (2, dim)


def test_lite0_student_starts_from_the_real_imagenet_weights():
    from ptg.pipeline.encoders.imagenet import packaged_weights

    net = S.create_student("efficientnet-lite0", 8)
    first = next(iter(torch.load(packaged_weights(), map_location="cpu", weights_only=True).values()))
    assert torch.equal(net.trunk.conv_stem.weight, first)
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 8)


# ---------------------------------------------------------------------------------------------
# distilling


def test_distil_learns_the_prior_and_writes_the_folder(data, tmp_path):
    meta = distill(_cfg(data, tmp_path / "d", steps=120, val_every=60, lr=3e-3))
    files = {p.name for p in (tmp_path / "d").iterdir()}
    assert {"student.safetensors", "student.json", "agreement.json", ".ptg-artifact.json"} <= files
    assert "state.pt" not in files
    assert meta["teacher"]["fingerprint"] == "test-16" and meta["dim"] == 16
    assert meta["teacher"]["views"] == ["identity", "hflip", "vflip", "hvflip"]
    assert meta["preprocessing"]["size"] == 32 and meta["steps"] == 120 and len(meta["history"]) == 2
    a = meta["agreement"]
    # the synthetic prior is the mean colour of 4 image cells: learnable, so the student must beat
    # the train-mean prior on the held-out photos
    assert a["mse_normalized"] < a["mse_normalized_mean_prior"]
    # finished with the same settings: nothing is redone
    assert distill(_cfg(data, tmp_path / "d", steps=120, val_every=60, lr=3e-3))["weights_sha256"] == meta["weights_sha256"]
    with pytest.raises(PtgError, match="finished student made with other settings"):
        distill(_cfg(data, tmp_path / "d", steps=7))


def test_loaded_student_gives_priors_in_the_store_space(data, tmp_path):
    meta = distill(_cfg(data, tmp_path / "d", steps=3))
    student = load_student(tmp_path / "d")
    test = load_manifest(data["manifest"]).split("test")
    x = torch.stack([torch.from_numpy(read_image(s.input)).permute(2, 0, 1) for s in test])  # [2, 3, 128, 128]
    g = student(x)
    assert g.shape == (2, 16) and g.dtype == torch.float32
    assert torch.equal(g, load_student(tmp_path / "d")(x))  # reload: bit-identical
    assert torch.allclose(student.priors_for(None, read_image(test[0].input))[0], g[:1], atol=1e-6)  # batch of 1
    # the same agreement the run reported, recomputed through the loader
    from ptg.pipeline.storage.store import open_priors, sample_keys

    teacher = torch.from_numpy(open_priors(data["store"]).get(sample_keys(test)))
    cos = torch.nn.functional.cosine_similarity(g, teacher, dim=1).mean().item()
    assert cos == pytest.approx(meta["agreement"]["cos"], abs=1e-5)
    # a zero head predicts 0 in the standardised space: the loader must map it to the train mean
    head = student.net.head
    torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
    reader = open_priors(data["store"])
    train = load_manifest(data["manifest"]).split("train")
    mean = reader.get_all_views(sample_keys(train)).reshape(-1, 16).astype(np.float64).mean(0)
    assert np.allclose(student(x).numpy(), mean[None], atol=1e-5)
    entry = PriorStoreInfo("s", 16, ("identity",), {"fingerprint": "test-16"})
    student.check_matches(entry)
    with pytest.raises(PtgError, match="Distil a student from that store"):
        student.check_matches(PriorStoreInfo("s", 16, ("identity",), {"fingerprint": "other"}))
    source = student_priors([tmp_path / "d"], [entry])
    assert torch.equal(source(None, read_image(test[1].input))[0], load_student(tmp_path / "d").priors_for(None, read_image(test[1].input))[0])
    with pytest.raises(PtgError, match="takes 2 prior"):
        student_priors([tmp_path / "d"], [entry, entry])


@pytest.mark.parametrize("how", ["sigint", "crash"])
def test_an_interrupted_run_reports_no_success_and_resumes_to_the_same_weights(data, tmp_path, how):
    straight = distill(_cfg(data, tmp_path / "a", steps=8, val_every=4))
    seen = []

    def stop_at_6(n, **kw):
        seen.append(n)
        if len(seen) == 6:
            if how == "sigint":  # handled: state saved at step 6, then Interrupted (exit 130)
                os.kill(os.getpid(), signal.SIGINT)
            else:  # anything else that kills the loop: the state of step 4 is what is left
                raise RuntimeError("crash")

    with pytest.raises(Interrupted if how == "sigint" else RuntimeError) as err:
        distill(_cfg(data, tmp_path / "b", steps=8, val_every=4), on_progress=stop_at_6)
    if how == "sigint":
        assert err.value.exit_code == 130 and "Run the same command again" in str(err.value)
    assert not (tmp_path / "b" / "student.json").exists()
    assert torch.load(tmp_path / "b" / "state.pt", weights_only=True)["step"] == (6 if how == "sigint" else 4)
    with pytest.raises(PtgError, match="is not a finished `ptg distill` output"):
        load_student(tmp_path / "b")
    resumed = distill(_cfg(data, tmp_path / "b", steps=8, val_every=4))
    assert resumed["weights_sha256"] == straight["weights_sha256"]
    assert resumed["history"] == straight["history"]


def test_a_factorised_head_takes_the_best_low_rank_read_out():
    rng = torch.Generator().manual_seed(0)
    w = torch.randn(6, 2, generator=rng) @ torch.randn(2, 5, generator=rng)  # rank 2
    b = torch.randn(5, generator=rng)
    head = torch.nn.Sequential(torch.nn.Linear(6, 3, bias=False), torch.nn.Linear(3, 5))
    S.set_linear_head(head, w, b)
    x = torch.randn(4, 6, generator=rng)
    assert torch.allclose(head(x), x @ w + b, atol=1e-5)
    lite = S.create_student("efficientnet-lite0", 300, pretrained=False, head_rank=8)
    assert isinstance(lite.head, torch.nn.Sequential) and lite.head[0].out_features == 8


def test_probe_report_reads_numeric_degradation_fields_from_teacher_and_student():
    from ptg.pipeline.datasets.manifest import Sample

    rng = np.random.default_rng(1)
    sig = rng.uniform(5, 50, 30)
    rows = [Sample(f"s{i}", Path("x"), None, "train" if i < 20 else "test", i + 1,
                   {"degradation": {"sigma": float(sig[i]), "gray": False, "kind": "gauss"}}) for i in range(30)]
    teacher = sig[:, None] * rng.normal(size=(1, 8)) + 0.01 * rng.normal(size=(30, 8))
    student = rng.normal(size=(30, 8))  # knows nothing of sigma
    rep = probe_report(rows[:20], rows[20:], teacher[:20], teacher[20:], student[:20], student[20:])
    assert list(rep) == ["sigma"]  # booleans and strings are not probed
    assert rep["sigma"]["teacher_r2"] > 0.9 > rep["sigma"]["student_r2"]


# ---------------------------------------------------------------------------------------------
# errors, through the CLI


def _cli(data, out, *extra, store="store"):
    return main(["distill", "--priors", str(data[store]), "--manifest", str(data["manifest"]), "--out", str(out),
                 "--steps", "2", "--size", "32", "--threads", "1", "--quiet", *extra])


@pytest.mark.parametrize("extra,store,message", [
    (("--student", "resnet"), "store", "unknown student 'resnet'; choose one of: cnn"),
    (("--normalize", "zscore"), "store", "--normalize 'zscore' is not supported"),
    ((), "partial", "1 of 9 manifest rows have no prior"),
    (("--student-arg", "depth"), "store", "must be KEY=VALUE"),
    (("--student-arg", "depth=3"), "store", "cannot build student 'cnn'"),
])
def test_bad_inputs_give_one_clear_line(data, tmp_path, capsys, extra, store, message):
    assert _cli(data, tmp_path / "d", *extra, store=store) == 1
    assert message in " ".join(capsys.readouterr().err.split())


def test_a_missing_store_and_a_foreign_folder_are_refused(data, tmp_path, capsys):
    data = {**data, "store": tmp_path / "nope.zarr"}
    assert _cli(data, tmp_path / "d") == 1
    assert "is not a priors store" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["distill", "--priors", str(data["manifest"]), "--manifest", str(data["manifest"]),
                 "--out", str(tmp_path / "mine"), "--quiet"]) == 1
    assert "is not a ptg student" in " ".join(capsys.readouterr().err.split())


# ---------------------------------------------------------------------------------------------
# no foundation model in the process


_LOAD_NO_FM = textwrap.dedent("""
    import sys
    from importlib.abc import MetaPathFinder

    class Block(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("open_clip", "transformers", "diffusers"):
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, Block())
    import torch
    from ptg.ptgrm.artifacts import load_student

    g = load_student(sys.argv[1])(torch.rand(2, 3, 40, 56))
    assert g.shape == (2, 16), g.shape
    assert not [m for m in sys.modules if m.split(".")[0] in ("open_clip", "transformers", "diffusers")]
""")


def test_distil_and_load_without_foundation_model_imports(data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "d"
    args = ["distill", "--priors", str(data["store"]), "--manifest", str(data["manifest"]), "--out", str(out),
            "--steps", "3", "--size", "32", "--threads", "1", "--quiet"]
    done = subprocess.run([sys.executable, "-c", _NO_FM, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "agreement on the test split (2 images)" in " ".join(done.stdout.split())
    assert json.loads((out / "student.json").read_text())["steps"] == 3
    done = subprocess.run([sys.executable, "-c", _LOAD_NO_FM, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
