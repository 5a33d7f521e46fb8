import json

import numpy as np
import pytest
from PIL import Image

from ptg.cli.app import main
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.datasets.manifest import ManifestError, check_manifest, load_manifest, write_manifest


def _img(path, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(path)
    return path


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_load_good_manifest_relative_paths(tmp_path):
    _img(tmp_path / "in/a.png"), _img(tmp_path / "gt/a.png")
    m = _write(tmp_path / "m.jsonl", [{"id": "a", "input": "in/a.png", "target": "gt/a.png", "split": "train", "sigma": 25}])
    man = load_manifest(m)
    (s,) = man.samples
    assert s.input == (tmp_path / "in/a.png").resolve() and s.extra == {"sigma": 25} and s.line == 1
    assert man.split("train") == [s] and man.split("test") == []


def test_every_problem_reported_with_line(tmp_path):
    _img(tmp_path / "in/a.png"), _img(tmp_path / "gt/a.png"), _img(tmp_path / "gt/big.png", (9, 8))
    rows = [
        {"id": "a", "input": "in/a.png", "target": "gt/a.png", "split": "train"},
        {"id": "a", "input": "in/a.png", "target": "gt/a.png", "split": "train"},  # duplicate id
        {"id": "b", "input": "in/missing.png", "target": None, "split": "test"},  # missing file
        {"id": "c", "input": "../outside.png", "target": None, "split": "test"},  # escapes root
        {"id": "d", "input": "in/a.png", "target": None, "split": "holdout"},  # unknown split
        {"id": "e", "input": "in/a.png", "target": "gt/big.png", "split": "test"},  # size mismatch
        "{not json",
        {"input": "in/a.png", "split": "test"},  # no id
    ]
    m = _write(tmp_path / "m.jsonl", rows)
    good, problems = check_manifest(m)
    by_line = {p.line: p.message for p in problems}
    assert [s.id for s in good] == ["a"]
    assert "duplicate id" in by_line[2] and "first used on line 1" in by_line[2]
    assert "not found" in by_line[3]
    assert "outside the root" in by_line[4]
    assert "unknown split 'holdout'" in by_line[5]
    assert "9x8" in by_line[6] or "8x9" in by_line[6]
    assert "not valid JSON" in by_line[7]
    assert "missing required field" in by_line[8]
    with pytest.raises(ManifestError) as exc:
        load_manifest(m, check_sizes=True)
    assert len(exc.value.problems) == 7 and "line 3" in str(exc.value)


def test_root_override(tmp_path):
    data = tmp_path / "data"
    _img(data / "x.png")
    m = _write(tmp_path / "m.jsonl", [{"id": "x", "input": "x.png", "target": None, "split": "test"}])
    with pytest.raises(ManifestError):
        load_manifest(m)
    assert load_manifest(m, root=data).samples[0].input == (data / "x.png").resolve()


def test_write_manifest_relativises(tmp_path):
    _img(tmp_path / "in/a.png")
    p = write_manifest(tmp_path / "m.jsonl", [{"id": "a", "input": tmp_path / "in/a.png", "target": None, "split": "test"}])
    assert json.loads(p.read_text())["input"] == "in/a.png"


def test_empty_and_missing_manifest(tmp_path):
    with pytest.raises(PtgError, match="not found"):
        load_manifest(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(PtgError, match="no rows"):
        load_manifest(tmp_path / "e.jsonl")


def test_cli_check_names_bad_row(tmp_path, capsys):
    _img(tmp_path / "in/a.png")
    m = _write(tmp_path / "m.jsonl", [{"id": "a", "input": "in/a.png", "target": None, "split": "test"},
                                     {"id": "gone", "input": "in/gone.png", "target": None, "split": "test"}])
    assert main(["manifest", "check", str(m)]) == 1
    err = capsys.readouterr().err
    assert "line 2" in err and "gone" in err
    m2 = _write(tmp_path / "ok.jsonl", [{"id": "a", "input": "in/a.png", "target": None, "split": "test"}])
    assert main(["manifest", "check", str(m2)]) == 0


# ------------------------------------------------------------------ ids, paths outside, decoding


@pytest.mark.parametrize("bad, why", [
    ("../evil", "path separator"), ("a/b", "path separator"), ("a\\b", "path separator"), ("..", "'..'"),
    ("", "non-empty"), ("   ", "non-empty"), ("a\x00b", "control character"), ("a\nb", "control character"), (7, "non-empty"),
])
def test_unsafe_ids_are_refused_on_load_with_line_and_fix(tmp_path, bad, why):
    _img(tmp_path / "a.png")
    m = _write(tmp_path / "m.jsonl", [{"id": "ok", "input": "a.png", "target": None, "split": "test"},
                                      {"id": bad, "input": "a.png", "target": None, "split": "test"}])
    with pytest.raises(ManifestError, match=r"line 2: .*" + why):
        load_manifest(m)


def test_id_from_parts_is_flat_and_safe():
    from ptg.pipeline.datasets.manifest import id_from_parts, id_problem

    assert id_from_parts("test/Rain100H", "1") == "test__Rain100H__1"
    assert id_from_parts("", "a") == "a" and id_problem(id_from_parts("../x")) is None
    assert "e.g. 'a__b'" in id_problem("a/b")


def test_paths_outside_the_root_absolute_dotdot_symlink(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    _img(root / "a.png"), _img(elsewhere / "b.png")
    (root / "link").symlink_to(elsewhere)
    m = _write(root / "m.jsonl", [
        {"id": "in", "input": "a.png", "target": None, "split": "test"},
        {"id": "abs", "input": str(elsewhere / "b.png"), "target": None, "split": "test"},
        {"id": "dotdot", "input": "../elsewhere/b.png", "target": None, "split": "test"},
        {"id": "sym", "input": "link/b.png", "target": None, "split": "test"},
    ])
    good, problems = check_manifest(m, outside="refuse")
    assert [s.id for s in good] == ["in"]
    msgs = {p.id: p.message for p in problems}
    assert "is an absolute path outside the root" in msgs["abs"] and "--allow-outside" in msgs["abs"]
    assert "outside the root" in msgs["dotdot"] and "outside the root" in msgs["sym"]
    assert len(check_manifest(m, outside="allow")[0]) == 4
    # every loader refuses all three by default (issue 21: a shared manifest must not read the victim's files);
    # "absolute" remains an explicit policy
    assert {p.id for p in check_manifest(m)[1]} == {"abs", "dotdot", "sym"}
    assert {p.id for p in check_manifest(m, outside="absolute")[1]} == {"dotdot", "sym"}


def _truncated_jpeg(path):
    from skimage import data

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.chelsea()).save(path, quality=90)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # the header is intact: only a full decode notices
    return path


def test_check_decode_finds_a_truncated_jpeg(tmp_path):
    _truncated_jpeg(tmp_path / "t.jpg"), _img(tmp_path / "ok.png")
    m = _write(tmp_path / "m.jsonl", [{"id": "t", "input": "t.jpg", "target": None, "split": "test"},
                                      {"id": "ok", "input": "ok.png", "target": None, "split": "test"}])
    assert check_manifest(m, decode=False)[1] == []  # a header read passes it
    good, problems = check_manifest(m, decode=True)
    assert [s.id for s in good] == ["ok"] and "t.jpg" in problems[0].message and "truncated" in problems[0].message


def test_cli_check_decode_default_empty_and_outside(tmp_path, capsys):
    _truncated_jpeg(tmp_path / "t.jpg"), _img(tmp_path / "ok.png"), _img(tmp_path.parent / f"{tmp_path.name}-out.png")
    m = _write(tmp_path / "m.jsonl", [{"id": "t", "input": "t.jpg", "target": None, "split": "test"}])
    assert main(["manifest", "check", str(m)]) == 1  # small manifest: decoded by default
    err = capsys.readouterr().err
    assert "line 1 (id 't')" in err and "t.jpg" in err and "1 problem(s)" in err
    assert main(["manifest", "check", str(m), "--no-decode"]) == 0
    assert "headers only" in capsys.readouterr().out
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["manifest", "check", str(empty)]) == 1
    assert "has no rows" in capsys.readouterr().err
    out = _write(tmp_path / "o.jsonl", [{"id": "o", "input": str(tmp_path.parent / f"{tmp_path.name}-out.png"),
                                         "target": None, "split": "test"}])
    assert main(["manifest", "check", str(out)]) == 1
    assert "--allow-outside" in capsys.readouterr().err
    assert main(["manifest", "check", str(out), "--allow-outside"]) == 0
    assert "1 rows OK (test 1; every image decoded)" in capsys.readouterr().out
