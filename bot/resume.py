"""Continue an unfinished paper run from the journal, counting nothing twice.

A paper run journals one transaction per closed bar, so after a crash (even ``kill -9``) the
journal holds every bar up to some bar k completely and nothing after it. Resuming rebuilds,
from the journal and the same market bars:

- the wallet by replaying the run's fills through the simulated broker's own accounting,
  and the orders still working (a market order decided on bar k fills at bar k+1's open);
- the trade ledger by replaying the same fills (trades already journaled are not re-written:
  inserts ignore known ids), the equity curve, fees, counters and the risk manager's peaks;
- the strategy by showing it the warm-up bars and then every processed bar again, exactly
  as the first process did (its decisions are checked against the journal, then discarded).

The bar loop then continues with bar k+1, whose rows carry the same deterministic ids
(decision, client order, execution ids) an uninterrupted run would have written.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import Engine as DBEngine
from sqlalchemy import desc, select

from bot.bars import Bars
from bot.config import Config
from bot.domain import Candle, Fill, Order, OrderStatus, OrderType, Side
from bot.errors import ConfigError, StorageError
from broker.simulated import SimulatedBroker
from storage import queries as q
from storage import schema as s
from storage.journal import Journal

log = structlog.get_logger("bot.resume")

START_EVENT = "paper_start"
RESUME_EVENT = "paper_resume"


@dataclass
class ResumePlan:
    run: dict[str, Any]
    cfg: Config
    journal: Journal
    warmup_start: int
    warmup_bars: int
    first_open: int
    last_bar: int | None
    stop_at_ms: int | None

    @property
    def run_id(self) -> str:
        return str(self.run["id"])


def find_run(db: DBEngine, run_id: str | None, mode: str = "paper",
             start_event: str = START_EVENT) -> dict[str, Any]:
    """The given run, or the latest run of ``mode`` that did not complete and can be resumed.

    A run killed between its creation and its start event has processed no bar; it is skipped.
    """
    stmt = select(s.runs)
    if run_id:
        stmt = stmt.where(s.runs.c.id == run_id)
    else:
        started = select(s.events.c.run_id).where(s.events.c.kind == start_event)
        stmt = stmt.where(s.runs.c.mode == mode, s.runs.c.status != "completed", s.runs.c.id.in_(started)) \
            .order_by(desc(s.runs.c.started_at)).limit(1)
    with db.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        if run_id:
            raise StorageError(f"no run {run_id!r} in the journal")
        raise StorageError(f"no unfinished {mode} run to resume in the journal")
    run = dict(row._mapping)
    if run["mode"] != mode:
        raise ConfigError(f"run {run['id']} is a {run['mode']} run, not {mode}")
    if run["status"] == "completed":
        raise ConfigError(f"run {run['id']} already completed; start a new run instead")
    return run


def start_event(db: DBEngine, run_id: str, kind: str = START_EVENT) -> dict[str, Any]:
    """The payload of the event a run journaled when it started (what resuming it needs)."""
    with db.connect() as conn:
        row = conn.execute(select(s.events.c.payload).where(
            s.events.c.run_id == run_id, s.events.c.kind == kind).order_by(s.events.c.id).limit(1)).first()
    if row is None or not row[0]:
        raise StorageError(f"run {run_id} has no {kind} event: it cannot be resumed")
    return dict(row[0])


def plan(db: DBEngine, current: Config, run_id: str | None, stop_at_ms: int | None = None) -> ResumePlan:
    """Everything needed to continue a run; its own config wins except exchange/storage/logging."""
    run = find_run(db, run_id)
    start = start_event(db, run["id"])
    tree = dict(run["config"])
    tree.update({"exchange": current.exchange.model_dump(mode="json"),
                 "storage": current.storage.model_dump(mode="json"),
                 "logging": current.logging.model_dump(mode="json")})
    cfg = Config.model_validate(tree)
    journal = Journal(db, run["id"], cfg.storage.batch_size)
    return ResumePlan(run=run, cfg=cfg, journal=journal, warmup_start=int(start["warmup_start"]),
                      warmup_bars=int(start["warmup_bars"]), first_open=int(start["first_open"]),
                      last_bar=run["last_bar"],
                      stop_at_ms=stop_at_ms if stop_at_ms is not None else start.get("stop_at"))


def check_bars(p: ResumePlan, bars: list[Candle], tf_ms: int) -> None:
    """The rebuilt buffer must be the first process's: same warm-up start, no hole."""
    last = p.last_bar if p.last_bar is not None else p.first_open - tf_ms
    n = (last - p.warmup_start) // tf_ms + 1
    times = [c.open_time for c in bars]
    if not bars or times[0] != p.warmup_start or times[-1] != last or len(times) != n:
        raise StorageError(f"cannot rebuild run {p.run_id}: the exchange returned {len(times)} of the "
                           f"{n} bars from {p.warmup_start} to {last}")


def _order(row: dict[str, Any]) -> Order:
    return Order(
        client_order_id=row["id"], symbol=row["symbol"], side=Side(row["side"]), qty=row["qty"],
        order_type=OrderType(row["order_type"]), status=OrderStatus(row["status"]),
        created_time=int(row["created_time"]), updated_time=int(row["updated_time"]), price=row["price"],
        decision_id=row["decision_id"], exchange_order_id=row["exchange_order_id"],
        filled_qty=row["filled_qty"], avg_fill_price=row["avg_fill_price"],
        reject_reason=row["reject_reason"], adopted=bool(row["adopted"]),
    )


def _fill(row: dict[str, Any]) -> Fill:
    return Fill(exec_id=row["exec_id"], client_order_id=row["order_id"], symbol=row["symbol"],
                side=Side(row["side"]), qty=row["qty"], price=row["price"], fee=row["fee"],
                time=int(row["time"]), is_maker=bool(row["is_maker"]))


