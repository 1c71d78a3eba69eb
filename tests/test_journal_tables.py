"""`bot journal ...` for people and for programs: tables that fit 100 columns (whole with
--wide), ISO-8601 UTC times in JSON and CSV, and one unit (percent) in every table."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from bot.cli import app, common
from bot.cli.tables import short_ids
from bot.report import write_report
from bot.timeutil import iso_utc
from storage import queries as q
from storage.db import open_database
from tests.test_report_support import BTC_1H, DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
LISTINGS = ("runs", "decisions", "orders", "fills", "trades", "equity", "events")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")
#: Epoch-ms columns of each listing (JSON/CSV show them as ISO-8601 UTC).
TIMES = {"decisions": ["bar_time"], "orders": ["created_time", "updated_time"], "fills": ["time"],
         "trades": ["entry_time", "exit_time"], "equity": ["time"], "events": ["time"]}
CONFIG = """
markets:
  - {symbol: BTCUSDT, data: bybit_BTCUSDT_1h.csv.gz, strategy: {name: sma}}
  - {symbol: ETHUSDT, data: bybit_ETHUSDT_1h.csv.gz, strategy: {name: sma, params: {fast: 5, slow: 20}}}
risk: {max_drawdown: 0.03, kill_action: freeze}
storage: {url: "%s"}
"""
runner = CliRunner()


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A one-market run, then a two-market run whose kill switch trips (an event), in one journal."""
    tmp = tmp_path_factory.mktemp("tables")
    url = f"sqlite:///{tmp / 'j.db'}"
    (tmp / "two.yaml").write_text(CONFIG % url)
    one = runner.invoke(app, ["backtest", "--strategy", "sma", "--data", str(BTC_1H), "--from", "2024-01-01",
                              "--to", "2024-02-15", "--db", url, "--json"])
    two = runner.invoke(app, ["backtest", "--config", str(tmp / "two.yaml"), "--from", "2024-01-01",
                              "--to", "2024-02-15", "--json"], env={"BOT_DATA_DIR": str(DATA_DIR)})
    assert one.exit_code == 0 and two.exit_code == 0, one.output + two.output
    db = open_database(url)
    runs = {"one": json.loads(one.stdout)["run_id"], "two": json.loads(two.stdout)["run_id"]}
    assert q.events(db, runs["two"]), "the two-market run should have tripped its kill switch"
    return {"url": url, "db": db, "runs": runs, "tmp": tmp}


def show(journal: dict[str, Any], monkeypatch: pytest.MonkeyPatch, width: int, *args: str) -> str:
    monkeypatch.setattr(common, "console", Console(width=width, soft_wrap=True))
    res = runner.invoke(app, ["journal", *args, "--db", journal["url"]])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.stdout


def run_args(what: str, run_id: str) -> list[str]:
    return [what] if what == "runs" else [what, "--run", run_id]


@pytest.mark.parametrize("which", ["one", "two"])
@pytest.mark.parametrize("what", LISTINGS)
def test_default_tables_fit_100_columns(journal: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                        what: str, which: str) -> None:
    args = run_args(what, journal["runs"][which])
    narrow = show(journal, monkeypatch, 100, *args)
    assert max(len(line) for line in narrow.splitlines()) <= 100
    # Not squeezed by the console: the table itself fits, so on a wider console nothing changes.
    roomy = show(journal, monkeypatch, 300, *args)
    assert roomy == narrow
    if what != "events" or which == "two":
        assert len(narrow.splitlines()) > 3  # a title, a header, a rule and rows


