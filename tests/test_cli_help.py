"""The command line explains itself: a version, shell completion, and help on every option that
shows its default."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import typer
from typer.testing import CliRunner

from bot.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def commands() -> Iterator[tuple[list[str], click.Command, click.Context]]:
    """Every command of ``bot``, groups included, with a context to render its help in."""
    def walk(cmd: click.Command, path: list[str], parent: click.Context | None) -> Iterator[Any]:
        ctx = click.Context(cmd, info_name=path[-1], parent=parent)
        yield path, cmd, ctx
        for name, sub in sorted((getattr(cmd, "commands", None) or {}).items()):
            yield from walk(sub, [*path, name], ctx)

    yield from walk(typer.main.get_command(app), ["bot"], None)


def has_default(p: click.Parameter) -> bool:
    """A default worth showing: not "none given", not a flag that is simply off."""
    if p.default is None or p.required:
        return False
    return not (getattr(p, "is_flag", False) and p.default is False)


def test_the_tree_is_whole() -> None:
    names = {" ".join(path) for path, _, _ in commands()}
    for want in ("bot backtest", "bot run", "bot journal runs", "bot journal prune", "bot journal explain",
                 "bot journal summary", "bot db upgrade", "bot exchange-sim", "bot data download", "bot train"):
        assert want in names


def test_every_option_and_argument_has_help_that_shows_its_default() -> None:
    no_help, no_default = [], []
    count = 0
    for path, cmd, ctx in commands():
        for p in cmd.params:
            count += 1
            where = f"{' '.join(path)} {p.name}"
            if not (getattr(p, "help", None) or "").strip():
                no_help.append(where)
            if has_default(p):
                record = p.get_help_record(ctx)
                if record is None or "[default: " not in record[1]:
                    no_default.append(f"{where} (default {p.default!r})")
    assert count > 150
    assert no_help == [], no_help
    assert no_default == [], no_default


def test_every_help_page_renders() -> None:
    for path, _, _ in commands():
        res = runner.invoke(app, [*path[1:], "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage: bot" in res.stdout


def test_version_is_the_package_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.stdout == f"bot {version('bybit-ml-bot')}\n"


def _bot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120, check=False)


def test_version_from_the_real_command() -> None:
    r = _bot("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"bot {version('bybit-ml-bot')}"


def test_shell_completion_script_and_answers() -> None:
    r = _bot("--show-completion", "bash")
    assert r.returncode == 0, r.stderr
    assert "complete -o default -F _bot_completion bot" in r.stdout
    # What bash asks the script when the user presses TAB after `bot journal pr`:
    r = _bot(env={"_BOT_COMPLETE": "complete_bash", "COMP_WORDS": "bot journal pr", "COMP_CWORD": "2"})
    assert r.returncode == 0 and r.stdout.split() == ["prune"]
    r = _bot(env={"_BOT_COMPLETE": "complete_bash", "COMP_WORDS": "bot journal runs --wi", "COMP_CWORD": "3"})
    assert r.stdout.split() == ["--wide"]
