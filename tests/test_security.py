"""Safe with a teammate's files (issue 21): each crafted file below is blocked with a named error,
and the harm it asks for does not happen (the victim file is unchanged, no outside file is opened,
no module is imported). Fast cases; `benchmarks/security.py` runs the resource cases with their
memory measured."""
from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ptg.pipeline.core import fsio, limits
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.imageio import image_size, read_image

SECRET = "victim's data\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside every ptg folder that a crafted symlink points at."""
    p = tmp_path / "elsewhere" / "victim.txt"
    p.parent.mkdir()
    p.write_text(SECRET)
    return p


@contextmanager
def opened_files():
    """Record every path opened while the block runs (``sys.addaudithook('open')``; hooks cannot be
    removed, so this one records only while ``active``)."""
    seen: list[str] = []
    state = {"on": True}

    def hook(event, args):
        if state["on"] and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            seen.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)
    try:
        yield seen
    finally:
        state["on"] = False


# ---------------------------------------------------------------------------------------------
# 1. writes never follow a link


def test_lock_file_symlink_is_refused_and_victim_not_truncated(tmp_path, victim):
    lock = tmp_path / "store" / "writer.lock"
    lock.parent.mkdir()
    lock.symlink_to(victim)
    with pytest.raises(PtgError, match="symbolic link"):
        with fsio.exclusive_lock(lock, "the priors store"):
            pass
    assert victim.read_text() == SECRET


def test_lock_file_that_is_a_fifo_is_refused(tmp_path):
    lock = tmp_path / "train.lock"
    os.mkfifo(lock)
    with pytest.raises(PtgError, match="not a regular file"):
        with fsio.exclusive_lock(lock, "the run"):
            pass


def test_planted_temp_file_symlink_is_not_written_through(tmp_path, victim):
    target = tmp_path / "out" / "manifest.jsonl"
    target.parent.mkdir()
    fsio._tmp_path(target).symlink_to(victim)  # the exact name this process would use
    fsio.atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and not target.is_symlink()
    assert victim.read_text() == SECRET


def test_rename_over_a_symlinked_target_replaces_the_link_only(tmp_path, victim):
    target = tmp_path / "config.yaml"
    target.symlink_to(victim)
    fsio.atomic_write_text(target, "x: 1\n")
    assert victim.read_text() == SECRET and not target.is_symlink()


def test_run_log_csv_symlink_is_refused(tmp_path, victim):
    from ptg.ptgrm.train.logs import Logs

    run = tmp_path / "run"
    run.mkdir()
    (run / "log.csv").symlink_to(victim)
    with pytest.raises(PtgError, match="log.csv is a symbolic link"):
        Logs(run, 0, enabled=True)
    assert victim.read_text() == SECRET


def test_open_nofollow_refuses_link_and_truncates_only_regular_files(tmp_path, victim):
    link = tmp_path / "out.txt"
    link.symlink_to(victim)
    for mode in ("w", "a"):
        with pytest.raises(PtgError, match="symbolic link"):
            fsio.open_nofollow(link, mode)
    assert victim.read_text() == SECRET
    real = tmp_path / "real.txt"
    real.write_text("old")
    with fsio.open_nofollow(real, "a") as f:
        f.write("+")
    assert real.read_text() == "old+"


def test_claim_out_dir_refuses_a_folder_holding_a_symlink_even_with_force(tmp_path, victim):
    out = tmp_path / "run"
    fsio.claim_out_dir(out, "run")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.pt").symlink_to(victim)
    for force in (False, True):
        with pytest.raises(PtgError, match="last.pt is a symbolic link"):
            fsio.claim_out_dir(out, "run", force=force)
    assert victim.read_text() == SECRET


def test_default_out_folder_that_is_a_symlink_is_refused(tmp_path, victim):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval").symlink_to(victim.parent)
    with pytest.raises(PtgError, match="default --out folder .* is a symbolic link"):
        fsio.claim_out_dir(run / "eval", "eval", named=False)
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.txt"]  # no marker written there


def test_eval_default_out_inside_a_shared_run_is_claimed(tmp_path, victim):
    """`ptg eval --run RUN` claims RUN/eval like any --out: a planted link in it is refused."""
    from ptg.cli.app import main

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "table.md").symlink_to(victim)
    assert main(["eval", "--run", str(run)]) == 1  # refused (no checkpoint here either: the claim is the guard)
    assert victim.read_text() == SECRET


