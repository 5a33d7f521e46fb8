"""`ptg report`'s page: report.html over eval folders (self-contained, escaped, bounded), and a
headless-Chromium check that it renders with no console errors, its tables and viewers visible."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ptg.cli.app import main
from ptg.pipeline.core.imageio import write_image
from ptg.pipeline.core.metrics import psnr, ssim
from ptg.ptgrm.report import expand_sources, load_summary
from ptg.ptgrm.report_html import ImageRow, load_rows, pick_shown
from ptg.ptgrm.report_html import write_report_page as write_report
from tests.conftest import small_photo

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def make_eval(root: Path, name: str, prior: str, gain: float, seed: int = 0, ids=PHOTOS) -> Path:
    """An eval folder as `ptg eval` writes it, over real photos: noisy inputs, an F that removes part
    of the noise, and an R that helps by ``gain`` (in noise std) on some images and hurts on one."""
    rng = np.random.default_rng(seed)
    folder = root / name
    images = []
    for i, pid in enumerate(ids):
        target = small_photo(pid, 96).astype(np.float32) / 255
        noise = rng.normal(0, 1, target.shape).astype(np.float32)
        x, f = np.clip(target + 0.12 * noise, 0, 1), np.clip(target + 0.06 * noise, 0, 1)
        r = np.clip(target + (0.06 - gain if i != 1 else 0.08) * noise, 0, 1)  # image 1: R hurts
        for sub, img in (("input", x), ("baseline", f), ("ptgrm", r), ("target", target)):
            write_image(folder / "images" / sub / f"{pid}.png", img)
        score = lambda a: {"psnr": psnr(a, target), "ssim": ssim(a, target)}  # noqa: E731
        images.append({"id": pid, "seconds": 0.1, "baseline": score(f), "ptgrm": score(r)})
    mean = {k: {m: float(np.mean([im[k][m] for im in images])) for m in ("psnr", "ssim")} for k in ("baseline", "ptgrm")}
    data = {"kind": "ptg-eval", "info": {"name": name, "dataset": "samples", "baseline": "ffdnet", "prior": prior,
                                         "mode": "refine"},
            "settings": {"crop_border": 0, "y_channel": False, "matlab_round_y": False}, "n_images": len(images),
            "n_scored": len(images), "mean": {**mean, "delta": {}}, "images": images}
    (folder / "metrics.json").write_text(json.dumps(data))
    return folder


@pytest.fixture(scope="module")
def evals(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("evals")
    return [make_eval(root, "real", "imagenet", 0.02, 0), make_eval(root, "constant", "constant", 0.005, 0)]


def test_page_is_self_contained_with_tables_and_viewers(evals, tmp_path):
    md, png, html_path = write_report(evals, tmp_path / "rep")
    assert md.is_file() and png.is_file() and html_path == tmp_path / "rep" / "report.html"
    page = html_path.read_text()
    # nothing outside the file: no remote or local references, only data URIs
    assert not re.search(r"(src|href)=['\"](?!data:|#)", page) and "http://" not in page and "https://" not in page
    assert "<script src" not in page and "@import" not in page
    assert page.count("<div class='card'") == 8  # 4 images x 2 evaluations
    assert page.count("<h3>R helped most</h3>") == 2 and page.count("<h3>R hurt most</h3>") == 2
    assert len(re.findall(r"<tr>", page.split("id='scores'")[1].split("</table>")[0])) == 1 + 8  # header + 8 images
    # what is the same in both evaluations is embedded once: per photo input, F and target, and F + R per
    # evaluation except on the photo where both Rs are the same (image 1)
    assert len(re.findall(r"\.i[0-9a-f]{16}\{background-image:url\(data:image/png;base64,", page)) == 4 * 3 + 3 * 2 + 1


def test_helped_and_hurt_are_the_extremes(evals):
    rows = load_rows(load_summary(evals[0]), 0)
    helped, hurt, shown = pick_shown(rows, n=3, k=2)
    assert [r.id for r in hurt] == ["chelsea"] and all(r.delta > 0 for r in helped) and len(helped) == 2
    assert helped[0].delta >= helped[1].delta
    assert shown[: len(helped) + 1] == [*helped, *hurt] and len(shown) == 3
    assert pick_shown([ImageRow(0, "a", {"psnr": 20.0}, None)], 4)[2][0].id == "a"  # F alone: shown, neither list


def test_names_are_escaped_and_ids_cannot_leave_the_folder(tmp_path):
    ev = make_eval(tmp_path, "crafted", "p", 0.02, ids=("astronaut",))
    data = json.loads((ev / "metrics.json").read_text())
    data["info"]["name"] = "<script>alert(1)</script>"
    data["images"].append({**data["images"][0], "id": "../../outside"})
    (ev / "metrics.json").write_text(json.dumps(data))
    write_image(tmp_path / "outside.png", np.zeros((8, 8, 3), np.float32))
    (_, _, page_path) = write_report([ev], tmp_path / "rep")
    page = page_path.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<div class='card'") == 1  # the crafted id is scored in the table but never read from disk
    assert "../../outside" in page.split("id='scores'")[1]
    data["images"][0]["baseline"]["psnr"] = "30"
    (ev / "metrics.json").write_text(json.dumps(data))
    with pytest.raises(Exception, match=r"images\[0\]\.baseline\.psnr must be a number"):
        write_report([ev], tmp_path / "rep2")


def test_a_folder_of_evaluations_is_a_study(evals, tmp_path):
    found = expand_sources([evals[0].parent])
    assert found == sorted(evals)
    assert main(["report", str(evals[0].parent), "--out", str(tmp_path / "rep"), "--images", "1"]) == 0
    assert (tmp_path / "rep" / "report.html").read_text().count("<div class='card'") == 2


# ---------------------------------------------------------------------------------------------
# Headless Chromium (Debian's `chromium`): the page renders, its script runs without errors

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install -y "
                                    "chromium); the page's rendering check needs a real browser")


def chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp / 'chromium-profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    """Console errors and uncaught exceptions Chromium logged for the page."""
    return [ln for ln in stderr.splitlines() if "CONSOLE" in ln and re.search(r"Uncaught|Error|error", ln)]


@needs_chromium
def test_console_errors_are_caught(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>document.body.dataset.x = nosuch.y;</script></body></html>")
    run = chromium(["--dump-dom", bad.as_uri()], tmp_path)
    assert console_errors(run.stderr), run.stderr[-2000:]  # the check below can fail


@needs_chromium
def test_page_renders_in_headless_chromium(evals, tmp_path):
    (_, _, page) = write_report(evals, tmp_path / "rep")
    dom = chromium(["--dump-dom", "--virtual-time-budget=3000", page.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not console_errors(dom.stderr), console_errors(dom.stderr)
    assert 'data-ready="1"' in dom.stdout  # the script ran to its end
    assert dom.stdout.count('class="layer la i') == 8 and "--z: 4" in dom.stdout  # viewers set up (zoom, panels)
    shot = tmp_path / "shot.png"
    run = chromium([f"--screenshot={shot}", "--window-size=1320,1800", "--hide-scrollbars", page.as_uri()], tmp_path)
    assert shot.is_file(), run.stderr[-2000:]
    assert not console_errors(run.stderr), console_errors(run.stderr)
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    header = (np.abs(px - [0x23, 0x2F, 0x3E]).sum(-1) == 0)  # the tables' header rows
    rows_with_header = np.flatnonzero(header.sum(1) > 300)
    assert rows_with_header.size > 20, "no table header visible"
    bar = (np.abs(px - [0xFF, 0x8C, 0x1A]).sum(-1) <= 6)  # a viewer's divide (the slider bar)
    assert bar.sum(0).max() >= 4 * 96 - 4, "no before/after viewer visible"  # the 96 px photo at 4x zoom, whole
    photo = px[bar.any(1)]  # the rows through the viewer hold a photo: many distinct colours
    assert len(np.unique(photo.reshape(-1, 3), axis=0)) > 2000


def test_an_older_eval_folder_without_inputs_and_targets_shows_f_against_f_plus_r(tmp_path):
    ev = make_eval(tmp_path, "old", "p", 0.02, ids=("astronaut", "coffee"))
    shutil.rmtree(ev / "images" / "input")
    shutil.rmtree(ev / "images" / "target")
    (_, _, page_path) = write_report([ev], tmp_path / "rep")
    page = page_path.read_text()
    assert page.count("<div class='card'") == 2 and "no images/target/" in page
    viewer = page.split("<div class='card'")[1]
    assert "<option value='baseline' selected>F</option><option value='ptgrm'>F + R</option>" in viewer
    assert "value='target'" not in viewer and "value='input'" not in viewer
    shutil.rmtree(ev / "images")
    (_, _, page_path) = write_report([ev], tmp_path / "rep2")
    assert "No images to show" in page_path.read_text() and "<div class='card'" not in page_path.read_text()
