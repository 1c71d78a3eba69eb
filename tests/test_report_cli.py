"""`bot journal report` and `bot backtest --report` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.errors import BotError
from bot.report.png import PNG_SIZE
from tests.test_report_support import BTC_1H, ROOT, journal_runs, png_size


def bot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real `bot` entry point in a child process (exit codes, stdout/stderr as a user sees them)."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def test_backtest_writes_a_report_whose_numbers_match_journal_summary(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    out = tmp_path / "out"
    res = bot("backtest", "--strategy", "sma", "--data", str(BTC_1H), "--from", "2024-01-01", "--to", "2024-02-15",
              "--db", url, "--json", "--report", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run_id = json.loads(res.stdout)["run_id"]  # stdout stays pure JSON; the report path goes to stderr
    assert f"report: {out / 'report.html'}" in res.stderr.replace("\n", "")
    assert sorted(p.name for p in out.iterdir()) == [
        "equity.png", "monthly.png", "price.png", "report.html", "sma.png", "summary.png"]
    for p in out.glob("*.png"):
        assert png_size(p) == PNG_SIZE
    page = (out / "report.html").read_text()
    assert f"run <code>{run_id}</code>" in page and 'id="fig-sma"' in page
    assert "<script src=" not in page and "<link " not in page  # nothing loaded from elsewhere
    summary = invoke("journal", "summary", "--run", run_id, "--format", "json", "--db", url)
    expected = json.loads(summary.stdout)
    for key in ("total_return", "sharpe", "max_drawdown", "n_trades", "final_equity", "buy_and_hold_return"):
        assert f'data-key="{key}" data-value="{json.dumps(expected[key])}"' in page, key


def test_journal_report_for_any_run(tmp_path: Path) -> None:
    runs = journal_runs()
    out = tmp_path / "r"
    res = invoke("journal", "report", "--run", runs.ids["interrupted"], "--out", str(out), "--no-png",
                 "--db", runs.url)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]
    assert f"report of run {runs.ids['interrupted']}" in res.stdout
    res = invoke("journal", "report", "--out", str(tmp_path / "latest"), "--no-png", "--theme", "dark",
                 "--db", runs.url)
    assert res.exit_code == 0, res.output
    assert '<body class="dark">' in (tmp_path / "latest" / "report.html").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--run", "nope"], "no run 'nope' in the journal"),
    (["--theme", "neon"], "unknown theme 'neon'"),
    (["--out", str(ROOT / "pyproject.toml")], "exists and is not a directory"),
])
def test_user_mistakes_are_one_clear_error(tmp_path: Path, args: list[str], message: str) -> None:
    runs = journal_runs()
    out = ["--out", str(tmp_path / "x")] if "--out" not in args else []
    res = invoke("journal", "report", *out, *args, "--db", runs.url)
    assert isinstance(res.exception, BotError) and message in str(res.exception)
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_error_exit_code_and_single_line(tmp_path: Path) -> None:
    res = bot("journal", "report", "--run", "nope", "--out", str(tmp_path / "x"), "--db",
              f"sqlite:///{tmp_path / 'empty.db'}", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip() == "error: no run 'nope' in the journal"