def test_stale_tmp_cleanup_does_not_delete_through_a_symlinked_folder(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    dead = outside / f".x{fsio.TMP_MARK}999999999"
    dead.write_text("keep")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "priors").symlink_to(outside)
    assert fsio.remove_stale_tmp(tmp_path / "store" / "priors") == []
    assert dead.read_text() == "keep"


def test_remove_regular_leaves_symlink_targets_alone(tmp_path, victim):
    link = tmp_path / "shard.partial"
    link.symlink_to(victim)
    assert fsio.remove_regular(link) is False and victim.read_text() == SECRET
    plain = tmp_path / "a.partial"
    plain.write_text("x")
    assert fsio.remove_regular(plain) is True and not plain.exists()


# ---------------------------------------------------------------------------------------------
# 2. an artifact only names its own files


@pytest.mark.parametrize("name", ["/etc/passwd", "../victim.txt", "a/b.safetensors", "..", "", 7, None])
def test_plain_member_refuses_names_leading_outside(tmp_path, name):
    with pytest.raises(PtgError, match="not a plain file name"):
        fsio.plain_member(tmp_path, name, "weights file")


def test_plain_member_refuses_a_symlink_out(tmp_path, victim):
    (tmp_path / "student.safetensors").symlink_to(victim)
    with pytest.raises(PtgError, match="symbolic link"):
        fsio.plain_member(tmp_path, "student.safetensors", "student weights")
    assert fsio.plain_member(tmp_path, "weights.safetensors") == tmp_path / "weights.safetensors"


# ---------------------------------------------------------------------------------------------
# 3. manifests stay inside their root


def _png(path: Path, size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 128, np.uint8)).save(path)
    return path


def test_shared_manifest_cannot_read_outside_its_root(tmp_path):
    from ptg.pipeline.datasets.manifest import ManifestError, load_manifest

    secret = _png(tmp_path / "home" / "private.png")
    root = tmp_path / "shared"
    _png(root / "a.png")
    (root / "link").symlink_to(secret.parent)
    rows = [{"id": "ok", "input": "a.png", "split": "test"},
            {"id": "abs", "input": str(secret), "split": "test"},
            {"id": "dotdot", "input": "../home/private.png", "split": "test"},
            {"id": "sym", "input": "link/private.png", "split": "test"}]
    m = root / "m.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with opened_files() as seen:
        with pytest.raises(ManifestError) as err:
            load_manifest(m, check_sizes=True)
    assert {p.id for p in err.value.problems} == {"abs", "dotdot", "sym"}
    assert "--allow-outside" in str(err.value)
    assert not [p for p in seen if "private" in p]  # never opened, not even for its header
    assert len(load_manifest(m, outside="allow").samples) == 4  # the user's explicit choice


def test_train_config_file_cannot_allow_outside_by_itself(tmp_path):
    from ptg.ptgrm.train.config import resolve

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data:\n  manifest: m.jsonl\n  allow_outside: true\n")
    with pytest.raises(PtgError, match="allow_outside .* only from the command line"):
        resolve(cfg, {"out": str(tmp_path / "run")})
    assert resolve(cfg, {"out": str(tmp_path / "run"), "data": {"allow_outside": True}}).data.allow_outside


def test_manifest_build_leaves_out_links_leading_outside_the_root(tmp_path):
    from ptg.cli.app import main

    secret = _png(tmp_path / "home" / "private.png")
    root = tmp_path / "data"
    _png(root / "input" / "a.png"), _png(root / "target" / "a.png"), _png(root / "target" / "b.png")
    (root / "input" / "b.png").symlink_to(secret)
    out = root / "manifest.jsonl"
    assert main(["manifest", "build", "--root", str(root), "--out", str(out), "--split", "test"]) == 0
    text = out.read_text()
    assert "private" not in text and "home" not in text
    assert [json.loads(line)["id"] for line in text.splitlines()] == ["a"]


def test_ids_longer_than_a_file_name_are_refused():
    from ptg.pipeline.datasets.manifest import id_problem

    assert "bytes long" in id_problem("x" * 300)
    assert id_problem("x" * limits.MAX_ID_BYTES) is None


# ---------------------------------------------------------------------------------------------
# 4. user networks only from the command line


def test_config_file_naming_a_user_network_imports_nothing(tmp_path, monkeypatch):
    from ptg.ptgrm.train.config import resolve

    pkg = tmp_path / "evilpkg_h21"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "shared.yaml"
    cfg.write_text("model:\n  baseline: evilpkg_h21:Net\n")
    with pytest.raises(PtgError, match="user network 'evilpkg_h21:Net'.*--baseline evilpkg_h21:Net"):
        resolve(cfg, {"out": str(tmp_path / "run")})
    with pytest.raises(PtgError, match="user network"):  # --set of another key does not name it
        resolve(cfg, {"out": str(tmp_path / "run")}, ["optim.lr=1e-3"])
    assert "evilpkg_h21" not in sys.modules
    # named on the command line (flag or --set), the user's own choice is accepted
    assert resolve(cfg, {"out": str(tmp_path / "r")}, ["model.baseline=evilpkg_h21:Net"]).model.baseline == "evilpkg_h21:Net"


