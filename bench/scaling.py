"""Past one machine, measured on this one: a sweep on 1 process, a process pool and a local Ray,
and the journal's write latency on PostgreSQL with 1 and 4 bots writing at once.

1. **Sweep.** 24 jobs: an SMA grid (fast 5/10/20 x slow 30/60/90/120) x 2 markets (BTCUSDT and
   ETHUSDT 1h, the whole files or the last ``--bars`` bars), each job a full journaled backtest
   (``bot sweep``'s own job, bot/sweep.py) into one SQLite journal. Serial, then a process pool
   and a local Ray with ``--workers`` each. Start-up (spawning the pool's workers or starting
   Ray, then one warm-up job per worker that imports the bot and opens the journal there) is
   timed apart from the 24 jobs: jobs/s is over the jobs alone.
2. **Many bots, one journal.** 1, then 4 processes each open a run on one fresh PostgreSQL
   schema and write ``--bot-bars`` bars the way a paper bot does (a decision, an order, its
   fill, the equity mark and the run's progress per bar, one write-ahead flush per bar); every
   flush is timed. p50 / p95 / max over all flushes of all bots, and rows written per second.

Run: ``python bench/scaling.py [--workers 2] [--bars N] [--pg URL]`` (``--pg`` defaults to
``$BOT_TEST_PG_URL``; the bench makes its own schema there and drops it).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from bot import app as core  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.domain import Decision, DecisionStatus, Fill, Order, OrderStatus, OrderType, Side  # noqa: E402
from bot.jobs import Jobs  # noqa: E402
from bot.sweep import Market, run_sweep  # noqa: E402
from storage.db import open_database  # noqa: E402
from storage.journal import Journal  # noqa: E402

DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))
GRID = [{"fast": f, "slow": s} for f in (5, 10, 20) for s in (30, 60, 90, 120)]


def markets(bars: int) -> list[Market]:
    out = []
    for symbol in ("BTCUSDT", "ETHUSDT"):
        cfg = load_config(None, [f"market.symbol={symbol}", "strategy.name=sma", "logging.level=error"])
        data = core.load_data(cfg, str(DATA / f"bybit_{symbol}_1h.csv.gz"))
        out.append(Market(cfg, data.slice(max(0, len(data) - bars), len(data)) if bars else data))
    return out


def warm(url: str) -> int:
    """A start-up job: the worker imports the backtest path and opens the journal once."""
    import bot.sweep  # noqa: F401, PLC0415

    open_database(url)
    time.sleep(0.5)  # long enough that every worker gets one
    return os.getpid()


def sweep_row(label: str, jobs: Jobs, mk: list[Market], url: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    with jobs:
        # Start-up: the pool spawns, Ray starts; one warm-up job per worker imports the bot there.
        jobs.map(warm, [(url,)] * jobs.workers, [f"warm {i}" for i in range(jobs.workers)])
        t1 = time.perf_counter()
        points = run_sweep(mk, GRID, url, jobs)
        t2 = time.perf_counter()
    assert sum(1 for p in points if p.run_id) == 24 and not jobs.retried
    return {"engine": label, "startup": t1 - t0, "jobs": t2 - t1, "rate": 24 / (t2 - t1),
            "figures": [p.figures for p in points]}


def bot_writer(url: str, bars: int, k: int, out: Any) -> None:
    """One bot's journal writes, a paper bot's shape: per bar one decision, order, fill, equity mark."""
    db = open_database(url)
    symbol = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")[k % 4]
    j = Journal.start_run(db, mode="paper", strategy="sma", symbol=symbol, timeframe="1h", category="linear",
                          config={"bench": k}, initial_cash=10_000.0, data_source="bench")
    t0 = 1_700_000_000_000
    lat = []
    for i in range(bars):
        t = t0 + i * 3_600_000
        did = f"{j.run_id}-{symbol}-{t}"
        j.record_decision(did, Decision(symbol, t, 1.0 if i % 2 else 0.0, explanation={"fast": 1.0, "slow": 0.5}),
                          100.0 + i, DecisionStatus.ORDER)
        oid = f"{j.run_id}-{i}"
        qty, px = Decimal("0.010"), Decimal(100 + i)
        j.record_order(Order(oid, symbol, Side.BUY if i % 2 else Side.SELL, qty, OrderType.MARKET, OrderStatus.FILLED,
                             t, t, decision_id=did, filled_qty=qty, avg_fill_price=px))
        j.record_fill(Fill(f"x{oid}", oid, symbol, Side.BUY if i % 2 else Side.SELL, qty, px, Decimal("0.001"), t))
        j.record_equity(symbol, t, 10_000.0 + i, 9_000.0, float(qty), float(px))
        j.set_progress(bars=i + 1, first_bar=t0, last_bar=t)
        s = time.perf_counter()
        j.flush()
        lat.append(time.perf_counter() - s)
    j.finish("completed", summary={"bars": bars})
    out.put(lat)


def journal_row(url: str, bots: int, bars: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=bot_writer, args=(url, bars, k, q)) for k in range(bots)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    lats = [q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    wall = time.perf_counter() - t0
    flat = sorted(x for lat in lats for x in lat)
    return {"bots": bots, "flushes": len(flat), "p50": statistics.median(flat) * 1e3,
            "p95": flat[int(0.95 * (len(flat) - 1))] * 1e3, "max": flat[-1] * 1e3,
            # rows over the time the slowest bot spent flushing: what the journal took in, all bots together
            "rows_s": len(flat) * 5 / max(sum(lat) for lat in lats), "wall": wall}


def pg_schema(base: str) -> tuple[str, Any]:
    """A fresh schema on ``base`` (URL, and a function that drops it)."""
    admin = create_engine(base)
    schema = f"bench_{secrets.token_hex(4)}"
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


def sweeps(args: argparse.Namespace, mk: list[Market], tmp: str) -> list[dict[str, Any]]:
    rows = []
    journals = [("SQLite", lambda label: f"sqlite:///{tmp}/{label.split()[0]}.db")]
    drops = []
    if args.pg:
        url, drop = pg_schema(args.pg)
        drops.append(drop)
        journals.append(("PostgreSQL", lambda label: url))
    try:
        for journal, url_of in journals:
            engines = [("serial", Jobs()), (f"process pool ({args.workers})", Jobs(args.workers))]
            if not args.skip_ray:
                engines.append((f"local Ray ({args.workers})", Jobs(args.workers, "auto")))
            for label, jobs in engines:
                url = url_of(label)
                open_database(url)
                rows.append({"journal": journal, **sweep_row(label, jobs, mk, url)})
                print(f"  {journal} {label}: done", file=sys.stderr)
    finally:
        for drop in drops:
            drop()
    assert all(r["figures"] == rows[0]["figures"] for r in rows), "an engine gave other results"
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bars", type=int, default=0, help="last N bars of each file (0: all)")
    ap.add_argument("--bot-bars", type=int, default=300)
    ap.add_argument("--pg", default=os.environ.get("BOT_TEST_PG_URL"))
    ap.add_argument("--skip-ray", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average {load:.1f} at the start, "
          f"python {sys.version.split()[0]}")
    mk = markets(args.bars)
    with tempfile.TemporaryDirectory() as tmp:
        rows = sweeps(args, mk, tmp)
    print(f"\n24-job SMA sweep ({len(GRID)} grid points x 2 markets, {len(mk[0].data):,} / {len(mk[1].data):,} "
          "1h bars), each job a journaled backtest; every engine gave the serial figures")
    print(f"{'journal':<11} {'engine':<22} {'start-up s':>10} {'24 jobs s':>10} {'jobs/s':>8} {'speed-up':>9}")
    for r in rows:
        base = next(x["rate"] for x in rows if x["journal"] == r["journal"])
        print(f"{r['journal']:<11} {r['engine']:<22} {r['startup']:>10.1f} {r['jobs']:>10.1f} {r['rate']:>8.2f} "
              f"{r['rate'] / base:>8.2f}x")
    if not args.pg:
        print("\n(no --pg / BOT_TEST_PG_URL: journal latency skipped)")
        return
    url, drop = pg_schema(args.pg)
    try:
        open_database(url)
        jr = [journal_row(url, n, args.bot_bars) for n in (1, 4)]
    finally:
        drop()
    print(f"\njournal writes on PostgreSQL, one flush per bar (decision + order + fill + equity + run progress), "
          f"{args.bot_bars} bars per bot")
    print(f"{'bots':>4} {'flushes':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'rows/s':>8}")
    for r in jr:
        print(f"{r['bots']:>4} {r['flushes']:>8} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['max']:>8.2f} "
              f"{r['rows_s']:>8.0f}")


if __name__ == "__main__":
    main()
