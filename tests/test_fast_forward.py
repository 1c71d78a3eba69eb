"""Backtests play quiet bars as blocks (``Engine.fast_forward``, ``Strategy.quiet``): the bars on
which no order works, the broker has nothing to do (no funding time, the liquidation price not
touched, no protective level) and the strategy would not decide are marked in one step. The
journal must be exactly the bar-by-bar one, row for row and float for float, with funding,
leverage, shorts, protective exits, a kill switch and spot; and the SMA's own fast path must
leave its state as bar-by-bar evaluation does, never reading past the bars it claims."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot import app as core
from bot.bars import Bars
from bot.cli.run import market_data
from bot.config import load_config
from bot.domain import Category, Instrument, OrderRequest, Side
from bot.sources import PreloadedSource
from broker.margin import MarginRule
from broker.simulated import SimulatedBroker
from storage import queries as q
from storage.db import open_database
from storage.records import comparable_journal
from strategies.base import StrategyContext
from strategies.sma import SMACrossover, SMAParams

SLICE = ("2024-01-01", "2024-07-01")

CASES: dict[str, dict[str, Any]] = {
    "long only, funding, 1x": {},
    "long and short, 10x margin": {"strategy.params.allow_short": True, "market.leverage": 10.0,
                                   "risk.max_exposure": 10.0, "strategy.params.fast": 3,
                                   "strategy.params.slow": 7},
    "stop, target and trailing stop": {"market.exits": {"stop_loss": {"fraction": 0.01},
                                                        "take_profit": {"fraction": 0.03},
                                                        "trailing_stop": {"fraction": 0.02}}},
    "kill switch on drawdown": {"risk.max_drawdown": 0.05},
    "spot": {"market.category": "spot"},
}


def journal(data_dir: Path, url: str, sets: dict[str, Any], fast: bool,
            monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(PreloadedSource, "fast_forward", fast)
    cfg = load_config(None, [], {"strategy.name": "sma", "storage.url": url, **sets})
    (md,) = market_data(cfg, str(data_dir / "bybit_BTCUSDT_1h.csv.gz"), *SLICE, None)
    db = open_database(url)
    s = core.backtest_markets(cfg, [md], db, show_progress=False)
    rid = s["run_id"]

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:  # ids name their run: the same but for that
        return [{k: v.replace(rid, "RUN") if isinstance(v, str) else v for k, v in r.items()
                 if k not in ("run_id", "created_at", "updated_at")} for r in rows]

    summary = {k: v for k, v in s.items() if k not in ("run_id", "elapsed_s", "candles_per_s")}
    return {"summary": summary, "equity": strip(q.equity(db, rid)), "fills": strip(q.fills(db, rid)),
            "orders": strip(q.orders(db, rid)), "trades": strip(q.trades(db, rid)),
            "decisions": strip(q.decisions(db, rid)), "funding": strip(q.funding(db, rid)),
            "events": [(e["time"], e["kind"]) for e in q.events(db, rid)]}


@pytest.fixture
def sma_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many bars the SMA's ``on_bar`` was shown (``n``, reset by the test between runs)."""
    calls = {"n": 0}
    on_bar = SMACrossover.on_bar

    def counted(self: SMACrossover, bars: Bars) -> Any:
        calls["n"] += 1
        return on_bar(self, bars)

    monkeypatch.setattr(SMACrossover, "on_bar", counted)
    return calls


@pytest.mark.parametrize("case", list(CASES))
def test_fast_forward_journals_exactly_the_bar_by_bar_run(case: str, data_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          sma_calls: dict[str, int]) -> None:
    calls = sma_calls
    slow = journal(data_dir, f"sqlite:///{tmp_path / 'slow.db'}", CASES[case], False, monkeypatch)
    bar_by_bar, calls["n"] = calls["n"], 0
    fast = journal(data_dir, f"sqlite:///{tmp_path / 'fast.db'}", CASES[case], True, monkeypatch)
    for part in slow:
        assert fast[part] == slow[part], f"{case}: {part} differs"
    assert len(slow["equity"]) == bar_by_bar == slow["summary"]["candles"] > 4000
    assert slow["summary"]["n_trades"] >= 3
    if case == "kill switch on drawdown":
        assert calls["n"] == bar_by_bar  # a kill switch watches every bar's equity: nothing skipped
        assert any(kind == "kill_switch" for _, kind in slow["events"])
    else:
        assert calls["n"] < bar_by_bar / 2  # the strategy saw only the bars that could matter
    if case == "long only, funding, 1x":
        assert slow["funding"]
    if case == "long and short, 10x margin":
        assert {f["side"] for f in slow["fills"]} == {"Buy", "Sell"} and slow["summary"]["n_trades"] > 300
    if case == "stop, target and trailing stop":
        assert {t["exit_reason"] for t in slow["trades"]} >= {"stop_loss", "trailing_stop"}


