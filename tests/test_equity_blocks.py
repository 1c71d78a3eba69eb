"""The equity curve stored as blocks (storage/equity_codec.py, migration 0010): exact round trips,
first-written marks win, damaged blocks are refused, and old row journals migrate both ways."""

from __future__ import annotations

import array
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text

from storage import equity_codec as codec
from storage import pages
from storage import queries as q
from storage.db import alembic_config, upgrade


def curve(n: int, seed: int = 0, t0: int = 1_700_000_000_000, step: int = 3_600_000) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    times = t0 + step * np.arange(n, dtype=np.int64)
    eq = 10_000 + np.cumsum(rng.normal(size=n))
    held = rng.integers(0, 2, n).astype(bool)
    return times, eq, np.where(held, 3.25, eq), np.where(held, 0.123, 0.0), np.round(30_000 + rng.normal(size=n), 1)


def test_a_block_round_trips_every_value_exactly() -> None:
    cols = curve(5000, seed=1)
    back = codec.decode(codec.encode(*cols))
    assert back[0].dtype == np.int64 and all(b.dtype == np.float64 for b in back[1:])
    for got, want in zip(back, cols, strict=True):
        assert np.array_equal(got, want)
    one = codec.decode(codec.encode(array.array("q", [7]), array.array("d", [1.5]), [2.5], (0.0,), [-1e-300]))
    assert [c.tolist() for c in one] == [[7], [1.5], [2.5], [0.0], [-1e-300]]
    # irregular times (gaps, a bar per 1m and then 1d) survive the delta encoding
    times = np.array([5, 60_005, 86_460_005, 86_460_006], dtype=np.int64)
    assert codec.decode(codec.encode(times, *([np.ones(4)] * 4)))[0].tolist() == times.tolist()


def test_overlapping_blocks_keep_the_first_written_mark_in_time_order() -> None:
    t, eq, cash, pos, px = curve(10, seed=2)
    first = codec.encode(t[:6], eq[:6], cash[:6], pos[:6], px[:6])
    again = codec.encode(t[4:], eq[4:] + 100, cash[4:], pos[4:], px[4:])  # re-marks bars 4 and 5
    merged = codec.merge([first, again])
    assert merged[0].tolist() == t.tolist()
    assert merged[1].tolist() == [*eq[:6].tolist(), *(eq[6:] + 100).tolist()]
    later_first = codec.merge([again, first])  # written in the other order: bars 4, 5 from ``again``
    assert later_first[1][4:6].tolist() == (eq[4:6] + 100).tolist() and later_first[0].tolist() == t.tolist()
    assert [len(c) for c in codec.merge([])] == [0] * 5


def test_a_damaged_or_unknown_block_is_refused_with_its_reason() -> None:
    good = codec.encode(*curve(3))
    with pytest.raises(codec.EquityBlockError, match="format 9"):
        codec.decode(bytes([9]) + good[1:])
    with pytest.raises(codec.EquityBlockError, match="damaged"):
        codec.decode(good[:-4])
    with pytest.raises(ValueError, match="equal, non-empty"):
        codec.encode([1, 2], [1.0], [1.0], [1.0], [1.0])


def test_blocks_of_a_batch_are_one_per_market_in_bar_order() -> None:
    t, eq, cash, pos, px = curve(8)
    marks = [("BTCUSDT", t[:3], eq[:3], cash[:3], pos[:3], px[:3]),
             ("ETHUSDT", t[:1], eq[:1], cash[:1], pos[:1], px[:1]),
             ("BTCUSDT", (t[3],), (eq[3],), (cash[3],), (pos[3],), (px[3],)),
             ("BTCUSDT", t[4:], eq[4:], cash[4:], pos[4:], px[4:])]
    blocks = codec.blocks_of(marks)
    assert [(b[0], b[1], b[2], b[3]) for b in blocks] == [("BTCUSDT", int(t[0]), int(t[-1]), 8),
                                                          ("ETHUSDT", int(t[0]), int(t[0]), 1)]
    assert codec.decode(blocks[0][4])[1].tolist() == eq.tolist()


@pytest.fixture(params=["sqlite", "postgresql"])
def rows_journal(request: pytest.FixtureRequest, tmp_path: Path, pg_schema_url: Any) -> Engine:
    """A journal at revision 0009 (one equity row per bar) holding a two-market run, on SQLite or
    in a fresh PostgreSQL schema."""
    url = f"sqlite:///{tmp_path / 'old.db'}" if request.param == "sqlite" else pg_schema_url()
    engine = create_engine(url)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0009")
        conn.execute(text("INSERT INTO runs (id, mode, status, strategy, symbol, timeframe, category, config, "
                          "initial_cash, started_at, updated_at, bars) VALUES ('r1', 'backtest', 'completed', 'sma', "
                          "'BTCUSDT', '1h', 'linear', '{}', '10000', '2024-01-01', '2024-01-01', 12001)"))
        for sym, n, seed in (("BTCUSDT", 12_001, 3), ("ETHUSDT", 7, 4)):
            t, eq, cash, pos, px = curve(n, seed=seed)
            conn.execute(text("INSERT INTO equity (run_id, symbol, time, equity, cash, position, price) VALUES "
                              "('r1', :s, :t, :e, :c, :p, :x)"),
                         [{"s": sym, "t": int(a), "e": b, "c": c, "p": d, "x": e}
                          for a, b, c, d, e in zip(t.tolist(), eq.tolist(), cash.tolist(), pos.tolist(), px.tolist(),
                                                   strict=True)])
    return engine


def test_migration_0010_packs_every_row_into_blocks_and_unpacks_them_again(rows_journal: Engine) -> None:
    def stored() -> dict[str, list[tuple[Any, ...]]]:
        with rows_journal.connect() as conn:
            return {sym: [tuple(r) for r in conn.execute(text(
                "SELECT time, equity, cash, position, price FROM equity WHERE symbol = :s ORDER BY time"), {"s": sym})]
                for sym in ("BTCUSDT", "ETHUSDT")}

    before = stored()
    cfg = alembic_config(rows_journal)
    assert upgrade(rows_journal) == ScriptDirectory.from_config(cfg).get_current_head()
    assert "equity" not in inspect(rows_journal).get_table_names()
    assert q.count(rows_journal, "equity_blocks", "r1") == 3 + 1  # 12,001 bars in blocks of 5,000; ETH in one
    for sym, rows in before.items():
        got = [tuple(r[c] for c in codec.COLUMNS) for r in q.equity(rows_journal, "r1", sym)]
        assert got == rows, sym
    marks = pages.last_marks(rows_journal, "r1", ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    assert marks.keys() == {"BTCUSDT", "ETHUSDT"}
    assert (marks["BTCUSDT"]["time"], marks["BTCUSDT"]["equity"]) == before["BTCUSDT"][-1][:2]
    with rows_journal.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009")
    assert stored() == before
