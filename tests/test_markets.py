"""Many markets in one run: one wallet, an engine per market, a fixed order, portfolio risk.

Backtests of BTCUSDT and ETHUSDT together on the real Bybit candles; the one-market shorthand
and a one-element ``markets:`` list make the same run; bad market lists are one line and exit 2.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
import yaml

from bot import app as core
from bot.candles import merge_order
from bot.cli.run import market_data
from bot.config import load_config
from bot.domain import Side, decision_id
from bot.errors import ConfigError, DataError
from bot.sources import PreloadedSource, group_runs
from storage import queries as q
from storage.records import comparable_journal
from tests.helpers import ScriptedStrategy, random_walk

ROOT = Path(__file__).resolve().parents[1]
SPAN = ("2024-03-01", "2024-05-01")  # about 1,460 hourly bars per market
ETH_RULES = {"tick_size": 0.01, "qty_step": 0.01, "min_qty": 0.01}


def _config(tmp_path: Path, data_dir: Path, **over: object) -> Path:
    tree = {
        "markets": [
            {"symbol": "BTCUSDT", "data": str(data_dir / "bybit_BTCUSDT_1h.csv.gz"), "allocation": 0.5,
             "strategy": {"name": "sma", "params": {"fast": 5, "slow": 20}}},
            {"symbol": "ETHUSDT", "data": str(data_dir / "bybit_ETHUSDT_1h.csv.gz"), "allocation": 0.5, **ETH_RULES,
             "strategy": {"name": "sma", "params": {"fast": 8, "slow": 30}}},
        ],
        "broker": {"initial_cash": 10_000, "fee_rate": 0.001},
        "storage": {"url": f"sqlite:///{tmp_path / 'j.db'}"},
        "logging": {"level": "error"},
        **over,
    }
    p = tmp_path / "portfolio.yaml"
    p.write_text(yaml.safe_dump(tree))
    return p


def _bot(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _run(cfg_path: Path, *sets: str) -> tuple[dict, object]:
    cfg = load_config(cfg_path, list(sets))
    markets = market_data(cfg, None, *SPAN, None)
    db = core.open_journal_db(cfg.storage.url)
    return core.backtest_markets(cfg, markets, db, show_progress=False), db


# -- the order of bars -----------------------------------------------------------------------------
def test_same_close_bars_play_in_config_order_and_timeframes_interleave() -> None:
    hour, four = 3_600_000, 4 * 3_600_000
    h = np.arange(8, dtype=np.int64) * hour + hour      # close times of 8 hourly bars
    f = np.arange(2, dtype=np.int64) * four + four       # and of 2 four-hour bars
    order = merge_order([h, f]).tolist()
    assert order == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]       # the 4h bar after the 1h bar closing with it
    assert merge_order([f, h]).tolist() == [1, 1, 1, 0, 1, 1, 1, 1, 0, 1]

    seen: list[tuple[str, int, int]] = []

    class Book:
        def __init__(self) -> None:
            self.n = 0

    books = [Book(), Book()]

    class Eng:
        def __init__(self, k: int) -> None:
            self.k = k

        def on_bar(self) -> None:
            self.fill()
            self.decide()

        def fill(self) -> None:
            seen.append(("fill", self.k, books[self.k].n))

        def decide(self) -> None:
            seen.append(("decide", self.k, books[self.k].n))

    closes = np.sort(np.concatenate([h, f]), kind="stable")

    async def play() -> None:
        source = PreloadedSource(np.asarray(order), closes, total=7)
        async for batch in source.batches(books):  # type: ignore[arg-type]
            batch([Eng(0), Eng(1)])

    asyncio.run(play())
    # Bars that close together: both markets' fills (at their bars' open), then both decide.
    assert seen == [("fill", 0, 1), ("decide", 0, 1), ("fill", 0, 2), ("decide", 0, 2),
                    ("fill", 0, 3), ("decide", 0, 3), ("fill", 0, 4), ("fill", 1, 1), ("decide", 0, 4),
                    ("decide", 1, 1), ("fill", 0, 5), ("decide", 0, 5), ("fill", 0, 6), ("decide", 0, 6)]


@pytest.mark.parametrize(("order", "closes", "runs"), [
    ([0, 0, 0], [1, 2, 3], [((0,), 3)]),                                    # one market: one run
    ([0, 1, 0, 1, 0, 1], [1, 1, 2, 2, 3, 3], [((0, 1), 3)]),                # aligned: one run of pairs
    ([0, 0, 0, 0, 1, 0, 0], [1, 2, 3, 4, 4, 5, 6], [((0,), 3), ((0, 1), 1), ((0,), 2)]),  # 1h and 4h
    ([0, 1, 1, 0, 1], [1, 1, 2, 3, 3], [((0, 1), 1), ((1,), 1), ((0, 1), 1)]),  # a bar missing in one
    ([0, 1, 0, 2], [1, 1, 2, 2], [((0, 1), 1), ((0, 2), 1)]),                  # same length, other markets
    ([], [], []),
])
def test_group_runs_cuts_the_playing_order_into_runs_of_identical_groups(
        order: list[int], closes: list[int], runs: list[tuple[tuple[int, ...], int]]) -> None:
    got = group_runs(np.asarray(order, dtype=np.int32), np.asarray(closes, dtype=np.int64))
    assert got == runs
    assert [m for markets, k in got for _ in range(k) for m in markets] == order  # nothing lost or reordered


# -- one market: the list and the shorthand are the same run -----------------------------------------
def test_a_one_market_list_makes_the_shorthand_run(tmp_path: Path, btc_1h: Path) -> None:
    short = load_config(None, [f"storage.url=sqlite:///{tmp_path / 'a.db'}", "strategy.params.fast=5",
                               "strategy.params.slow=20"])
    one = tmp_path / "one.yaml"
    one.write_text(yaml.safe_dump({"markets": [{"symbol": "BTCUSDT",
                                                "strategy": {"name": "sma", "params": {"fast": 5, "slow": 20}}}]}))
    listed = load_config(one, [f"storage.url=sqlite:///{tmp_path / 'b.db'}"])
    assert short.markets == listed.markets and short.market.allocation == 1.0
    out = []
    for cfg in (short, listed):
        data = core.load_data(cfg, str(btc_1h), *SPAN)
        db = core.open_journal_db(cfg.storage.url)
        s = core.backtest(cfg, data, core.build_strategy(cfg), db, show_progress=False)
        assert "markets" not in s
        out.append(comparable_journal(db, s["run_id"]))
        ids = [d["id"] for d in q.decisions(db, s["run_id"])]
        assert ids[0] == decision_id(s["run_id"], int(q.decisions(db, s["run_id"])[0]["bar_time"]))  # run-bar
    assert out[0] == out[1] and out[0]["orders"]


# -- two markets, one wallet ---------------------------------------------------------------------------
def test_two_markets_share_one_wallet_and_keep_their_own_books(tmp_path: Path, data_dir: Path) -> None:
    summary, db = _run(_config(tmp_path, data_dir))
    rid = summary["run_id"]
    assert summary["symbol"] == "BTCUSDT,ETHUSDT" and [m["symbol"] for m in summary["markets"]] == ["BTCUSDT",
                                                                                                     "ETHUSDT"]
    run = q.resolve_run(db, rid)
    assert run["symbol"] == "BTCUSDT,ETHUSDT" and run["strategy"] == "sma,sma"
    for sym in ("BTCUSDT", "ETHUSDT"):
        fills = q.fills(db, rid, sym)
        assert fills and all(f["symbol"] == sym for f in fills)
        decisions = q.decisions(db, rid, symbol=sym)
        assert all(d["id"] == decision_id(rid, int(d["bar_time"]), sym) for d in decisions)
        assert all(o["decision_id"] in {d["id"] for d in decisions} for o in q.orders(db, rid, sym))
    # One wallet: the initial cash moved by every fill and every funding settlement (the funding
    # files beside the candles) of both markets, plus both positions at their last closes, is the
    # portfolio's final equity.
    cash = Decimal("10000") + sum((Decimal(r["amount"]) for r in q.funding(db, rid)), Decimal(0))
    assert {r["symbol"] for r in q.funding(db, rid)} == {"BTCUSDT", "ETHUSDT"}
    held: dict[str, Decimal] = {"BTCUSDT": Decimal(0), "ETHUSDT": Decimal(0)}
    for f in q.fills(db, rid):
        signed = f["qty"] if f["side"] == Side.BUY.value else -f["qty"]
        cash -= signed * f["price"] + f["fee"]
        held[f["symbol"]] += signed
    last = {sym: q.equity(db, rid, sym)[-1] for sym in held}
    assert {s: float(v) for s, v in held.items()} == {s: last[s]["position"] for s in held}
    marked = float(cash) + sum(float(held[s]) * last[s]["price"] for s in held)
    assert summary["final_equity"] == pytest.approx(marked, rel=1e-9)
    assert summary["n_trades"] == sum(m["n_trades"] for m in summary["markets"])
    # The portfolio curve is one row per time, the per-market curves one row per bar each.
    assert len(q.equity(db, rid)) == len({r["time"] for r in q.equity(db, rid)})
    assert len(q.equity(db, rid, "ETHUSDT")) == summary["markets"][1]["candles"]


def test_each_market_decides_on_its_own_bars_as_if_alone(tmp_path: Path, data_dir: Path) -> None:
    """Signals do not depend on the wallet: each market's targets equal a one-market run's."""
    summary, db = _run(_config(tmp_path, data_dir))
    for i, sym in enumerate(("BTCUSDT", "ETHUSDT")):
        (tmp_path / sym).mkdir()
        alone = _config(tmp_path / sym, data_dir)
        tree = yaml.safe_load(alone.read_text())
        tree["markets"] = [tree["markets"][i]]
        alone.write_text(yaml.safe_dump(tree))
        one, db1 = _run(alone)
        both = [(d["bar_time"], d["target"]) for d in q.decisions(db, summary["run_id"], symbol=sym)]
        single = [(d["bar_time"], d["target"]) for d in q.decisions(db1, one["run_id"])]
        assert both == single and both


def test_allocation_caps_each_markets_share_of_equity(tmp_path: Path, data_dir: Path) -> None:
    """Each order sizes its market to at most its allocation (50 %) of the portfolio's equity at
    the decision's close, at that close's price."""
    summary, db = _run(_config(tmp_path, data_dir))
    rid = summary["run_id"]
    for sym in ("BTCUSDT", "ETHUSDT"):
        eq = {r["time"]: r["equity"] for r in q.equity(db, rid, sym)}
        decisions = {d["id"]: d for d in q.decisions(db, rid, symbol=sym)}
        orders = {o["id"]: o for o in q.orders(db, rid, sym)}
        pos, shares = Decimal(0), []
        for f in q.fills(db, rid, sym):
            pos += f["qty"] if f["side"] == Side.BUY.value else -f["qty"]
            d = decisions[orders[f["order_id"]]["decision_id"]]
            shares.append(abs(float(pos)) * d["price"] / eq[d["bar_time"]])
        assert 0.45 < max(shares) <= 0.5 + 1e-9


def test_gross_exposure_cap_leaves_the_second_market_what_the_first_left(tmp_path: Path, data_dir: Path) -> None:
    cfg_path = _config(tmp_path, data_dir, risk={"max_gross_exposure": 0.6})
    summary, db = _run(cfg_path)
    rid = summary["run_id"]
    rows: dict[int, float] = {}
    for sym in ("BTCUSDT", "ETHUSDT"):
        for r in q.equity(db, rid, sym):
            rows.setdefault(r["time"], 0.0)
            rows[r["time"]] += abs(r["position"] * r["price"]) / r["equity"]
    # The cap binds when an order is sized (an order on its way counts as filled); prices drift
    # afterwards, so look at the bars where fills happened (one bar after the decision).
    at_fills = [rows[int(f["time"])] for f in q.fills(db, rid)]
    assert 0.55 < max(at_fills) <= 0.6 * 1.03
    assert max(rows.values()) > 0.55  # without the cap both markets would reach 50 % at once


def test_a_kill_switch_trip_flattens_every_market(tmp_path: Path) -> None:
    two = tmp_path / "two.yaml"
    two.write_text(yaml.safe_dump({"markets": [{"symbol": "BTCUSDT"}, {"symbol": "ETHUSDT", **ETH_RULES}]}))
    cfg = load_config(two, [f"storage.url=sqlite:///{tmp_path / 'k.db'}", "risk.max_drawdown=0.02"])
    a, b = random_walk(300, seed=1), random_walk(300, seed=2)
    b = type(b)("ETHUSDT", "1h", b.time, b.open, b.high, b.low, b.close, b.volume, "eth", b.gaps)
    strategies = [ScriptedStrategy({5: 1.0}), ScriptedStrategy({5: -1.0})]
    db = core.open_journal_db(cfg.storage.url)
    s = core.backtest_markets(cfg, [core.MarketData(a, strategies[0]), core.MarketData(b, strategies[1])], db,
                              show_progress=False)
    kills = [e for e in q.events(db, s["run_id"]) if e["kind"] == "kill_switch"]
    assert len(kills) == 1
    assert all(m["open_position"] == 0.0 for m in s["markets"])
    flat = [d for d in q.decisions(db, s["run_id"]) if d["explanation"] and "kill_switch" in d["explanation"]]
    assert {d["symbol"] for d in flat} == {"BTCUSDT", "ETHUSDT"}


# -- the CLI ---------------------------------------------------------------------------------------------
def test_backtest_a_portfolio_from_the_cli(tmp_path: Path, data_dir: Path) -> None:
    p = _config(tmp_path, data_dir)
    r = _bot("backtest", "--config", str(p), "--from", SPAN[0], "--to", SPAN[1], "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [m["symbol"] for m in out["markets"]] == ["BTCUSDT", "ETHUSDT"]
    r = _bot("backtest", "--config", str(p), "--from", SPAN[0], "--to", SPAN[1])
    assert r.returncode == 0 and "markets" in r.stdout and "ETHUSDT" in r.stdout


@pytest.mark.parametrize(("change", "message"), [
    ({"markets.1.symbol": "BTCUSDT"}, "market BTCUSDT is listed twice"),
    ({"markets.0.allocation": 0.8}, "allocations sum to 1.3"),
    ({"markets.1.data": "bybit_BTCUSDT_1h.csv.gz"}, "the file name says BTCUSDT but the market is ETHUSDT"),
    ({"markets.1.timeframe": "4h"}, "the file name says 1h candles but the market's timeframe is 4h"),
    ({"markets.0.strategy.name": "nosuch"}, "unknown strategy"),
])
def test_bad_market_lists_are_one_line_and_exit_2(tmp_path: Path, data_dir: Path, change: dict, message: str) -> None:
    p = _config(tmp_path, data_dir)
    sets = [f"--set={k}={v}" for k, v in change.items()]
    r = _bot("backtest", "--config", str(p), *sets, "--from", SPAN[0], "--to", SPAN[1])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert not (tmp_path / "j.db").exists() or not q.list_runs(core.open_journal_db(f"sqlite:///{tmp_path / 'j.db'}"))


def test_one_market_flags_are_refused_for_a_portfolio(tmp_path: Path, data_dir: Path) -> None:
    cfg = load_config(_config(tmp_path, data_dir))
    with pytest.raises(ConfigError, match="--data names one market's file"):
        market_data(cfg, str(data_dir / "bybit_BTCUSDT_1h.csv.gz"), *SPAN, None)
    with pytest.raises(ConfigError, match="works on one market"):
        _ = cfg.market
    with pytest.raises(DataError, match="the file name says ETHUSDT"):
        core.load_data(load_config(None, []), str(data_dir / "bybit_ETHUSDT_1h.csv.gz"))


def test_markets_of_different_timeframes_interleave_by_close(tmp_path: Path) -> None:
    """A 1h and a 4h market: every 4h bar plays after the 1h bar that closes with it, and the
    portfolio curve is one row per close time, the 4h market's where both close."""
    two = tmp_path / "mixed.yaml"
    two.write_text(yaml.safe_dump({"markets": [{"symbol": "BTCUSDT"}, {"symbol": "ETHUSDT", "timeframe": "4h",
                                                                       **ETH_RULES}]}))
    cfg = load_config(two, [f"storage.url=sqlite:///{tmp_path / 'm.db'}"])
    hourly = random_walk(96, seed=3)
    w = random_walk(24, seed=4)
    four = 4 * 3_600_000
    t4 = hourly.time[0] + np.arange(24, dtype=np.int64) * four
    slow = type(w)("ETHUSDT", "4h", t4, w.open, w.high, w.low, w.close, w.volume, "eth4h", w.gaps)
    db = core.open_journal_db(cfg.storage.url)
    s = core.backtest_markets(cfg, [core.MarketData(hourly, ScriptedStrategy({3: 1.0, 50: 0.0})),
                                    core.MarketData(slow, ScriptedStrategy({2: -1.0}))], db, show_progress=False)
    curve = q.equity(db, s["run_id"])  # rows labelled like the 1h bars: close minus one hour
    closes = [r["time"] + 3_600_000 for r in curve]
    assert closes == sorted(set(closes)) and len(curve) == 96
    assert all(r["symbol"] == "ETHUSDT" for r, c in zip(curve, closes, strict=True) if c % four == 0)
    assert {m["symbol"]: m["candles"] for m in s["markets"]} == {"BTCUSDT": 96, "ETHUSDT": 24}


def test_one_market_keys_on_a_markets_list(tmp_path: Path) -> None:
    """``--strategy`` and ``market.*`` overrides reach a one-element list, and are one clear
    error for several markets."""
    one = tmp_path / "one.yaml"
    one.write_text(yaml.safe_dump({"markets": [{"symbol": "ETHUSDT", **ETH_RULES}]}))
    cfg = load_config(one, ["market.timeframe=4h"], {"strategy.name": "sma"})
    assert (cfg.market.symbol, cfg.market.timeframe, cfg.strategy.name) == ("ETHUSDT", "4h", "sma")
    with pytest.raises(ConfigError, match="this config lists 2 markets: set it on each, e.g. markets.0.strategy.name"):
        load_config(ROOT / "examples" / "portfolio.yaml", [], {"strategy.name": "sma"})
    assert load_config(ROOT / "examples" / "portfolio.yaml").symbols == ["BTCUSDT", "ETHUSDT"]
