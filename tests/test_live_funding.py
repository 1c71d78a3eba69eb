"""Live funding: the simulator settles funding on the open linear position at the funding times
of its replay (the shared Bybit BTCUSDT funding file beside the candles) and emits executions of
``execType`` Funding, as Bybit does; the live bot journals each as a ``funding`` row through the
backtest's path (``Engine.on_funding``), and a backtest of the same bars with the same file has
the same rows and the same equity."""

from __future__ import annotations

from pathlib import Path

import torch

from bot import app as core
from bot.config import load_config
from bot.funding import load_funding
from bot.live import WARMUP_MARGIN, RunOptions
from bot.timeutil import ms_to_iso, parse_date
from broker.bybit_sim import SimServer
from broker.bybit_sim.private import account_of
from storage import queries as q
from tests.live_helpers import check_consistency, modules, set_keys, sim_cfg, started_frozen

H = 3_600_000
N_BARS = 14
torch.set_num_threads(1)

HOLD = '''
from bot.domain import Decision
from strategies.base import Strategy, StrategyParams


class Hold(Strategy):
    """Long, all the time: a position across every funding time."""

    name = "hold"
    Params = StrategyParams

    def on_bar(self, bars):
        return Decision(bars.symbol, bars.last_time(), 1.0)
'''


def _rows(db: object, run_id: str) -> list[tuple]:
    return [(r["symbol"], r["time"], r["rate"], r["qty"], r["price"], r["amount"]) for r in q.funding(db, run_id)]


async def test_live_on_the_simulator_journals_funding_like_the_backtest(btc_1h: Path, data_dir: Path,
                                                                       tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    set_keys(monkeypatch)
    (tmp_path / "hold.py").write_text(HOLD)
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    a = parse_date("2023-12-18T04:00:00Z")  # settlements at 08:00 and 16:00 fall inside the run
    b = a + N_BARS * H
    async with SimServer(sim_cfg(btc_1h, 400.0, start=a - 3 * H), modules()) as sim:
        cfg = load_config(None, [f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}",
                                 f"storage.url={db_url}", f"strategy.name={tmp_path / 'hold.py'}:Hold",
                                 "logging.level=warning", "exchange.timeout_s=2"])
        live = await started_frozen(sim, db_url, "live_start", core.live(
            cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(b),
            options=RunOptions(reconcile_every_s=3600, stream_check_s=0.1)), at_ms=a)
        acct = account_of(sim.state)
        settled = [e for e in acct.execs if e.exec_type == "Funding"]
        db = core.open_journal_db(db_url)
        check_consistency(db, live["run_id"], acct)
    rows = _rows(db, live["run_id"])
    assert [t for _, t, *_ in rows] == [a + 4 * H, a + 12 * H]  # 08:00 and 16:00
    # Each row is the venue's execution: the rate, the position, the open, -execFee.
    assert [(r[1], r[2], r[3], r[4], r[5]) for r in rows] == \
        [(e.time, float(e.fee_rate), e.qty, e.price, -e.fee) for e in settled]
    assert all(qty > 0 and amount != 0 for _, _, _, qty, _, amount in rows)
    assert live["funding_paid"] == float(-sum(r[5] for r in rows))

    strategy = core.build_strategy(cfg)
    w = strategy.warmup + WARMUP_MARGIN
    data = core.load_data(cfg, str(btc_1h), ms_to_iso(a - w * H), ms_to_iso(b))
    bt = core.backtest(cfg, data, strategy, db, show_progress=False, history=w,
                       funding=load_funding(data_dir / "bybit_BTCUSDT_funding_8h.csv.gz"))
    assert _rows(db, bt["run_id"]) == rows
    assert [r["equity"] for r in q.equity(db, bt["run_id"])] == [r["equity"] for r in q.equity(db, live["run_id"])]
    assert live["final_equity"] == bt["final_equity"]


async def test_a_resumed_paper_run_keeps_its_funding(btc_1h: Path, data_dir: Path, tmp_path: Path) -> None:
    """Paper on live candles with ``market.funding`` naming the file: stopped (SIGTERM) between two
    settlements and resumed, it ends with the uninterrupted run's funding rows, cash and equity:
    the resumed wallet counts the funding paid before the stop, no settlement is paid twice."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from bot.feeds.bybit import BybitFeed  # noqa: PLC0415

    (tmp_path / "hold.py").write_text(HOLD)
    probe = core.load_data(load_config(None, []), str(btc_1h))
    a, b = int(probe.time[900]), int(probe.time[900 + 30])
    # One buy, then holds (no rebalancing): the bars a resume catches up (never traded) change nothing.
    sets = [f"strategy.name={tmp_path / 'hold.py'}:Hold", "logging.level=error", "risk.rebalance_threshold=0.5",
            f"market.funding={data_dir / 'bybit_BTCUSDT_funding_8h.csv.gz'}"]

    async def run(url: str, stop_at: int | None) -> dict:
        async with SimServer(sim_cfg(btc_1h, 30.0, start=a)) as sim:
            cfg = load_config(None, [f"exchange.rest_url={sim.rest_url}", f"exchange.ws_url={sim.ws_url}",
                                     f"storage.url={url}", *sets])
            sent: list[int] = []

            class Terminating(BybitFeed):
                def _deliver(self, c):  # type: ignore[no-untyped-def]
                    super()._deliver(c)
                    if stop_at is not None and c.open_time == stop_at and not sent:
                        sent.append(c.open_time)
                        os.kill(os.getpid(), signal.SIGTERM)  # handled by the run's signal handler

            first = await started_frozen(sim, url, "paper_start", core.paper(
                cfg, date_from=ms_to_iso(a), date_to=ms_to_iso(b), options=RunOptions(feed_factory=Terminating)),
                at_ms=a)
            if stop_at is None:
                return first
            assert q.resolve_run(core.open_journal_db(url), first["run_id"])["status"] == "stopped"
            return await core.paper(cfg, run_id=first["run_id"])

    stopped_url, ref_url = f"sqlite:///{tmp_path / 'stopped.db'}", f"sqlite:///{tmp_path / 'ref.db'}"
    resumed = await run(stopped_url, a + 15 * H)
    ref = await run(ref_url, None)
    db, ref_db = core.open_journal_db(stopped_url), core.open_journal_db(ref_url)
    rows, want = _rows(db, resumed["run_id"]), _rows(ref_db, ref["run_id"])
    assert len(want) >= 3 and rows == want
    assert [t for _, t, *_ in rows if t <= a + 15 * H] and [t for _, t, *_ in rows if t > a + 16 * H]
    assert [(r["time"], r["cash"], r["equity"]) for r in q.equity(db, resumed["run_id"])] == \
        [(r["time"], r["cash"], r["equity"]) for r in q.equity(ref_db, ref["run_id"])]
    assert resumed["funding_paid"] == ref["funding_paid"] != 0
