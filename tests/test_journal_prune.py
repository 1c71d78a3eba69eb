"""`bot journal prune` and `storage.retention_days` delete whole runs, every row of them, one
transaction per run, and never a running run: on SQLite and on the real PostgreSQL server.

Each PostgreSQL test works in a schema of its own (the ``test`` database is shared), so a prune
here can only ever see the runs this test made.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text, update
from typer.testing import CliRunner

from bot.cli import app
from storage import schema as s
from storage.db import open_database
from storage.journal import Journal
from storage.retention import RUN_TABLES, delete_run

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, sqlite_url: str, pg_schema_url: Callable[[], str]) -> str:
    return sqlite_url if request.param == "sqlite" else pg_schema_url()


def backtest(url: str, btc_1h: Path, *args: str, start: str = "2024-01-01", end: str = "2024-01-10") -> str:
    """A real SMA backtest (nine days of hourly bars: decisions, orders, fills, trades, equity)."""
    res = runner.invoke(app, ["backtest", "--strategy", "sma", "--data", str(btc_1h), "--from", start, "--to", end,
                              "--db", url, "--json", *args])
    assert res.exit_code == 0, res.output
    return q_latest(url)


def q_latest(url: str) -> str:
    db = open_database(url)
    with db.connect() as conn:
        return str(conn.scalar(select(s.runs.c.id).order_by(s.runs.c.started_at.desc()).limit(1)))


def counts(db: Engine) -> dict[str, dict[str, int]]:
    """Rows per run id, per table (``runs`` included)."""
    out: dict[str, dict[str, int]] = {}
    with db.connect() as conn:
        for name in ("runs", *RUN_TABLES):
            t = s.metadata.tables[name]
            col = t.c.id if name == "runs" else t.c.run_id
            for rid, n in conn.execute(select(col, func.count()).group_by(col)):
                out.setdefault(rid, {})[name] = n
    return out


def age(db: Engine, run_id: str, days: float) -> None:
    """Make the run look started and last written ``days`` days ago."""
    when = datetime.now(UTC) - timedelta(days=days)
    with db.begin() as conn:
        conn.execute(update(s.runs).where(s.runs.c.id == run_id).values(started_at=when, updated_at=when))


def still_running(db: Engine, run_id: str) -> None:
    """The run as a resumed (or killed and resumable) run looks: marked running again."""
    Journal(db, run_id).reopen()


def prune(url: str, *args: str) -> Any:
    res = runner.invoke(app, ["journal", "prune", *args, "--db", url])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


@pytest.fixture
def four(url: str, btc_1h: Path) -> dict[str, Any]:
    """Four runs: two completed 40 and 35 days ago, one completed now, one running for 40 days."""
    ids = {name: backtest(url, btc_1h) for name in ("old", "older", "new", "running")}
    db = open_database(url)
    age(db, ids["older"], 40)
    age(db, ids["old"], 35)
    age(db, ids["running"], 40)
    still_running(db, ids["running"])
    age(db, ids["running"], 40)
    return {"url": url, "db": db, **ids}


def test_older_than_deletes_every_row_of_old_runs_and_nothing_else(four: dict[str, Any]) -> None:
    db = four["db"]
    before = counts(db)
    for rid in (four["old"], four["older"], four["new"]):
        assert all(before[rid].get(t, 0) > 0
                   for t in ("runs", "decisions", "orders", "fills", "trades", "equity_blocks"))
    out = prune(four["url"], "--older-than", "30d", "--yes").stdout
    after = counts(db)
    assert four["old"] not in after and four["older"] not in after  # not one row left in any table
    assert after[four["new"]] == before[four["new"]]
    assert after[four["running"]] == before[four["running"]]  # a running run is never deleted, however old
    gone = {t: before[four["old"]].get(t, 0) + before[four["older"]].get(t, 0) for t in ("runs", *RUN_TABLES)}
    assert f"deleted {gone['runs']} runs, {gone['fills']:,} fills" in out
    assert f"{gone['equity_blocks']:,} equity_blocks" in out and f"{gone['decisions']:,} decisions" in out


def test_keep_and_status_choose_which_runs_go(four: dict[str, Any]) -> None:
    db = four["db"]
    with db.begin() as conn:
        conn.execute(update(s.runs).where(s.runs.c.id == four["older"]).values(status="failed"))
    before = counts(db)
    prune(four["url"], "--keep", "1", "--status", "completed", "--yes")  # keeps "new", the newest completed
    after = counts(db)
    assert four["old"] not in after
    assert {four["older"], four["new"], four["running"]} <= set(after)
    prune(four["url"], "--keep", "0", "--status", "failed", "--yes")
    after = counts(db)
    assert set(after) == {four["new"], four["running"]}
    assert after == {k: v for k, v in before.items() if k in after}


def test_older_than_with_keep_never_deletes_the_newest(four: dict[str, Any]) -> None:
    prune(four["url"], "--older-than", "1s", "--keep", "2", "--yes")
    assert set(counts(four["db"])) == {four["new"], four["old"], four["running"]}


def test_dry_run_lists_and_deletes_nothing(four: dict[str, Any]) -> None:
    before = counts(four["db"])
    out = prune(four["url"], "--older-than", "30d", "--dry-run").stdout
    assert "would delete: 2 runs" in out and four["old"] in out and four["older"] in out
    assert four["running"] not in out and four["new"] not in out
    assert counts(four["db"]) == before


def test_a_run_resumed_after_it_was_listed_is_kept(four: dict[str, Any]) -> None:
    db = four["db"]
    before = counts(db)
    still_running(db, four["old"])  # resumed between the listing and its turn to go
    assert delete_run(db, four["old"]) is None
    assert delete_run(db, four["running"]) is None
    assert counts(db) == before


def test_one_transaction_per_run_a_failure_keeps_the_run_whole(four: dict[str, Any]) -> None:
    """A delete that fails half-way (after the run's fills went) rolls back: the run is whole."""
    db = four["db"]
    if db.dialect.name == "sqlite":
        ddl = ["CREATE TRIGGER keep_orders BEFORE DELETE ON orders BEGIN SELECT RAISE(ABORT, 'kept'); END"]
    else:
        ddl = ["CREATE FUNCTION keep_orders() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'kept'; END $$ "
               "LANGUAGE plpgsql",
               "CREATE TRIGGER keep_orders BEFORE DELETE ON orders FOR EACH ROW EXECUTE FUNCTION keep_orders()"]
    with db.begin() as conn:
        for sql in ddl:
            conn.execute(text(sql))
    before = counts(db)
    res = runner.invoke(app, ["journal", "prune", "--older-than", "30d", "--yes", "--db", four["url"]])
    assert res.exit_code != 0 and "cannot delete run" in str(res.exception)
    assert counts(db) == before  # fills are deleted before orders: they came back with the rollback


def test_retention_days_prunes_when_a_run_starts(four: dict[str, Any], btc_1h: Path) -> None:
    db = four["db"]
    before = counts(db)
    new = backtest(four["url"], btc_1h, "--set", "storage.retention_days=30")
    after = counts(db)
    assert four["old"] not in after and four["older"] not in after
    assert after[four["running"]] == before[four["running"]] and after[four["new"]] == before[four["new"]]
    assert after[new]["equity_blocks"] > 0


def test_retention_off_by_default(four: dict[str, Any], btc_1h: Path) -> None:
    before = counts(four["db"])
    new = backtest(four["url"], btc_1h)
    after = counts(four["db"])
    assert {k: v for k, v in after.items() if k != new} == before


def bot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("args", "message"), [
    ([], "say what to prune: --older-than AGE (e.g. 30d), --keep N, or both"),
    (["--older-than", "30 days"], "bad --older-than '30 days'"),
    (["--keep", "-1"], "bad --keep -1"),
    (["--older-than", "1d", "--status", "running"], "a running run is never pruned"),
    (["--older-than", "1d", "--status", "done"], "bad --status 'done'"),
    (["--older-than", "0s"], "refusing to delete 1 run without --yes"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path, btc_1h: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    backtest(url, btc_1h)
    before = counts(open_database(url))
    res = bot("journal", "prune", *args, "--db", url, cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert counts(open_database(url)) == before


def test_retention_days_is_validated(tmp_path: Path) -> None:
    res = bot("backtest", "--set", "storage.retention_days=-1", "--db", f"sqlite:///{tmp_path / 'j.db'}",
              cwd=tmp_path)
    assert res.returncode == 2 and "storage.retention_days" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
