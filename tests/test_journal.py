"""The journal round-trips through SQLite and the real PostgreSQL server, exactly and idempotently."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bot import app as core
from bot.config import load_config
from bot.domain import Decision, DecisionStatus, Fill, Order, OrderRequest, OrderStatus, Side
from bot.errors import StorageError
from bot.summary import journal_summary
from storage import queries as q
from storage.db import open_database
from storage.journal import Committed, Journal
from storage.journal_process import JournalProcess
from tests.conftest import PG_URL
from tests.helpers import ScriptedStrategy, random_walk


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, sqlite_url: str) -> Engine:
    # In CI a PostgreSQL test that cannot connect fails (open_database raises); it is never skipped.
    return open_database(sqlite_url if request.param == "sqlite" else PG_URL)


def _start(db: Engine) -> Journal:
    return Journal.start_run(db, mode="backtest", strategy="scripted", symbol="BTCUSDT", timeframe="1h",
                             category="linear", config={"k": 1}, initial_cash=10_000, data_source="t")


def test_round_trip_is_exact_and_idempotent(db: Engine) -> None:
    j = _start(db)
    d = Decision("BTCUSDT", 1_000, 0.5, 0.9, "m1", {"kind": "sma", "why": [1, 2]})
    j.record_decision("D1-" + j.run_id, d, 42_000.5, DecisionStatus.ORDER)
    req = OrderRequest("O1-" + j.run_id, "BTCUSDT", Side.BUY, Decimal("0.123"), decision_id="D1-" + j.run_id)
    order = Order.from_request(req, 1_000)
    j.record_order(order)
    j.flush()
    j.update_order(order.transition(OrderStatus.SUBMITTED, 1_001))
    fill = Fill("X1-" + j.run_id, req.client_order_id, "BTCUSDT", Side.BUY, Decimal("0.123"),
                Decimal("42000.1"), Decimal("0.0051660123"), 2_000)
    j.record_fill(fill)
    j.record_fill(fill)  # a replayed stream: the same execution id twice
    j.flush()
    j.record_fill(fill)  # and again after a flush
    j.record_equity("BTCUSDT", 1_000, 10_000.0, 10_000.0, 0.0, 42_000.5)
    j.finish("completed", {"n_trades": 0})
    (row,) = q.fills(db, j.run_id)
    assert row["price"] == Decimal("42000.1") and row["fee"] == Decimal("0.0051660123")
    assert row["qty"] == Decimal("0.123")
    (o,) = q.orders(db, j.run_id)
    assert o["status"] == "submitted" and o["decision_id"] == "D1-" + j.run_id
    (dec,) = q.decisions(db, j.run_id)
    assert dec["explanation"] == {"kind": "sma", "why": [1, 2]} and dec["target"] == 0.5
    run = q.resolve_run(db, j.run_id)
    assert run["status"] == "completed" and run["finished_at"] is not None
    assert run["initial_cash"] == Decimal("10000")


def test_a_deferred_explanation_completes_a_buffered_or_a_written_row(db: Engine) -> None:
    j = _start(db)
    eager = {"kind": "probe", "probs": [0.2, 0.8], "attribution": None}
    done = {"kind": "probe", "probs": [0.2, 0.8], "attribution": {"steps": [0.5, -0.25]}}
    for k in (1, 2):
        j.record_decision(f"D{k}-{j.run_id}", Decision("BTCUSDT", k * 1_000, 1.0, explanation=eager,
                                                       deferred=lambda: {}), 1.0, DecisionStatus.ORDER)
    j.complete_explanation(f"D1-{j.run_id}", done)  # still buffered: replaced in place
    j.flush()  # a write-ahead flush: D2 is written with its eager part, marked pending
    assert [d["explanation"] for d in q.decisions(db, j.run_id)] == [done, {**eager, "explanation_pending": True}]
    j.complete_explanation(f"D2-{j.run_id}", done)
    j.update_decision(f"D2-{j.run_id}", DecisionStatus.SUPERSEDED)  # both columns in one update
    j.flush()
    rows = q.decisions(db, j.run_id)
    assert [d["explanation"] for d in rows] == [done, done] and rows[1]["status"] == "superseded"


def test_backtest_journal_matches_summary(db: Engine) -> None:
    cfg = load_config(None, ["broker.slippage_bps=5"])
    data = random_walk(800, seed=3)  # 33 days of hourly bars: long enough to annualise
    script = {i: (1.0 if (i // 37) % 2 == 0 else -0.5) for i in range(0, 800, 13)}
    s = core.backtest(cfg, data, ScriptedStrategy(script), db, show_progress=False)
    assert isinstance(s["sharpe"], float) and isinstance(s["win_rate"], float)
    js = journal_summary(db, q.resolve_run(db, s["run_id"]))
    for key in ("candles", "n_trades", "final_equity", "total_return", "sharpe", "sortino", "max_drawdown",
                "win_rate", "fees", "exposure_time"):
        assert js[key] == pytest.approx(s[key], rel=1e-12, abs=1e-12), key
    trades = q.trades(db, s["run_id"])
    fills = q.fills(db, s["run_id"])
    realized = sum(t["gross_pnl"] for t in trades)
    fees = sum(f["fee"] for f in fills)
    assert float(fees) == pytest.approx(s["fees"])
    # Flat at the end -> final equity = initial + realised PnL - fees, to the cent.
    if s["open_position"] == 0:
        assert s["final_equity"] == pytest.approx(10_000 + float(realized) - float(fees), abs=1e-6)


def test_a_crash_marks_the_run_failed_not_complete(db: Engine) -> None:
    class Exploding(ScriptedStrategy):
        name = "exploding"

        def precompute(self, data):  # type: ignore[no-untyped-def]
            raise MemoryError("simulated crash")

    cfg = load_config(None, [])
    with pytest.raises(MemoryError):
        core.backtest(cfg, random_walk(50), Exploding({}), db, show_progress=False)
    run = next(r for r in q.list_runs(db) if r["strategy"] == "exploding")
    assert run["status"] == "failed" and "simulated crash" in run["error"]


def test_interrupted_run_is_marked_interrupted(db: Engine) -> None:
    cfg = load_config(None, [])
    s = core.backtest(cfg, random_walk(200), ScriptedStrategy({5: 1.0}), db, show_progress=False, stop_after=120)
    run = q.resolve_run(db, s["run_id"])
    assert run["status"] == "interrupted" and run["bars"] == 120
    assert len(q.equity(db, s["run_id"])) == 120


def test_large_backtest_writes_every_equity_row_from_the_second_process(db: Engine) -> None:
    """From 50k bars the journal is written by storage/journal_process.py: nothing is lost."""
    n = 260_000
    data = random_walk(n, seed=11)
    s = core.backtest(load_config(None, []), data, ScriptedStrategy({10: 1.0, 200_000: 0.0}), db,
                     show_progress=False)
    run = q.resolve_run(db, s["run_id"])
    assert run["status"] == "completed" and run["bars"] == n
    eq = q.equity(db, s["run_id"])
    assert len(eq) == n and q.count(db, "equity_blocks", s["run_id"]) == -(-n // 5000)  # a block per flush
    assert [r["time"] for r in eq[:3]] == [int(t) for t in data.time[:3]]
    assert eq[-1]["equity"] == pytest.approx(s["final_equity"])
    assert journal_summary(db, run)["sharpe"] == pytest.approx(s["sharpe"], rel=1e-12)


def test_the_second_process_writes_every_decimal_exactly(db: Engine) -> None:
    """Decimals reach the writer process as their text (a seventh of pickling a Decimal): every
    order, order update, fill, trade and funding amount reads back exactly as the engine had it."""
    j = _start(db)
    j.use_background_writer(process=True)
    assert j._proc is not None  # a file or server database: the process path
    tiny, odd = Decimal("1E-8"), Decimal("0.0051660123")
    order = Order.from_request(OrderRequest("O1", "BTCUSDT", Side.BUY, Decimal("0.123"),
                                            price=Decimal("42000.10")), 1_000)
    j.record_order(order)
    j.flush()
    j.update_order(order.transition(OrderStatus.SUBMITTED, 1_001).transition(
        OrderStatus.FILLED, 1_002, filled_qty=Decimal("0.123"), avg_fill_price=Decimal("41999.9")))
    j.record_fill(Fill("X1", "O1", "BTCUSDT", Side.BUY, Decimal("0.123"), Decimal("41999.9"), odd, 2_000))
    j.record_trade({"id": "T1", "symbol": "BTCUSDT", "direction": "long", "qty": Decimal("0.123"),
                    "entry_time": 1, "exit_time": 2, "entry_price": Decimal("41999.90000000"),
                    "exit_price": Decimal("42001.5"), "gross_pnl": tiny, "fees": odd, "net_pnl": tiny - odd,
                    "return_pct": 0.0, "bars_held": 1, "entry_decision_id": None, "exit_decision_id": None,
                    "exit_reason": None})
    j.record_funding("BTCUSDT", 3, 0.0001, Decimal("-0.123"), Decimal("42000"), Decimal("-0.5166"))
    j.finish("completed")
    (o,) = q.orders(db, j.run_id)
    assert (o["qty"], o["price"], o["filled_qty"], o["avg_fill_price"], o["status"]) == (
        Decimal("0.123"), Decimal("42000.1"), Decimal("0.123"), Decimal("41999.9"), "filled")
    (f,) = q.fills(db, j.run_id)
    assert (f["qty"], f["price"], f["fee"]) == (Decimal("0.123"), Decimal("41999.9"), odd)
    (t,) = q.trades(db, j.run_id)
    assert (t["gross_pnl"], t["fees"], t["net_pnl"], t["exit_price"]) == (tiny, odd, tiny - odd, Decimal("42001.5"))
    (fu,) = q.funding(db, j.run_id)
    assert (fu["qty"], fu["price"], fu["amount"]) == (Decimal("-0.123"), Decimal("42000"), Decimal("-0.5166"))


def test_explanations_encoded_before_the_pipe_read_back_as_written(db: Engine,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """When the writer process falls behind, this process encodes a batch's explanations itself
    (JournalProcess.BEHIND; here always): the rows read back as the writer would have stored them,
    a completed explanation (a decision update after a flush) too."""
    monkeypatch.setattr(JournalProcess, "BEHIND", 0)
    explained = {"kind": "dsc", "probs": {"down": 0.2, "flat": 0.3, "up": 0.5}, "signal": "long",
                 "attribution": {"steps": [0.01 * i - 0.03 for i in range(12)], "features": None}}
    j = _start(db)
    j.use_background_writer(process=True)
    j.record_decision("D1-" + j.run_id, Decision("BTCUSDT", 1_000, 1.0, 0.5, "m1", explained),
                      42_000.5, DecisionStatus.ORDER)
    j.record_decision("D2-" + j.run_id, Decision("BTCUSDT", 2_000, None, 0.0), 42_001.0, DecisionStatus.NO_TRADE)
    j.flush()
    j.complete_explanation("D2-" + j.run_id, {**explained, "signal": "flat"})
    j.finish("completed")
    got = {d["id"][:2]: d["explanation"] for d in q.decisions(db, j.run_id)}
    from storage import explain_codec

    assert got["D1"] == explain_codec.decode(explain_codec.encode(explained))
    assert got["D2"] == explain_codec.decode(explain_codec.encode({**explained, "signal": "flat"}))
    assert got["D1"]["attribution"]["steps"][0] == -0.03  # the vector's low end: stored exactly


def test_a_writer_process_that_dies_is_a_storage_error_never_a_hang(tmp_path: Path) -> None:
    """The writer cannot open its database: the engine's next send, sync or close says so."""
    proc = JournalProcess(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}", "r1", 10)
    marks = [("BTCUSDT", list(range(5000)), [1.0] * 5000, [1.0] * 5000, [0.0] * 5000, [1.0] * 5000)]
    batch = Committed("r1", [], {}, [], {}, [], [], marks, [], {"bars": 1})
    with pytest.raises(StorageError, match="journal writer process"):
        for _ in range(10_000):  # more than the queue and the pipe hold
            proc.put(batch)
        proc.sync()
    with pytest.raises(StorageError, match="journal writer process failed"):
        proc.close()


def test_a_prestarted_writer_is_the_next_runs_and_an_unused_one_exits_cleanly(tmp_path: Path) -> None:
    from storage import journal_process

    journal_process.prestart()
    (spare,) = journal_process._spare
    db = open_database(f"sqlite:///{tmp_path / 'j.db'}")
    j = _start(db)
    proc = JournalProcess(str(db.url), j.run_id, 10)
    assert proc._proc is spare and not journal_process._spare  # taken, not spawned
    proc.put(Committed(j.run_id, [], {}, [], {}, [], [], [("BTCUSDT", [1, 2], [1.0, 2.0], [1.0, 1.0], [0.0, 0.5],
                                                             [10.0, 12.0])], [], {"bars": 2}))
    proc.sync()
    proc.close()
    assert [r["equity"] for r in q.equity(db, j.run_id)] == [1.0, 2.0]
    journal_process.prestart()
    (unused,) = journal_process._spare
    journal_process._drop_spare()  # what happens at exit
    assert unused.returncode == 0 and not journal_process._spare
