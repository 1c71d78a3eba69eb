"""Parity: the same candles through backtest, paper and live-on-simulator give the same
decisions, orders and fills; live fills differ from the raw open only by the simulator's
configured slippage (and the bot's backtest applies the same slippage, so all three agree)."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

import torch

from bot import app as core
from bot.live import WARMUP_MARGIN, RunOptions
from bot.timeutil import ms_to_iso
from broker.bybit_sim import SimServer
from broker.bybit_sim.private import account_of
from storage.records import comparable_journal
from tests.live_helpers import check_consistency, live_cfg, modules, set_keys, sim_cfg, started_frozen

A_INDEX = 400
N_BARS = 32
SLIP_BPS = 2.0
H = 3_600_000

torch.set_num_threads(1)


def _strip(rows: list[dict], *cols: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in cols} for r in rows]


async def test_backtest_paper_and_live_agree(btc_1h: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    set_keys(monkeypatch)
    probe = core.load_data(live_cfg("x", "x", "sqlite://"), str(btc_1h))
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    extra = (f"broker.slippage_bps={SLIP_BPS}",)
    a = int(probe.time[A_INDEX])
    # Live on the simulator (its own slippage), starting three bars before A: the driver waits for
    # A's warm-up to close. The periodic venue check is off so the books come from fills alone.
    async with SimServer(sim_cfg(btc_1h, 400.0, start=a - 3 * H), modules(slippage_bps=SLIP_BPS)) as sim:
        cfg = live_cfg(sim.rest_url, sim.ws_url, db_url, *extra)
        live = await started_frozen(sim, db_url, "live_start", core.live(
            cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(a + N_BARS * H),
            options=RunOptions(reconcile_every_s=3600, stream_check_s=0.1)), at_ms=a)
        acct = account_of(sim.state)
        db = core.open_journal_db(db_url)
        check_consistency(db, live["run_id"], acct)
        raw_open = {int(e.time): e for e in acct.execs}
    b = a + N_BARS * H
    async with SimServer(sim_cfg(btc_1h, 12.0, start=a - 2 * H)) as sim:
        paper = await started_frozen(sim, db_url, "paper_start", core.paper(
            live_cfg(sim.rest_url, sim.ws_url, db_url, *extra), date_from=ms_to_iso(a), date_to=ms_to_iso(b)),
            at_ms=a)
    strategy = core.build_strategy(cfg)
    w = strategy.warmup + WARMUP_MARGIN
    data = core.load_data(cfg, str(btc_1h), ms_to_iso(a - w * H), ms_to_iso(b))
    bt = core.backtest(cfg, data, strategy, db, show_progress=False, history=w)

    runs = {name: comparable_journal(db, s["run_id"]) for name, s in
            (("live", live), ("paper", paper), ("backtest", bt))}
    assert live["candles"] == N_BARS and live["orders"] >= 4
    for name in ("paper", "live"):
        assert runs[name]["decisions"] == runs["backtest"]["decisions"], name
        assert _strip(runs[name]["orders"], "exchange_order_id") == \
            _strip(runs["backtest"]["orders"], "exchange_order_id"), name
        assert _strip(runs[name]["fills"], "exec_id") == _strip(runs["backtest"]["fills"], "exec_id"), name
        assert runs[name]["equity"] == runs["backtest"]["equity"], name
    # Every live fill is the bar's open moved against the trader by exactly the configured slippage.
    slip = Decimal(repr(SLIP_BPS)) / 10_000
    tick = Decimal("0.10")
    for t, e in raw_open.items():
        i = int(probe.time.searchsorted(t))
        o = Decimal(repr(float(probe.open[i])))
        want = o * (1 + slip) if e.order.side == "Buy" else o * (1 - slip)
        rounding = ROUND_CEILING if e.order.side == "Buy" else ROUND_FLOOR
        assert e.price == ((want / tick).to_integral_value(rounding=rounding) * tick).quantize(tick)
        assert e.price != o
    assert live["final_equity"] == bt["final_equity"]
