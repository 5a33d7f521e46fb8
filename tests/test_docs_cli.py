"""Every `ptg …` line in the code blocks of README.md and docs/*.md parses with the real CLI.

Each command line is resolved to its (sub)command through typer's click tree and its arguments are
run through that command's own option parser (nothing is executed), so an option that was renamed
or removed, a flag given a value, an option missing its value or a command that does not exist
fails here, with the file and line of every bad command at once. Placeholders (`M`, `FILE`, `...`)
are positional words and pass: only commands and options are checked.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer

from ptg.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^\s*(```|~~~)")
PROMPT = re.compile(r"^\s*(\$\s+)?")
PREFIXES = ("ptg ", ".venv/bin/ptg ")
SHELL_ENDS = {"&&", "||", "|", ";", "&"}  # a command ends at a shell operator; the next may be ptg again


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands_in(text: str) -> list[tuple[int, str]]:
    """(line number, command) of every `ptg` command in the fenced code blocks of a Markdown text;
    `\\`-continued lines are joined, a leading `$ ` prompt is dropped."""
    out: list[tuple[int, str]] = []
    lines = text.splitlines()
    in_block, i = False, 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if FENCE.match(line):
            in_block = not in_block
            continue
        body = PROMPT.sub("", line, count=1)
        if not in_block or not body.startswith(PREFIXES):
            continue
        start, parts = i, [body]
        while parts[-1].rstrip().endswith("\\") and i < len(lines) and not FENCE.match(lines[i]):
            parts[-1] = parts[-1].rstrip()[:-1]
            parts.append(lines[i])
            i += 1
        out.append((start, " ".join(p.strip() for p in parts)))
    return out


def _segments(command: str) -> list[list[str]]:
    """The arguments after `ptg` of each `ptg` command on a line (`ptg a && ptg b` holds two), up to
    a shell operator or redirection; comments dropped."""
    segments: list[list[str]] = [[]]
    for w in shlex.split(command, comments=True):
        if w in SHELL_ENDS:
            segments.append([])
        elif not (segments[-1] and segments[-1][-1] is None):
            segments[-1].append(None if w.startswith((">", "2>", "<")) else w)  # None: redirected, the rest is not ptg's
    cleaned = [[w for w in seg if w is not None] for seg in segments]
    return [seg[1:] for seg in cleaned if seg and seg[0] in ("ptg", ".venv/bin/ptg")]


def problem(command: str) -> str | None:
    """Why `command` does not parse with the CLI, or None when it does."""
    try:
        segments = _segments(command)
    except ValueError as exc:  # unbalanced quotes
        return f"cannot split the line: {exc}"
    for words in segments:
        why = _parse(words)
        if why is not None:
            return why
    return None


def _parse(words: list[str]) -> str | None:
    """Resolve `ptg WORDS` to its (sub)command and run its option parser (nothing is executed)."""
    cmd = typer.main.get_command(app)
    ctx = cmd.context_class(cmd, info_name="ptg")
    while hasattr(cmd, "list_commands"):  # a group: descend while the next word names a subcommand
        names = cmd.list_commands(ctx)
        if words and words[0] in names:
            cmd = cmd.get_command(ctx, words[0])
            ctx = cmd.context_class(cmd, info_name=words.pop(0), parent=ctx)
            continue
        if words and not words[0].startswith("-"):
            return f"unknown command {ctx.command_path} {words[0]!r} (one of {', '.join(names)})"
        if not words and not getattr(cmd, "invoke_without_command", False):
            return f"{ctx.command_path} needs a subcommand (one of {', '.join(names)})"
        break
    try:
        cmd.make_parser(ctx).parse_args(list(words))
    except Exception as exc:  # click's NoSuchOption / BadOptionUsage (typer vendors its own click)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return f"{ctx.command_path}: {message}"
    return None


def bad_lines(files: list[Path]) -> list[str]:
    out = []
    for f in files:
        for line, command in commands_in(f.read_text(encoding="utf-8")):
            why = problem(command)
            if why is not None:
                name = f.relative_to(ROOT) if f.is_relative_to(ROOT) else f
                out.append(f"{name}:{line}: {why}\n    {command}")
    return out


def test_every_ptg_line_in_the_docs_parses():
    found = sum(len(commands_in(f.read_text(encoding="utf-8"))) for f in doc_files())
    assert found > 50, f"only {found} `ptg` lines found in README.md and docs/: is the extraction broken?"
    bad = bad_lines(doc_files())
    assert not bad, f"{len(bad)} `ptg` line(s) in the docs do not parse:\n" + "\n".join(bad)


def test_the_check_finds_bad_lines_and_names_each(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text(
        "Prose: ptg train --not-checked outside a code block\n"
        "```bash\n"
        "ptg train --manifest M --priors S --steps 20 --out runs/x   # fine: --bogus in a comment\n"
        "$ ptg train --manifest M --stepz 20\n"
        "ptg eval --run R \\\n"
        "    --y-channel --no-such-option --out E\n"
        "ptg stduy --seeds 5\n"
        "ptg models --json\n"
        "ptg models inspect FILE --bogus\n"
        "ptg train --force=yes > log.txt\n"
        "ptg priors export S --format h5 --out\n"
        "ptg encoders && ptg eval --bogus-after-and 2> err.txt\n"
        "```\n"
        "```\nptg data\n```\n",
        encoding="utf-8",
    )
    bad = bad_lines([doc])
    assert [b.split(": ", 1)[0] for b in bad] == [f"{doc}:{n}" for n in (4, 5, 7, 9, 10, 11, 12, 15)], bad
    assert "--stepz" in bad[0] and "--no-such-option" in bad[1] and "'stduy'" in bad[2]
    assert "--bogus" in bad[3] and "does not take a value" in bad[4] and "requires an argument" in bad[5]
    assert "--bogus-after-and" in bad[6] and "needs a subcommand" in bad[7]