# ---------------------------------------------------------------------------------------------
# 5. one pixel limit, before allocation


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setenv("PTG_MAX_PIXELS", "1000")


def test_png_over_the_pixel_limit_is_refused_before_decoding(tmp_path, small_limit):
    p = _png(tmp_path / "big.png", (40, 40))
    with pytest.raises(PtgError, match="1,600 pixels, over the limit of 1,000.*PTG_MAX_PIXELS=1600"):
        read_image(p)
    _png(tmp_path / "ok.png", (20, 20))
    assert read_image(tmp_path / "ok.png").shape == (20, 20, 3)


def test_jpeg_over_the_pixel_limit_is_refused(tmp_path, small_limit):
    p = tmp_path / "big.jpg"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(p)
    with pytest.raises(PtgError, match="over the limit"):
        read_image(p)


def test_tiff_pages_count_against_the_pixel_limit(tmp_path, small_limit):
    import tifffile

    p = tmp_path / "pages.tif"
    tifffile.imwrite(p, np.zeros((3, 20, 20), np.uint8), photometric="minisblack")  # 3 pages of 400 px
    with pytest.raises(PtgError, match="3 pages = 1,200 pixels"):
        read_image(p)


def test_npy_header_declaring_a_huge_array_is_refused_without_allocating(tmp_path):
    p = tmp_path / "bomb.npy"
    with open(p, "wb") as f:  # a header only: 100000 x 100000 x 3 float32 = 120 GB claimed, 128 bytes on disk
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000, 3)})
    with pytest.raises(PtgError, match="over the limit"):
        read_image(p)
    with pytest.raises(PtgError, match="unsupported image shape"):
        np.save(tmp_path / "stack.npy", np.zeros((2, 2, 2, 2), np.float32))
        read_image(tmp_path / "stack.npy")


def test_pixel_limit_setting_is_checked():
    os.environ["PTG_MAX_PIXELS"] = "lots"
    try:
        with pytest.raises(PtgError, match="PTG_MAX_PIXELS='lots' is not a number"):
            limits.max_pixels()
    finally:
        del os.environ["PTG_MAX_PIXELS"]


def test_ome_tiff_naming_another_file_is_never_opened(tmp_path):
    import tifffile

    outside = tmp_path / "outside.tif"
    tifffile.imwrite(outside, np.full((16, 16), 200, np.uint8))
    root = tmp_path / "data"
    root.mkdir()
    p = root / "scan.ome.tif"
    # an OME-TIFF whose second plane lives in ../outside.tif: tifffile would open that file
    uuid = "urn:uuid:11111111-1111-1111-1111-111111111111"
    ome = (f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
           f'UUID="{uuid}"><Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="16" '
           f'SizeY="16" SizeC="1" SizeZ="1" SizeT="2"><Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
           f'<TiffData FirstT="0" IFD="0" PlaneCount="1"><UUID FileName="scan.ome.tif">{uuid}</UUID></TiffData>'
           f'<TiffData FirstT="1" IFD="0" PlaneCount="1"><UUID FileName="../outside.tif">urn:uuid:2</UUID></TiffData>'
           f'</Pixels></Image></OME>')
    tifffile.imwrite(p, np.zeros((16, 16), np.uint8), description=ome, metadata=None)
    with opened_files() as seen:
        img = read_image(p, channels=None)
        image_size(p)
    assert img.shape == (16, 16, 1) and float(img.max()) == 0.0  # this file's own pixels only
    assert not [s for s in seen if s.endswith("outside.tif")]


# ---------------------------------------------------------------------------------------------
# 6. bounds and named errors for the rest


def test_json_nested_too_deep_is_a_named_error(tmp_path):
    p = tmp_path / "meta.json"
    p.write_text("[" * 100 + "]" * 100)
    with pytest.raises(PtgError, match="nested deeper than 64"):
        limits.read_json(p, "store metadata")
    p.write_text("[" * 200000 + "]" * 200000)
    with pytest.raises(PtgError, match="nested too deeply|nested deeper"):
        limits.read_json(p, "store metadata")