def restore(session: Any, p: ResumePlan) -> None:
    """``prepare`` hook for run_paper: rebuild wallet, books, risk and strategy; reopen the run."""
    eng, broker, bars, db = session.engine, session.broker, session.bars, p.journal.engine
    rid = p.run_id
    index = {int(t): i for i, t in enumerate(bars.time)}
    orders = q.orders(db, rid)
    fills = [_fill(r) for r in q.fills(db, rid)]
    by_id = {o["id"]: o for o in orders}
    # Wallet: the broker's own arithmetic over the journaled fills (exact Decimal).
    if not isinstance(broker, SimulatedBroker):
        raise ConfigError("resume rebuilds the simulated wallet; live runs reconcile with the venue")
    scratch = SimulatedBroker(broker.instrument, float(p.run["initial_cash"]), float(broker.fee_rate),
                              float(broker.slippage * 10_000))
    scratch.cash = Decimal(p.run["initial_cash"])
    for f in fills:
        scratch._apply(f.side, f.qty, f.price, f.fee)  # noqa: SLF001 - same accounting as live fills
    working = [_order(o) for o in orders if not OrderStatus(o["status"]).is_terminal]
    broker.restore(scratch.cash, scratch.qty, scratch.avg_price, scratch.realized, scratch.fees, working)
    broker._fill_seq = len(fills)  # noqa: SLF001 - execution ids continue the run's sequence
    # Books: trade ledger from the same fills, at the bar index each fill happened on.
    for f in fills:
        eng.ledger.on_fill(f, by_id[f.client_order_id]["decision_id"], index.get(f.time, 0))
    trades = q.trades(db, rid)
    eng.trade_pnls.extend(t["net_pnl"] for t in trades)
    eng.fees_paid = sum((f.fee for f in fills), Decimal(0))
    eq = q.equity(db, rid)
    for r in eq:
        eng.equity_curve.append(float(r["equity"]))
        eng.position_curve.append(float(r["position"]))
        cash_curve = getattr(eng, "cash_curve", None)
        if cash_curve is not None:
            cash_curve.append(float(r["cash"]))
        if eng._risk_active:  # noqa: SLF001
            eng.risk.on_equity(int(r["time"]), float(r["equity"]))
    decisions = q.decisions(db, rid)
    eng.n_decisions = len(decisions)
    eng.n_orders = len(orders)
    dec_time = {d["id"]: int(d["bar_time"]) for d in decisions}
    if orders:
        last_order = max(orders, key=lambda o: dec_time.get(o["decision_id"], 0))
        eng.risk.last_order_bar = index.get(dec_time.get(last_order["decision_id"], -1), -(10**9))
    acted = [d for d in decisions if d["status"] in ("order", "hold", "waiting", "blocked")]
    if acted and acted[-1]["target"] is not None:
        eng.target = float(acted[-1]["target"])
    eng.bar_index = bars.n - 1
    eng.last_bar = p.last_bar
    _replay_strategy(eng.strategy, bars, p, {int(d["bar_time"]): d for d in decisions})
    p.journal.reopen()
    p.journal.record_event(p.last_bar or p.first_open, RESUME_EVENT, {
        "last_bar": p.last_bar, "fills": len(fills), "working_orders": len(working),
        "cash": format(broker.cash, "f"), "position": format(broker.qty, "f")})
    p.journal.flush()
    log.info("paper_resumed", run=rid, last_bar=p.last_bar, bars=len(eq), fills=len(fills),
             working_orders=len(working))


def _replay_strategy(strategy: Any, bars: Bars, p: ResumePlan, journaled: dict[int, dict[str, Any]]) -> None:
    """Show the strategy the bars exactly as the first process did: warm-up, start, then bar by bar."""
    replay = Bars(bars.symbol, bars.timeframe, capacity=max(bars.n, 16))
    for i in range(min(p.warmup_bars, bars.n)):
        replay.append(bars.candle(i))
    strategy.on_start(replay)
    mismatches = 0
    for i in range(replay.n, bars.n):
        replay.append(bars.candle(i))
        try:
            d = strategy.on_bar(replay)
        except Exception:  # noqa: BLE001 - the journal already holds this bar's error decision
            continue
        if d is not None:
            j = journaled.get(d.bar_time)
            if j is None or (j["target"] != d.target and j["error"] is None):
                mismatches += 1
    if mismatches:
        log.warning("resume_strategy_mismatch", run=p.run_id, bars=mismatches)
        p.journal.record_event(p.last_bar or p.first_open, "resume_mismatch", {"bars": mismatches})


#: Columns that hold wall-clock times (paper orders are stamped with the wall clock).
_WALL_CLOCK = {"orders": ("created_time", "updated_time")}


def comparable_journal(db: DBEngine, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """A run's decisions, orders, fills, trades and equity with the run id and wall-clock stamps
    neutralised: two runs that decided, ordered and filled the same way compare equal."""
    def norm(v: Any) -> Any:
        return v.replace(run_id, "RUN") if isinstance(v, str) else v

    out: dict[str, list[dict[str, Any]]] = {}
    for name, rows in (("decisions", q.decisions(db, run_id)), ("orders", q.orders(db, run_id)),
                       ("fills", q.fills(db, run_id)), ("trades", q.trades(db, run_id)),
                       ("equity", q.equity(db, run_id))):
        skip = {"run_id", *_WALL_CLOCK.get(name, ())}
        out[name] = [{k: norm(v) for k, v in r.items() if k not in skip} for r in rows]
    out["orders"].sort(key=lambda r: r["id"])
    return out
