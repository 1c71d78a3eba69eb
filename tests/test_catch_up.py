"""Catch-up bars: when a feed delivers several closed bars of a market at once (a REST backfill
after downtime or a gap), only the newest may trade; the older ones are shown to the strategy and
journaled as ``catch_up``, never sent at their old close. A decision that met a working order is
looked at again when that order ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from bot.app.parts import simulated_brokers
from bot.bars import Bars
from bot.config import load_config
from bot.domain import Candle
from bot.runner import MarketSession, Runner, RunPlan
from bot.sources import StreamSource
from storage import queries as q
from storage.db import open_database
from tests.helpers import ScriptedStrategy, random_walk

N = 40
BACKFILL = range(10, 20)  # bars 10..19 arrive in one batch: 10..18 are catch-up, 19 the newest


async def _batches(candles: list[Candle]) -> AsyncIterator[list[Candle]]:
    i = 0
    while i < len(candles):
        if i == BACKFILL.start:
            yield candles[BACKFILL.start:BACKFILL.stop]
            i = BACKFILL.stop
            continue
        yield [candles[i]]
        i += 1


def _stream_run(sqlite_url: str, script: dict[int, float], *sets: str) -> tuple[object, str]:
    cfg = load_config(None, [f"storage.url={sqlite_url}", "broker.fee_rate=0", *sets])
    data = random_walk(N, seed=3)
    candles = list(data.candles())
    (broker,) = simulated_brokers(cfg)
    m = cfg.market
    session = MarketSession(m, ScriptedStrategy(script), Bars(m.symbol, m.timeframe), broker, market=broker)
    db = open_database(sqlite_url)
    runner = Runner(cfg, [session], db, source=StreamSource(_batches(candles)),
                    plan=RunPlan(mode="paper", data_source="test", durable=True))
    summary = asyncio.run(runner.run())
    return db, summary["run_id"]


def test_a_backfilled_batch_trades_only_its_newest_bar(sqlite_url: str) -> None:
    # A new target every bar (so every bar that may trade orders); bar 19 undoes bar 9's target.
    flip = {i: float(i % 2 if i < BACKFILL[-1] else (i + 1) % 2) for i in range(N)}
    db, run = _stream_run(sqlite_url, flip)
    decisions = q.decisions(db, run)
    status = {(int(d["bar_time"]) - int(decisions[0]["bar_time"])) // 3_600_000: d["status"] for d in decisions}
    assert [status[i] for i in BACKFILL[:-1]] == ["catch_up"] * (len(BACKFILL) - 1)
    assert status[BACKFILL[-1]] == "order"  # the newest bar of the batch trades, at its close
    assert all(status[i] == "order" for i in range(1, N) if i not in BACKFILL[:-1])
    catch_up = {d["id"] for d in decisions if d["status"] == "catch_up"}
    orders = q.orders(db, run)
    assert orders and not any(o["decision_id"] in catch_up for o in orders)
    # Catch-up bars are still marked: the equity curve has every bar.
    assert len(q.equity(db, run)) == N


def test_a_kill_switch_tripped_on_a_catch_up_bar_flattens_at_the_newest(sqlite_url: str) -> None:
    # Long from bar 1; the drawdown limit is so tight that the first losing catch-up bar trips it.
    db, run = _stream_run(sqlite_url, {1: 1.0}, "risk.max_drawdown=0.0001", "risk.kill_action=flatten")
    kills = [e for e in q.events(db, run) if e["kind"] == "kill_switch"]
    assert kills
    fills = q.fills(db, run)
    assert [f["side"] for f in fills] == ["Buy", "Sell"]
    sell = q.orders(db, run)[-1]
    (d,) = [d for d in q.decisions(db, run) if d["id"] == sell["decision_id"]]
    assert d["status"] == "order" and d["explanation"] == {"kill_switch": "max_drawdown"}
    assert int(d["bar_time"]) >= int(kills[0]["time"])
