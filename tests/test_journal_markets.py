"""A two-market run asked about one market at a time: `bot journal ... --symbol`, the summary with
a line per market, and the report's portfolio page with a section per market."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.errors import ConfigError
from bot.report import write_report
from storage import queries as q
from storage.db import open_database
from tests.test_report_cli import bot
from tests.test_report_support import BTC_1H, DATA_DIR

CONFIG = """
markets:
  - {symbol: BTCUSDT, data: bybit_BTCUSDT_1h.csv.gz, strategy: {name: sma}}
  - {symbol: ETHUSDT, data: bybit_ETHUSDT_1h.csv.gz, strategy: {name: sma, params: {fast: 5, slow: 20}}}
storage: {url: "%s"}
"""


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real two-market backtest (six weeks of hourly bars) in its own journal."""
    tmp = tmp_path_factory.mktemp("two")
    url = f"sqlite:///{tmp / 'j.db'}"
    (tmp / "two.yaml").write_text(CONFIG % url)
    res = CliRunner().invoke(app, ["backtest", "--config", str(tmp / "two.yaml"), "--from", "2024-01-01",
                                   "--to", "2024-02-15", "--json"], env={"BOT_DATA_DIR": str(DATA_DIR)})
    assert res.exit_code == 0, res.output
    db = open_database(url)
    return {"url": url, "db": db, "run": q.resolve_run(db, "latest"), "tmp": tmp}


def journal(two: dict[str, Any], *args: str) -> Any:
    res = CliRunner().invoke(app, ["journal", *args, "--db", two["url"]])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize(("what", "key"), [("trades", "id"), ("decisions", "id"), ("orders", "id"),
                                           ("fills", "exec_id")])
def test_symbol_filters_each_table_to_one_market(two: dict[str, Any], what: str, key: str) -> None:
    every = journal(two, what, "--format", "json")
    eth = journal(two, what, "--symbol", "ETHUSDT", "--format", "json")
    assert eth and all(r["symbol"] == "ETHUSDT" for r in eth)
    assert {r["symbol"] for r in every} == {"BTCUSDT", "ETHUSDT"}
    assert eth == [r for r in every if r["symbol"] == "ETHUSDT"]
    assert [r[key] for r in eth] == [r[key] for r in getattr(q, what)(two["db"], two["run"]["id"], symbol="ETHUSDT")]


def test_trades_of_two_markets_keep_their_own_ids(two: dict[str, Any]) -> None:
    trades = q.trades(two["db"], two["run"]["id"])
    assert len({t["id"] for t in trades}) == len(trades)
    summary = two["run"]["summary"]
    assert len(trades) == summary["n_trades"] == sum(m["n_trades"] for m in summary["markets"])


def test_equity_of_one_market_and_of_the_portfolio(two: dict[str, Any]) -> None:
    eth = journal(two, "equity", "--symbol", "ethusdt", "--format", "json")
    portfolio = journal(two, "equity", "--format", "json")
    assert {r["symbol"] for r in eth} == {"ETHUSDT"}
    assert len(portfolio) == len(eth)  # same timeframe: one portfolio row per bar time
    assert portfolio[-1]["equity"] == pytest.approx(two["run"]["summary"]["final_equity"])


@pytest.mark.parametrize("args", [["trades"], ["decisions"], ["orders"], ["fills"], ["equity"], ["summary"],
                                  ["explain", "whatever"]])
def test_a_market_the_run_did_not_trade_is_one_line_and_exit_2(two: dict[str, Any], args: list[str]) -> None:
    res = bot("journal", *args, "--symbol", "XRPUSDT", "--db", two["url"], cwd=two["tmp"])
    if args[0] == "explain":  # an unknown decision is reported first, as before
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
        return
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: run {two['run']['id']} did not trade XRPUSDT: its markets are BTCUSDT, ETHUSDT"]
    assert res.stdout == ""


def test_explain_refuses_another_markets_decision(two: dict[str, Any]) -> None:
    d = q.decisions(two["db"], two["run"]["id"], symbol="BTCUSDT")[-1]
    res = CliRunner().invoke(app, ["journal", "explain", d["id"], "--symbol", "ETHUSDT", "--db", two["url"]])
    assert isinstance(res.exception, ConfigError) and "is of BTCUSDT, not ETHUSDT" in str(res.exception)
    info = journal(two, "explain", d["id"], "--symbol", "BTCUSDT", "--format", "json")
    assert info["decision"]["symbol"] == "BTCUSDT"