@pytest.mark.parametrize("what", LISTINGS)
def test_wide_shows_every_column_and_whole_ids(journal: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                               what: str) -> None:
    rid = journal["runs"]["two"]
    out = show(journal, monkeypatch, 100, *run_args(what, rid), "--wide")
    db = journal["db"]
    ids = {
        "runs": lambda: [r["id"] for r in q.list_runs(db)],
        "decisions": lambda: [d["id"] for d in q.decisions(db, rid)],
        "orders": lambda: [x for o in q.orders(db, rid) for x in (o["id"], o["decision_id"], o["exchange_order_id"])],
        "fills": lambda: [x for f in q.fills(db, rid) for x in (f["exec_id"], f["order_id"])],
        "trades": lambda: [x for t in q.trades(db, rid) for x in (t["id"], t["entry_decision_id"],
                                                                    t["exit_decision_id"])],
        "equity": lambda: [],
        "events": lambda: [],
    }[what]()
    words = set(out.split())
    missing = [i for i in ids if i and i not in words]
    assert missing == []
    header = {"runs": "finished", "decisions": "explanation", "orders": "exchange id", "fills": "maker",
              "trades": "entry decision", "equity": "equity", "events": "payload"}[what]
    assert header in out
    if what in ("orders", "fills", "trades", "decisions"):
        default = show(journal, monkeypatch, 100, *run_args(what, rid))
        assert header not in default or what == "equity"
        assert not any(i in default.split() for i in ids if len(i) > 13)  # shortened by default


def test_short_ids_drop_the_run_and_keep_a_unique_tail() -> None:
    assert short_ids(["ab12cd34-1740661200000", "ab12cd34-1740686400000"], "ab12cd34") == [
        "1740661200000", "1740686400000"]
    exec_ids = ["e0cbe81d-0f18-5866-9415-cf319b5dab3b", "e0cbe81d-0f18-5866-9415-cf319b5dab4b", None]
    shown = short_ids(exec_ids, "ab12cd34")
    assert shown == ["…5dab3b", "…5dab4b", ""]  # six characters tell them apart
    orders = [f"ab12cd34-4314-17406{i}1200000-0" for i in range(10)]
    shown = short_ids(orders, "ab12cd34")
    assert len(set(shown)) == 10 and all(o.endswith(s.lstrip("…")) for o, s in zip(orders, shown, strict=True))
    assert all(len(s) <= 14 for s in shown)


