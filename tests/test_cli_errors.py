"""The CLI's contract with a person at a terminal: one line per error, the closest valid choice, exit
codes (2 usage, 1 PtgError, its own code for Interrupted, 130 Ctrl-C), warnings as one line, help that
shows defaults, and plain progress lines off a terminal. Driven through `main` (what the `ptg`
script runs), in-process, no torch."""
from __future__ import annotations

import io
import warnings

import pytest
from rich.console import Console

from ptg.cli import app as app_module
from ptg.cli.app import main
from ptg.pipeline.core.errors import Interrupted, PtgError


@pytest.fixture
def err(monkeypatch):
    """Capture the err console (wide, no colour) as text."""
    from ptg.cli import console as console_module

    buf = io.StringIO()
    monkeypatch.setattr(console_module, "err_console", Console(file=buf, width=300, color_system=None))
    return buf


def _one_error_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: ") and "Traceback" not in text
    return lines[0]


@pytest.mark.parametrize("argv, wanted", [
    (["train", "--stepz", "3"], "unknown option --stepz; did you mean --steps?"),
    (["manifest", "buidl"], "unknown command 'buidl'; did you mean build?"),
    (["trian"], "unknown command 'trian'; did you mean train?"),
    (["manifest", "build", "--list"], "unknown option --list"),
    (["train", "--out", "x", "--steps", "abc"], "'--steps'"),
    (["train", "--out", "x", "--preset", "lowlite"], "did you mean lowlight?"),
    (["train", "--out", "x", "--mode", "jiont"], "did you mean joint?"),
    (["train"], "Missing option '--out'"),
])
def test_usage_errors_are_one_line_with_the_closest_choice_and_exit_2(err, argv, wanted):
    assert main(argv) == 2
    line = _one_error_line(err.getvalue())
    assert wanted in line and "--help`" in line


def test_ptg_errors_keep_their_exit_code(err, monkeypatch, tmp_path):
    assert main(["manifest", "check", str(tmp_path / "none.jsonl")]) == 1
    assert "manifest not found" in _one_error_line(err.getvalue())

    def stopped(**_kw):
        raise Interrupted("training stopped by SIGTERM at step 3; resume with --resume", signum=15)

    sub = app_module.typer.Typer()
    sub.command("encoders")(stopped)
    monkeypatch.setattr(app_module, "app", sub)
    assert main(["encoders"]) == 143
    assert "stopped by SIGTERM" in err.getvalue()


def test_ctrl_c_exits_130_with_one_line(err, monkeypatch):
    sub = app_module.typer.Typer()

    @sub.command("work")
    def work() -> None:
        raise KeyboardInterrupt

    @sub.command("other")
    def other() -> None:  # two commands, so `work` is a subcommand as in ptg
        pass

    monkeypatch.setattr(app_module, "app", sub)
    assert main(["work"]) == 130
    assert err.getvalue().strip() == "interrupted (Ctrl-C)"


def test_run_passes_the_exit_code_to_sys_exit(monkeypatch):
    monkeypatch.setattr(app_module, "main", lambda argv=None: 130)
    with pytest.raises(SystemExit) as info:
        app_module.run()
    assert info.value.code == 130


def test_warnings_print_as_one_styled_line(err, monkeypatch):
    import sys

    sub = app_module.typer.Typer()

    @sub.command("warn")
    def warn() -> None:
        warnings.warn("the schedule is short:\n lr decays before the loss moves", UserWarning, stacklevel=1)

    @sub.command("other")
    def other() -> None:
        pass

    monkeypatch.setattr(app_module, "app", sub)
    monkeypatch.setattr(sys, "argv", ["ptg", "warn"])
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as info:
            app_module.run()  # the script's entry point sets the hook
    assert info.value.code == 0
    text = err.getvalue()
    assert text.strip() == "warning: the schedule is short: lr decays before the loss moves (UserWarning)"


def test_help_works_and_exits_0(capsys):
    assert main(["--help"]) == 0
    assert main(["manifest", "build", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--test-fraction" in out and "--list" not in out


def test_train_help_shows_the_config_defaults_and_the_presets(capsys):
    from ptg.ptgrm.train.config import PRESETS, DataConfig, ModelConfig, OptimConfig, TrainConfig

    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    for value in (TrainConfig.mode, TrainConfig.steps, ModelConfig.baseline, DataConfig.crop, DataConfig.batch_size,
                  f"{OptimConfig.lr:g}", "auto"):
        assert f"default: ({value})" in out or f"default: {value}" in out, value
    for name in PRESETS:
        assert name in out.replace("- ", "-")


def test_device_and_lr_flags_reach_the_config(monkeypatch, tmp_path):
    from ptg.ptgrm.train import trainer

    seen = {}

    def fake_train(cfg, on_progress=None, force=False):
        seen["cfg"] = cfg
        raise PtgError("stop here")

    monkeypatch.setattr(trainer, "train", fake_train)
    assert main(["train", "--out", str(tmp_path / "r"), "--device", "cpu", "--lr", "0.003", "--save-every", "5", "-q"]) == 1
    cfg = seen["cfg"]
    assert cfg.run.device == "cpu" and cfg.optim.lr == 0.003 and cfg.run.save_every == 5


# ------------------------------------------------------------------------------ progress


def test_progress_off_a_terminal_prints_plain_lines_on_a_clock():
    from ptg.cli.console import progress_bar

    now = [0.0]
    buf = io.StringIO()
    con = Console(file=buf, width=300)
    assert not con.is_terminal
    with progress_bar(100, "train (joint)", unit="it", every=10, out=con, clock=lambda: now[0]) as advance:
        for i in range(100):
            now[0] += 0.5
            advance(1, loss=0.5 / (i + 1))
    lines = buf.getvalue().splitlines()
    assert lines[0] == "train (joint): 20/100 it (20%), 2 it/s, eta 0:00:40, loss=0.025"
    assert len(lines) == 5  # at 10, 20, 30, 40 s, then the last line (no duplicate at 100%)
    assert lines[-1] == "train (joint): 100/100 it (100%), 2 it/s, took 0:00:50, loss=0.005"


def test_progress_draws_nothing_before_the_first_step():
    from ptg.cli.console import progress_bar

    buf = io.StringIO()
    with pytest.raises(PtgError):
        with progress_bar(10, "train", out=Console(file=buf, width=200), clock=lambda: 99.0):
            raise PtgError("bad config")
    assert buf.getvalue() == ""


def test_progress_on_a_terminal_uses_the_bar():
    from ptg.cli.console import progress_bar

    buf = io.StringIO()
    con = Console(file=buf, width=200, force_terminal=True)
    with progress_bar(3, "eval", unit="img", out=con) as advance:
        for _ in range(3):
            advance(1)
    assert "eval" in buf.getvalue() and "3/3" in buf.getvalue()