ETH = {"symbol": "ETHUSDT", "tick_size": 0.01, "qty_step": 0.01, "min_qty": 0.01}
GROUPS: dict[str, dict[str, Any]] = {
    "BTC and ETH, long only": {},
    "BTC and ETH, long and short at 5x, gross cap": {
        "all": {"leverage": 5.0}, "risk": {"max_exposure": 5.0, "max_gross_exposure": 3.0}, "short": True},
    "three markets, one joining later": {"third": True},
}


def group_journal(data_dir: Path, tmp_path: Path, name: str, case: dict[str, Any], fast: bool,
                  monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A multi-market backtest's journal (every market's rows, ids without the run's)."""
    import pandas as pd
    import yaml

    monkeypatch.setattr(PreloadedSource, "fast_forward", fast)
    sma = {"name": "sma", "params": {"fast": 5, "slow": 20, "allow_short": case.get("short", False)}}
    markets = [{"symbol": "BTCUSDT", "data": str(data_dir / "bybit_BTCUSDT_1h.csv.gz"), "strategy": sma},
               {**ETH, "data": str(data_dir / "bybit_ETHUSDT_1h.csv.gz"),
                "strategy": {**sma, "params": {**sma["params"], "fast": 8, "slow": 30}}}]
    if case.get("third"):  # BTC's candles again under another symbol, from two months in: groups change
        late = tmp_path / "late.csv.gz"
        df = pd.read_csv(data_dir / "bybit_BTCUSDT_1h.csv.gz")
        df[df.timestamp >= pd.Timestamp("2024-03-01", tz="UTC").value // 10**6].to_csv(late, index=False)
        markets.append({"symbol": "XBTUSDT", "data": str(late), "strategy": {**sma, "params": {"fast": 3, "slow": 12}}})
    for m in markets:
        m.update(case.get("all", {}))
    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    tree = {"markets": markets, "storage": {"url": url}, "risk": case.get("risk", {}), "logging": {"level": "error"}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    cfg = load_config(path, [])
    db = open_database(url)
    s = core.backtest_markets(cfg, market_data(cfg, None, *SLICE, None), db, show_progress=False)
    rid = s["run_id"]
    drop = ("run_id", "elapsed_s", "candles_per_s")
    summary = {k: v for k, v in s.items() if k not in drop}
    summary["markets"] = [{k: v for k, v in m.items() if k not in drop} for m in s["markets"]]
    rest = {"portfolio": q.equity(db, rid), "funding": q.funding(db, rid)}
    return {**comparable_journal(db, rid), "summary": summary,
            **{name: [{k: v for k, v in r.items() if k != "run_id"} for r in rows] for name, rows in rest.items()}}


@pytest.mark.parametrize("case", list(GROUPS))
def test_markets_that_close_together_skip_their_quiet_bars_exactly(case: str, data_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   sma_calls: dict[str, int]) -> None:
    """bot/blocks.py: a group's block marks every market at the portfolio's equity as bar by bar
    would (markets before it at this bar's close, after it at the previous one): same journal."""
    calls = sma_calls
    slow = group_journal(data_dir, tmp_path, "slow", GROUPS[case], False, monkeypatch)
    bar_by_bar, calls["n"] = calls["n"], 0
    fast = group_journal(data_dir, tmp_path, "fast", GROUPS[case], True, monkeypatch)
    for part in slow:
        assert fast[part] == slow[part], f"{case}: {part} differs"
    assert len(slow["equity"]) == bar_by_bar and len({r["symbol"] for r in slow["equity"]}) >= 2
    assert slow["summary"]["n_trades"] >= 20
    assert calls["n"] < bar_by_bar / 2  # the strategies saw only the bars that could matter
    if "short" in GROUPS[case]:
        assert {f["side"] for f in slow["fills"]} == {"Buy", "Sell"}


def test_the_broker_needs_the_bar_that_reaches_a_liquidation_price_or_a_funding_time() -> None:
    """``SimulatedBroker.quiet_bars``: a 10x long is quiet until the first bar whose low reaches its
    liquidation price (the float pre-check of ``on_bar``), a short until a high does; the next
    funding time stops the block at the first bar opening at or after it; an order working, none."""
    btc = Instrument("BTCUSDT", Category.LINEAR, D("0.1"), D("0.001"), D("0.001"), D("5"))
    t = np.arange(10, dtype=np.int64) * 3_600_000
    for side, lows, highs, want in (
            (Side.BUY, [99.0] * 6 + [90.4] + [99.0] * 3, [101.0] * 10, 6),  # long: LP 90.5
            (Side.SELL, [99.0] * 10, [101.0] * 3 + [109.6] + [101.0] * 6, 3)):  # short: LP 109.5
        b = SimulatedBroker(btc, 10_000.0, 0.001, 0.0, margin=MarginRule(leverage=D(10)))
        b.set_listener(lambda order, fill: None)
        b.submit(OrderRequest("c1", "BTCUSDT", side, D("100")), 0)
        assert b.quiet_bars({"time": t, "low": np.array(lows), "high": np.array(highs)}) == 0  # working
        b.on_bar(0, 100.0, 100.0, 100.0, 100.0)
        up = {"time": t + 3_600_000, "low": np.array(lows), "high": np.array(highs)}
        assert b.qty and b.quiet_bars(up) == want
        b.set_funding([int(t[2]) + 3_600_000 + 1], [0.0001], 0)
        assert b.quiet_bars(up) == min(want, 3)  # bar 3 is the first to open after the funding time


def sma(short: bool = False) -> SMACrossover:
    return SMACrossover(SMAParams(fast=5, slow=12, allow_short=short),
                        StrategyContext("BTCUSDT", "1h", long_only=not short))


def state(s: SMACrossover) -> tuple[Any, ...]:
    return (s._fast_sum, s._slow_sum, list(s._fast_q), list(s._slow_q), s._last)


@pytest.mark.parametrize("seed", range(5))
def test_sma_quiet_leaves_the_bar_by_bar_state_and_reads_no_further(seed: int) -> None:
    rng = np.random.default_rng(seed)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 3000)))
    t = np.arange(3000, dtype=np.int64) * 3_600_000
    bars = Bars.preloaded("BTCUSDT", "1h", t, closes, closes, closes, closes, np.ones(3000))
    ref, ff = sma(short=bool(seed % 2)), sma(short=bool(seed % 2))
    want = []  # the bars on which bar-by-bar evaluation decides
    for i in range(3000):
        bars.n = i + 1
        if ref.on_bar(bars) is not None:
            want.append(i)
    bars.n = 0
    got = []
    while bars.n < 3000:
        upcoming = bars.upcoming(3000)
        before = state(ff)
        k = ff.quiet(upcoming)
        if k:
            # the bars after the k it claimed are not read: garbage there changes nothing
            other = sma(short=bool(seed % 2))
            other._fast_sum, other._slow_sum, other._last = before[0], before[1], before[4]
            other._fast_q.extend(before[2])
            other._slow_q.extend(before[3])
            junk = {f: a.copy() for f, a in upcoming.items()}
            junk["close"][k + 1:] = rng.uniform(1, 1e6, max(0, len(junk["close"]) - k - 1))
            assert other.quiet(junk) == k and state(other) == state(ff)
        bars.n += k
        if bars.n < 3000:
            bars.n += 1
            if ff.on_bar(bars) is not None:
                got.append(bars.n - 1)
    assert got == want and len(want) > 50
    assert state(ff) == state(ref)