def test_default_ids_are_tails_of_the_journal_ids(journal: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    rid = journal["runs"]["one"]
    out = show(journal, monkeypatch, 100, "orders", "--run", rid)
    orders = q.orders(journal["db"], rid)
    rows = [line.split() for line in out.splitlines()[3:] if line.strip()]
    assert len(rows) == len(orders)
    for cells, o in zip(rows, orders, strict=True):
        shown_id, shown_decision = cells[0], cells[1]
        assert o["id"].endswith(shown_id.lstrip("…")) and len(shown_id) < len(o["id"])
        assert o["decision_id"] == f"{rid}-{shown_decision}"  # the run's prefix dropped: the decision's bar


@pytest.mark.parametrize("what", LISTINGS)
def test_json_and_csv_times_are_iso_8601_utc(journal: dict[str, Any], what: str) -> None:
    rid = journal["runs"]["two"]
    db = journal["db"]
    res = runner.invoke(app, ["journal", *run_args(what, rid), "--format", "json", "--db", journal["url"]])
    rows = json.loads(res.stdout)
    assert rows
    stored = q.list_runs(db) if what == "runs" else q.equity(db, rid) if what == "equity" else \
        getattr(q, what)(db, rid)
    for key in TIMES.get(what, ["started_at", "finished_at"]):
        assert all(ISO.match(r[key]) for r in rows), (key, rows[0][key])
        assert [r[key] for r in rows] == [iso_utc(x[key]) for x in stored]
    res = runner.invoke(app, ["journal", *run_args(what, rid), "--format", "csv", "--db", journal["url"]])
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(table) == len(rows)
    for key in TIMES.get(what, ["started_at"]):
        assert [r[key] for r in table] == [r[key] for r in rows]


def test_explain_json_times_are_iso(journal: dict[str, Any]) -> None:
    rid = journal["runs"]["one"]
    order = q.orders(journal["db"], rid)[0]
    res = runner.invoke(app, ["journal", "explain", order["id"], "--format", "json", "--db", journal["url"]])
    info = json.loads(res.stdout)
    assert info["decision"]["bar_time"] == iso_utc(q.find_decision(journal["db"], order["id"])["bar_time"])
    assert ISO.match(info["orders"][0]["created_time"]) and ISO.match(info["fills"][0]["time"])
    assert ISO.match(info["run"]["started_at"]) and ISO.match(info["run"]["first_bar"])


def test_columns_env_is_honoured_by_the_real_command(journal: dict[str, Any]) -> None:
    for args in (["runs"], ["decisions", "--run", journal["runs"]["two"]]):
        r = subprocess.run([sys.executable, "-m", "bot", "journal", *args, "--db", journal["url"]], cwd=ROOT,
                           capture_output=True, text=True, timeout=120, check=False,
                           env={**os.environ, "COLUMNS": "100"})
        assert r.returncode == 0, r.stderr
        assert max(len(line) for line in r.stdout.splitlines()) <= 100


PERCENT_ROWS = {"total_return": "total return", "buy_and_hold_return": "buy & hold", "cagr": "CAGR",
                "max_drawdown": "max drawdown", "win_rate": "win rate", "exposure_time": "exposure"}


def _cells(table: str) -> dict[str, str]:
    """{label: value} of a two-column rich table (either style)."""
    out = {}
    for line in table.splitlines():
        parts = [p.strip() for p in re.split(r"\s{2,}|│", line) if p.strip()]
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


def test_backtest_summary_report_and_journal_summary_show_one_unit(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    monkeypatch.setattr(common, "console", Console(width=200, soft_wrap=True))
    res = runner.invoke(app, ["backtest", "--strategy", "sma", "--data", str(BTC_1H), "--from", "2024-01-01",
                              "--to", "2024-02-15", "--db", url])
    assert res.exit_code == 0, res.output
    shown_backtest = _cells(res.stdout)
    summary = runner.invoke(app, ["journal", "summary", "--db", url])
    shown_journal = _cells(summary.stdout)
    data = json.loads(runner.invoke(app, ["journal", "summary", "--format", "json", "--db", url]).stdout)
    page = write_report(open_database(url), "latest", tmp_path / "r", png=False).html.read_text()
    for key, label in PERCENT_ROWS.items():
        value = data[key]
        assert isinstance(value, float) and abs(value) < 10  # JSON: a fraction
        text = shown_backtest[label]
        assert text.endswith("%") and float(text.rstrip("%")) == pytest.approx(value * 100, abs=0.005)
        assert shown_journal[key] == text, key
        assert f'data-value="{json.dumps(value)}">{text}</td>' in page, key
    assert shown_journal["sharpe"] == shown_backtest["Sharpe"] == f"{data['sharpe']:.2f}"
    rows = list(csv.reader(io.StringIO(runner.invoke(app, ["journal", "summary", "--format", "csv", "--db",
                                                           url]).stdout)))
    assert float(dict(r for r in rows if len(r) == 2)["total_return"]) == pytest.approx(data["total_return"])


def test_a_short_paper_run_says_na_not_millions_of_percent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """27 hourly bars cannot be annualised, and a run without a closed trade has no win rate."""
    url = f"sqlite:///{tmp_path / 'j.db'}"
    monkeypatch.setattr(common, "console", Console(width=200, soft_wrap=True))
    common_args = ["--strategy", "sma", "--data", str(BTC_1H), "--from", "2024-03-01", "--to", "2024-03-02T03:00",
                   "--db", url, "--set", "strategy.params.fast=2", "--set", "strategy.params.slow=20"]
    res = runner.invoke(app, ["run", "--mode", "paper", "--feed", "replay", "--speed", "0", *common_args])
    assert res.exit_code == 0, res.output
    shown = _cells(res.stdout)
    data = json.loads(runner.invoke(app, ["journal", "summary", "--format", "json", "--db", url]).stdout)
    assert data["mode"] == "paper" and data["candles"] == 27, data["candles"]
    for key, label in (("cagr", "CAGR"), ("sharpe", "Sharpe"), ("sortino", "Sortino"),
                       ("volatility", "volatility (ann.)")):
        assert data[key] is None and shown[label] == "n/a", key
    assert "annualised figures need 30 days of bars" in res.stdout
    journal_table = _cells(runner.invoke(app, ["journal", "summary", "--db", url]).stdout)
    assert journal_table["cagr"] == journal_table["sharpe"] == "n/a"
    page = write_report(open_database(url), "latest", tmp_path / "r", png=False).html.read_text()
    assert 'data-key="cagr" data-value="null">n/a</td>' in page
    assert 'data-key="sharpe" data-value="null">n/a</td>' in page
    if data["n_trades"] == 0:
        assert data["win_rate"] is None and data["profit_factor"] is None and shown["win rate"] == "n/a"