def test_json_over_the_size_limit_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("PTG_MAX_JSON_BYTES", "100")
    p = tmp_path / "commit.json"
    p.write_text(json.dumps({"n": list(range(100))}))
    with opened_files() as seen:
        with pytest.raises(PtgError, match="over the limit of 100"):
            limits.read_json(p, "commit record")
    assert str(p) not in seen


def test_yaml_alias_bomb_in_a_config_is_a_named_error(tmp_path):
    from ptg.ptgrm.train.config import load_yaml

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(PtgError, match="holds more than 100,000 values"):
        load_yaml(p)


def test_expect_type_names_the_key():
    with pytest.raises(PtgError, match="'n' must be int, got str"):
        limits.expect_type("1e9", int, "n", "commit record c.json")
    with pytest.raises(PtgError, match="must be int, got bool"):
        limits.expect_type(True, int, "n", "commit record c.json")
    assert limits.expect_type(3, int, "n", "x") == 3


def test_param_count_is_checked_on_the_meta_device(monkeypatch):
    import torch

    monkeypatch.setenv("PTG_MAX_PARAMS", "1000")
    build = lambda: torch.nn.Linear(4000, 4000)  # noqa: E731  (16 M parameters: never allocated here)
    with pytest.raises(PtgError, match="16,004,000 parameters, over the limit of 1,000.*PTG_MAX_PARAMS=16004000"):
        limits.check_param_count(build, "the baseline 'unet' of export E")
    assert limits.check_param_count(lambda: torch.nn.Linear(10, 10), "small") == 110


def test_report_escapes_names_from_shared_metrics(tmp_path):
    from ptg.ptgrm.report import write_report

    ev = tmp_path / "ev"
    ev.mkdir()
    name = "run | [click](http://x) <img src=x> $\\frac{a}{$\nnext"
    (ev / "metrics.json").write_text(json.dumps({
        "kind": "ptg-eval", "info": {"name": name, "dataset": "set_1", "baseline": "unet", "prior": ""},
        "mean": {"baseline": {"psnr": 20.0, "ssim": 0.5}, "ptgrm": {"psnr": 21.0, "ssim": 0.6}}, "n_scored": 1}))
    md, png = write_report([ev], tmp_path / "rep")  # no mathtext error from the '$' in the chart labels
    text = md.read_text()
    import re

    assert not re.search(r"(?<!\\)<img", text) and "](http" not in text and "\nnext" not in text
    assert "\\[click\\]" in text and "\\<img" in text and png.stat().st_size > 0
    row = [line for line in text.splitlines() if "click" in line][-1]
    assert row.count(" | ") == 5  # the name's '|' did not open a cell


def test_report_with_wrong_types_is_a_named_error(tmp_path):
    from ptg.ptgrm.report import load_summary

    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"kind": "ptg-eval", "info": {}, "mean": {"baseline": {"psnr": "high"}}}))
    with pytest.raises(PtgError, match="mean.baseline must map psnr and ssim to numbers"):
        load_summary(ev)


def test_huge_but_finite_sigma_is_refused_after_scaling():
    from ptg.pipeline.encoders.degradation import degradation_vector

    with pytest.raises(PtgError, match="'sigma' = 1e\\+300 scales \\(sigma/50\\)"):
        degradation_vector({"task": "denoise", "degradation": {"sigma": 1e300}})
    assert degradation_vector({"task": "denoise", "degradation": {"sigma": 50}}).max() == 1.0


# ---------------------------------------------------------------------------------------------
# artifacts: exports, students, recorded encoder weights, network sizes


@pytest.mark.parametrize("name", ["../victim.txt", "/etc/passwd", "students/../../x"])
def test_export_weights_named_outside_the_folder_are_not_opened(tmp_path, victim, name):
    from ptg.ptgrm.artifacts.export import _read_tensors

    export = tmp_path / "export"
    export.mkdir()
    digest = fsio.file_sha256(victim)  # the crafted config's hash is edited to match
    with opened_files() as seen:
        with pytest.raises(PtgError, match="not a plain file name"):
            _read_tensors(export, {"file": name, "sha256": digest})
    assert str(victim) not in seen and "/etc/passwd" not in seen


def test_student_folder_with_symlinked_weights_is_refused(tmp_path, victim):
    from ptg.ptgrm.artifacts import load_student

    dist = tmp_path / "student"
    dist.mkdir()
    (dist / "student.json").write_text("{}")
    (dist / "student.safetensors").symlink_to(victim)
    with pytest.raises(PtgError, match="student.safetensors is a symbolic link"):
        load_student(dist)


