"""The Python API: docs/api.md's example runs as written (train, evaluate, restore; no subprocess)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm import api

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "docs/api.md has one runnable example"
    return blocks[0]


def test_the_api_page_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(_example(), str(DOC), "exec"), {})  # noqa: S102 (our own docs' example)
    out = capsys.readouterr().out
    assert re.search(r"^20 steps, digest [0-9a-f]{16}$", out, re.M)
    assert re.search(r"F alone \d+\.\d\d dB, F \+ R \d+\.\d\d dB on \d+ test images", out)
    assert (tmp_path / "ptg-api-example" / "run" / "eval" / "metrics.json").is_file()


def test_api_errors_are_named_lines(tmp_path):
    with pytest.raises(PtgError, match="no such file or run folder|not a checkpoint|no checkpoint"):
        api.load_model(tmp_path / "missing")
    with pytest.raises(PtgError, match="--out must be a .json file"):
        api.score_outputs(tmp_path, tmp_path / "m.jsonl", tmp_path / "scores.csv")


def test_reporter_hears_the_news(tmp_path):
    lines: list[str] = []
    with pytest.raises(PtgError):
        api.evaluate(api.EvalRequest(tmp_path / "nothing"), api.Reporter(log=lines.append))
    assert lines == []  # nothing was loaded, nothing was said
