"""One runner, one position book, a broker protocol reconciliation can use."""

from __future__ import annotations

import ast
import asyncio
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot import app as core
from bot import reconcile as rec
from bot.config import load_config
from bot.domain import Side
from bot.positions import PositionBook
from bot.runner import run_to_end
from storage.records import run_snapshot
from tests.helpers import ScriptedStrategy, random_walk

ROOT = Path(__file__).resolve().parents[1]
D = Decimal


# -- the position book: one copy of the arithmetic, as a table -------------------------------------
#  side, qty, price, fee  ->  qty, avg, realised, cash moved
BOOK = [
    ("Buy", "2", "100", "0.2", "2", "100", "0", "-200.2"),        # open long
    ("Buy", "2", "110", "0.22", "4", "105", "0", "-220.22"),      # add: weighted entry
    ("Sell", "1", "120", "0.12", "3", "105", "15", "119.88"),     # partial close: (120-105) x 1
    ("Sell", "5", "90", "0.45", "-2", "90", "-30", "449.55"),     # flip: close 3 at -15 each, short 2 at 90
    ("Buy", "2", "80", "0.16", "0", "0", "-10", "-160.16"),       # close short: +10 x 2
]


def test_position_book_table() -> None:
    book = PositionBook()
    for side, qty, price, fee, q_after, avg, realised, cash in BOOK:
        moved = book.apply(Side(side), D(qty), D(price), D(fee))
        assert (book.qty, book.avg_price, book.realized, moved) == (D(q_after), D(avg), D(realised), D(cash)), side
    assert book.fees == D("1.15")


def test_spot_book_tracks_quantity_only() -> None:
    book = PositionBook()
    book.apply(Side.BUY, D("1"), D("100"), D("0"), track_entry=False)
    book.apply(Side.SELL, D("0.4"), D("150"), D("0"), track_entry=False)
    assert (book.qty, book.avg_price, book.realized) == (D("0.6"), D(0), D(0))


def test_both_brokers_book_through_the_domain() -> None:
    for path in ("broker/simulated.py", "broker/bybit/venue_events.py"):
        src = (ROOT / path).read_text()
        assert "book.apply(" in src, path
        assert "avg_price = (abs(old)" not in src, path  # no second copy of the arithmetic


# -- nothing writes another object's private fields ---------------------------------------------------
def _foreign_private_writes(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else []
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, ast.Attribute) and sub.attr.startswith("_") and not sub.attr.startswith("__") \
                        and not (isinstance(sub.value, ast.Name) and sub.value.id in ("self", "cls")):
                    out.append(f"{path.relative_to(ROOT)}:{sub.lineno} .{sub.attr}")
    return out


def test_no_module_writes_another_objects_private_fields() -> None:
    found = [w for pkg in ("bot", "strategies", "models", "storage", "broker")
             for p in sorted((ROOT / pkg).rglob("*.py")) if "bybit_sim" not in p.parts
             for w in _foreign_private_writes(p)]
    # Bars.preloaded builds its own instance (a classmethod writing the new object's arrays).
    assert [w for w in found if not w.startswith("bot/bars.py")] == []


def test_the_old_drivers_are_gone() -> None:
    for name in ("run_backtest", "run_paper", "run_paper_bybit", "run_live", "restore_books", "open_session"):
        for pkg in ("bot", "broker", "storage"):
            for p in (ROOT / pkg).rglob("*.py"):
                assert f"def {name}(" not in p.read_text(), (name, p)


# -- reconciliation talks to the broker interface only ---------------------------------------------
def test_reconcile_imports_no_concrete_broker() -> None:
    tree = ast.parse((ROOT / "bot/reconcile.py").read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
           {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in mods if m and m.startswith("broker")}


def test_reconcile_a_simulated_run_through_the_protocol(tmp_path: Path) -> None:
    """The simulated broker answers the venue questions from its own wallet: a finished backtest
    reconciles with nothing to resolve and the journal's position equal to the wallet's."""
    cfg = load_config(None, [f"storage.url=sqlite:///{tmp_path / 'j.db'}"])
    db = core.open_journal_db(cfg.storage.url)
    data = random_walk(80)


    summary = core.backtest(cfg, data, ScriptedStrategy({5: 1.0, 40: 0.5, 60: 1.0}), db, show_progress=False)
    snap = run_snapshot(db, summary["run_id"])
    broker = core.simulated_brokers(cfg)[0]
    broker.restore(snap.initial_cash, snap.fills, snap.orders)
    held = broker.position().qty
    assert held == D(str(summary["open_position"]))

    from storage.journal import Journal

    journal = Journal(db, summary["run_id"])
    session = SimpleNamespace(journal=journal, broker=broker, engine=SimpleNamespace(last_bar=None))
    rep = asyncio.run(rec.reconcile(session, start_qty=D(0), run_start_ms=int(data.time[0])))
    assert rep.resolved == [] and rep.adopted == [] and rep.fills_added == 0
    assert rep.position_venue == rep.position_journal == format(held, "f")


def test_reconcile_stops_on_a_position_nobody_explains(tmp_path: Path) -> None:
    cfg = load_config(None, [f"storage.url=sqlite:///{tmp_path / 'j.db'}"])
    db = core.open_journal_db(cfg.storage.url)
    data = random_walk(40)
    summary = core.backtest(cfg, data, ScriptedStrategy({5: 1.0}), db, show_progress=False)
    snap = run_snapshot(db, summary["run_id"])
    broker = core.simulated_brokers(cfg)[0]
    broker.restore(snap.initial_cash, snap.fills, snap.orders)
    from storage.journal import Journal

    session = SimpleNamespace(journal=Journal(db, summary["run_id"]), broker=broker,
                              engine=SimpleNamespace(last_bar=None))
    # The journal says the run started flat plus its fills; claim it started holding 1 more.
    with pytest.raises(rec.ReconcileError, match="the journal accounts for"):
        asyncio.run(rec.reconcile(session, start_qty=D(1), run_start_ms=int(data.time[0])))


def test_a_backtest_runs_inside_a_running_event_loop(tmp_path: Path) -> None:
    """Backtests never wait on I/O: their run completes without (and inside) an event loop."""
    cfg = load_config(None, [f"storage.url=sqlite:///{tmp_path / 'j.db'}"])
    db = core.open_journal_db(cfg.storage.url)

    async def inside() -> dict:
        return core.backtest(cfg, random_walk(30), ScriptedStrategy({3: 1.0}), db, show_progress=False)

    assert asyncio.run(inside())["candles"] == 30


def test_run_to_end_refuses_a_coroutine_that_waits() -> None:
    async def waits() -> None:
        await asyncio.sleep(0)  # yields to a loop once

    with pytest.raises(RuntimeError, match="waited on I/O"):
        run_to_end(waits())