def test_recorded_student_folders_must_lie_inside_the_export(tmp_path):
    assert fsio.member_path(tmp_path, "students/0") == tmp_path / "students" / "0"
    for rel in ("../other", "/abs/student", "students/../../x", 3):
        with pytest.raises(PtgError, match="not a plain file name"):
            fsio.member_path(tmp_path, rel, "student folder")


def test_recorded_encoder_weights_path_is_not_opened(tmp_path, victim):
    from ptg.ptgrm.artifacts.info import PriorStoreInfo
    from ptg.ptgrm.infer import EncoderPriors

    entries = [PriorStoreInfo.from_entry({"path": str(tmp_path / "s.zarr"), "dim": 8, "views": ["identity"],
                "metadata": {"fingerprint": "f" * 64, "encoder": {"name": "imagenet", "spec": {
                    "name": "imagenet", "pretrained": str(victim)}}}})]
    with opened_files() as seen:
        with pytest.raises(PtgError, match="local path .*victim.txt.*does not open a path a shared file names"):
            EncoderPriors(entries)
    assert str(victim) not in seen
    fsio.refuse_recorded_path("openai/clip-vit-base-patch32", "a hub id")  # hub ids and tags pass
    inside = tmp_path / "export" / "enc.safetensors"
    inside.parent.mkdir()
    inside.write_bytes(b"")
    fsio.refuse_recorded_path(str(inside), "inside the artifact", inside=inside.parent)


def test_network_from_recorded_args_is_sized_before_allocation():
    import resource

    from ptg.ptgrm.train.checkpoint import build_network

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PtgError, match="parameters, over the limit of 500,000,000.*PTG_MAX_PARAMS="):
        build_network("unet", {"width": 4000})  # 42 G parameters = 168 GB if allocated
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing was allocated


def test_written_images_replace_a_planted_symlink_never_follow_it(tmp_path, victim):
    from ptg.pipeline.core.imageio import write_image

    out = tmp_path / "eval" / "images"
    out.mkdir(parents=True)
    for name in ("a.png", "b.jpg", "c.tif"):
        (out / name).symlink_to(victim)
        write_image(out / name, np.zeros((4, 4, 3), np.float32))
        assert not (out / name).is_symlink() and read_image(out / name).shape == (4, 4, 3)
    assert victim.read_text() == SECRET


def test_report_out_is_claimed(tmp_path, victim):
    from ptg.cli.app import main

    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"kind": "ptg-eval", "info": {"name": "r"},
                                                 "mean": {"baseline": {"psnr": 20.0, "ssim": 0.5}}, "n_scored": 1}))
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("mine")
    assert main(["report", str(ev), "--out", str(mine)]) == 1  # a folder ptg did not make
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "report.md").symlink_to(victim)
    assert main(["report", str(ev), "--out", str(rep)]) == 1
    assert victim.read_text() == SECRET and (mine / "todo.txt").read_text() == "mine"
    assert main(["report", str(ev), "--out", str(tmp_path / "new")]) == 0


def test_checkpoint_with_a_deflated_entry_is_refused_before_torch_load(tmp_path):
    import zipfile

    import torch

    from ptg.ptgrm.train.checkpoint import safe_load

    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(1000)}, good)
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():  # the same entries re-packed with deflate (a bomb inflates the same way)
            dst.writestr(info.filename, src.read(info.filename))
    with pytest.raises(PtgError, match="holds compressed entries"):
        safe_load(bad)
    assert safe_load(good)["w"].shape == (1000,)


def test_self_referencing_checkpoint_is_a_named_error(tmp_path):
    import torch

    from ptg.ptgrm.train.checkpoint import safe_load

    cfg: dict = {"model": {}}
    cfg["model"]["again"] = cfg  # the unpickler's memo rebuilds the cycle
    p = tmp_path / "cycle.pt"
    torch.save({"format": "ptg-train/2", "config": cfg}, p)
    with pytest.raises(PtgError, match="nested deeper than 64 levels"):
        safe_load(p)


def test_student_preprocessing_size_is_bounded_before_any_image_is_resized(tmp_path):
    with pytest.raises(PtgError, match=r"preprocessing size\) declares 100000x100000 = 10,000,000,000 pixels"):
        limits.check_preprocess_size("student.json", {"size": 100000, "resize_short": None})
    with pytest.raises(PtgError, match="'resize_short' = '256' is not a positive integer"):
        limits.check_preprocess_size("student.json", {"size": 224, "resize_short": "256"})
    limits.check_preprocess_size("student.json", {"size": 224, "resize_short": 256})