def test_summary_lists_both_markets_and_agrees_with_the_run(two: dict[str, Any]) -> None:
    s = journal(two, "summary", "--format", "json")
    stored = two["run"]["summary"]
    assert [m["symbol"] for m in s["markets"]] == ["BTCUSDT", "ETHUSDT"]
    for key in ("final_equity", "total_return", "sharpe", "max_drawdown", "n_trades", "exposure_time",
                "buy_and_hold_return", "fees"):
        assert s[key] == pytest.approx(stored[key]), key
    for got, want in zip(s["markets"], stored["markets"], strict=True):
        for key in ("n_trades", "net_pnl", "fees", "buy_and_hold_return", "exposure_time", "candles", "allocation"):
            assert got[key] == pytest.approx(want[key]), (got["symbol"], key)
    assert sum(m["net_pnl"] for m in s["markets"]) == pytest.approx(s["final_equity"] - s["initial_equity"])
    eth = journal(two, "summary", "--symbol", "ETHUSDT", "--format", "json")
    assert eth["symbol"] == "ETHUSDT" and eth["n_trades"] == s["markets"][1]["n_trades"]
    assert "sharpe" not in eth  # an equity-curve figure is the portfolio's
    table = CliRunner().invoke(app, ["journal", "summary", "--db", two["url"]]).stdout
    assert "markets" in table and "BTCUSDT" in table and "ETHUSDT" in table


def test_runs_lists_the_markets(two: dict[str, Any]) -> None:
    rows = journal(two, "runs", "--format", "json")
    assert rows[0]["markets"] == 2 and rows[0]["symbol"] == "BTCUSDT,ETHUSDT"
    table = CliRunner().invoke(app, ["journal", "runs", "--db", two["url"]]).stdout
    assert "BTCUSDT, ETHUSDT" in table


def _manifest(page: str) -> dict[str, Any]:
    return json.loads(re.search(r'id="report-manifest">(.*?)</script>', page).group(1))  # type: ignore[union-attr]


def test_report_has_a_portfolio_page_and_a_section_per_market(two: dict[str, Any], tmp_path: Path) -> None:
    res = write_report(two["db"], two["run"]["id"], tmp_path, png=True)
    page = res.html.read_text()
    m = _manifest(page)
    assert m["kind"] == "portfolio" and m["sections"][:5] == ["summary", "markets", "equity", "contribution",
                                                              "monthly"]
    assert [x["symbol"] for x in m["markets"]] == ["BTCUSDT", "ETHUSDT"]
    for x in m["markets"]:
        s = x["symbol"].lower()
        assert x["sections"] == [f"market-{s}", f"position-{s}", f"trades-{s}", f"model-sma-{s}"]
        for fid in (f"fig-price-{s}", f"fig-position-{s}", f"fig-sma-{s}"):
            assert f'id="{fid}"' in page
    summary = json.loads(CliRunner().invoke(app, ["journal", "summary", "--format", "json", "--db",
                                                  two["url"]]).stdout)
    for key in ("total_return", "sharpe", "max_drawdown", "n_trades", "final_equity", "buy_and_hold_return"):
        assert f'data-key="{key}" data-value="{json.dumps(summary[key])}"' in page, key
    markets = re.search(r'<table class="list" id="markets-table">(.*?)</table>', page).group(1)  # type: ignore[union-attr]
    for line in summary["markets"]:
        row = re.search(rf'<tr data-market="{line["symbol"]}">(.*?)</tr>', markets).group(1)  # type: ignore[union-attr]
        for key in ("allocation", "n_trades", "net_pnl", "fees", "exposure_time", "buy_and_hold_return"):
            assert f'data-key="{key}" data-value="{json.dumps(line[key])}"' in row, (line["symbol"], key)
        s = line["symbol"].lower()
        trades = re.search(rf'id="trades-table-{s}">(.*?)</table>', page).group(1)  # type: ignore[union-attr]
        assert trades.count("<tr>") - 1 == line["n_trades"]  # header row + one per trade
        assert f'data-section="market-{s}" data-market="{line["symbol"]}"' in page
    assert "SMA(5)" in page and "SMA(20)" in page  # ETHUSDT's section draws its own params
    names = sorted(p.name for p in res.pngs)
    assert names == ["contribution.png", "equity.png", "monthly.png", "price-btcusdt.png", "price-ethusdt.png",
                     "sma-btcusdt.png", "sma-ethusdt.png", "summary.png"]


def test_contributions_add_up_to_the_portfolio_pnl(two: dict[str, Any]) -> None:
    from bot.report.portfolio import load_portfolio_data

    p = load_portfolio_data(two["db"], two["run"])
    total = p.contribution.sum(axis=1).to_numpy()
    assert total == pytest.approx(p.equity["equity"].to_numpy() - p.initial_cash, abs=1e-6)
    assert list(p.contribution.iloc[-1]) == pytest.approx([ln["net_pnl"] for ln in p.lines])


def test_one_market_report_keeps_its_structure(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    res = CliRunner().invoke(app, ["backtest", "--strategy", "sma", "--data", str(BTC_1H), "--from", "2024-01-01",
                                   "--to", "2024-01-20", "--db", url])
    assert res.exit_code == 0, res.output
    db = open_database(url)
    out = write_report(db, "latest", tmp_path / "r", png=False)
    m = _manifest(out.html.read_text())
    assert m["kind"] == "sma" and "markets" not in m
    # events: the funding file beside the candles was settled (its funding_rates event).
    assert m["sections"] == ["summary", "equity", "price", "monthly", "trades", "model-sma", "events", "run"]
    assert m["figures"] == ["fig-equity", "fig-price", "fig-monthly", "fig-sma"]
    assert "markets" not in json.loads(CliRunner().invoke(app, ["journal", "summary", "--format", "json",
                                                                "--db", url]).stdout)
