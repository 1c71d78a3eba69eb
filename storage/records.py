"""Typed records that cross the storage boundary: what a resumed run is rebuilt from.

Rows become domain objects here, once, so that nothing above storage parses journal rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, desc, select

from bot.domain import DecisionStatus, ExitReason, Fill, Order, OrderStatus, OrderType, RunStatus, Side
from bot.errors import ConfigError, StorageError
from storage import queries as q
from storage import schema as s


def order_from_row(row: dict[str, Any]) -> Order:
    return Order(
        client_order_id=row["id"], symbol=row["symbol"], side=Side(row["side"]), qty=row["qty"],
        order_type=OrderType(row["order_type"]), status=OrderStatus(row["status"]),
        created_time=int(row["created_time"]), updated_time=int(row["updated_time"]), price=row["price"],
        decision_id=row["decision_id"], exchange_order_id=row["exchange_order_id"],
        filled_qty=row["filled_qty"], avg_fill_price=row["avg_fill_price"],
        reject_reason=row["reject_reason"], adopted=bool(row["adopted"]),
        exit_reason=ExitReason(row["exit_reason"]) if row.get("exit_reason") else None,
    )


def fill_from_row(row: dict[str, Any]) -> Fill:
    return Fill(exec_id=row["exec_id"], client_order_id=row["order_id"], symbol=row["symbol"],
                side=Side(row["side"]), qty=row["qty"], price=row["price"], fee=row["fee"],
                time=int(row["time"]), is_maker=bool(row["is_maker"]), fee_currency=row["fee_currency"] or "",
                reason=row.get("reason") or "")


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    id: str
    bar_time: int
    symbol: str
    target: float | None
    status: DecisionStatus
    error: str | None
    model_id: str | None = None


@dataclass(frozen=True, slots=True)
class EquityRecord:
    time: int
    equity: float
    cash: float
    position: float
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """Everything a run journaled that its engine and broker are rebuilt from on resume."""

    run_id: str
    initial_cash: Decimal
    orders: list[Order]
    fills: list[Fill]
    #: (symbol, net PnL) of every closed trade.
    trades: list[tuple[str, Decimal]]
    equity: list[EquityRecord]
    decisions: list[DecisionRecord]
    #: The newest bar the run processed: a journaled decision counts even when the kill came
    #: before the bar's progress row (its order intent was written ahead).
    last_bar: int | None
    decision_of: dict[str, str | None] = field(default_factory=dict)
    #: Per market, the protective levels still guarding its position (:func:`last_protection`),
    #: or the protective exit that closed it last (:func:`last_exit`).
    protections: dict[str, dict[str, Any]] = field(default_factory=dict)
    exits: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: The exit plans journaled with entry orders (``exit_plan`` events), by client order id.
    exit_plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: (symbol, time, cash moved) of every funding settlement.
    funding: list[tuple[str, int, Decimal]] = field(default_factory=list)

    @property
    def fees(self) -> Decimal:
        """In the quote coin (a fee paid in the base coin at its fill price)."""
        return sum((f.fee_value for f in self.fills), Decimal(0))

    @property
    def trade_pnls(self) -> list[Decimal]:
        return [p for _, p in self.trades]

    def decided_by_since(self, model_id: str | None) -> int | None:
        """The first bar ``model_id`` decided when a model was swapped in mid-run (bot/retrain.py),
        so a resume's replay compares that model's own decisions only; None when every journaled
        decision is ``model_id``'s (nothing was swapped)."""
        if not any(d.model_id not in (None, model_id) for d in self.decisions):
            return None
        own = [d.bar_time for d in self.decisions if d.model_id == model_id]
        return own[0] if own else max(d.bar_time for d in self.decisions) + 1

    def for_symbol(self, symbol: str) -> RunSnapshot:
        """One market's part of a multi-market run (a one-market run's snapshot is its own)."""
        if all(d.symbol == symbol for d in self.decisions) and all(r.symbol == symbol for r in self.equity) \
                and all(f.symbol == symbol for f in self.fills) and all(r[0] == symbol for r in self.funding):
            return self
        decisions = [d for d in self.decisions if d.symbol == symbol]
        equity = [r for r in self.equity if r.symbol == symbol]
        last = max([-1, *(r.time for r in equity), *(d.bar_time for d in decisions)])
        orders = [o for o in self.orders if o.symbol == symbol]
        return RunSnapshot(
            run_id=self.run_id, initial_cash=self.initial_cash, orders=orders,
            fills=[f for f in self.fills if f.symbol == symbol],
            trades=[t for t in self.trades if t[0] == symbol], equity=equity, decisions=decisions,
            last_bar=None if last < 0 else last, decision_of={o.client_order_id: o.decision_id for o in orders},
            protections={k: v for k, v in self.protections.items() if k == symbol},
            exits={k: v for k, v in self.exits.items() if k == symbol},
            exit_plans={k: v for k, v in self.exit_plans.items() if v.get("symbol") == symbol},
            funding=[r for r in self.funding if r[0] == symbol])

    @property
    def working(self) -> list[Order]:
        return [o for o in self.orders if not o.status.is_terminal]


def orders_and_fills(db: Engine, run_id: str, symbol: str | None = None) -> tuple[list[Order], list[Fill]]:
    """A run's orders and fills (of one market, or all) as domain objects (what reconciliation
    compares with the venue)."""
    return ([order_from_row(r) for r in q.orders(db, run_id, symbol)],
            [fill_from_row(r) for r in q.fills(db, run_id, symbol)])


def last_protection(db: Engine, run_id: str, symbol: str) -> dict[str, Any] | None:
    """The journaled protective levels of ``symbol``'s position (the payload of its last
    ``protection_set`` event, plus ``set_at``: the event's time), or None when there are none or a
    protective exit has used them."""
    return _protection_events(db, run_id, symbol)[0]


def last_exit(db: Engine, run_id: str, symbol: str) -> tuple[int, int] | None:
    """(time, +1 long / -1 short) of the protective exit that last closed ``symbol``'s position,
    when no levels were set after it; else None."""
    return _protection_events(db, run_id, symbol)[1]


def _protection_events(db: Engine, run_id: str, symbol: str) -> tuple[dict[str, Any] | None, tuple[int, int] | None]:
    rows = [e for e in q.events(db, run_id) if e["kind"] in ("protection_set", "protective_exit")
            and (e.get("payload") or {}).get("symbol") == symbol]
    if not rows:
        return None, None
    last = max(rows, key=lambda e: e["id"])
    if last["kind"] == "protection_set":
        return {**last["payload"], "set_at": int(last["time"])}, None
    return None, (int(last["time"]), -1 if last["payload"].get("direction") == "short" else 1)


def run_snapshot(db: Engine, run_id: str) -> RunSnapshot:
    run = q.resolve_run(db, run_id)
    orders, fills = orders_and_fills(db, run_id)
    decisions = [DecisionRecord(id=d["id"], bar_time=int(d["bar_time"]), symbol=d["symbol"], target=d["target"],
                                status=DecisionStatus(d["status"]), error=d["error"], model_id=d["model_id"])
                 for d in q.decisions(db, run_id)]
    last = max([run["last_bar"] if run["last_bar"] is not None else -1, *(d.bar_time for d in decisions)])
    return RunSnapshot(
        run_id=run_id, initial_cash=Decimal(run["initial_cash"]), orders=orders,
        fills=fills,
        trades=[(t["symbol"], t["net_pnl"]) for t in q.trades(db, run_id)],
        equity=[EquityRecord(int(r["time"]), float(r["equity"]), float(r["cash"]), float(r["position"]), sym)
                for sym in q.run_symbols(run) for r in q.equity(db, run_id, sym)],
        decisions=decisions, last_bar=None if last < 0 else last,
        decision_of={o.client_order_id: o.decision_id for o in orders},
        protections={sym: p for sym in q.run_symbols(run) if (p := last_protection(db, run_id, sym)) is not None},
        exits={sym: x for sym in q.run_symbols(run) if (x := last_exit(db, run_id, sym)) is not None},
        exit_plans={e["payload"]["order_id"]: e["payload"] for e in q.events(db, run_id, kind="exit_plan")},
        funding=[(r["symbol"], int(r["time"]), Decimal(r["amount"])) for r in q.funding(db, run_id)],
    )


def find_resumable(db: Engine, run_id: str | None, mode: str, start_event: str) -> dict[str, Any]:
    """The given run, or the latest run of ``mode`` that did not complete and can be resumed.

    A run killed between its creation and its start event has processed no bar; it is skipped.
    """
    stmt = select(s.runs)
    if run_id:
        stmt = stmt.where(s.runs.c.id == run_id)
    else:
        started = select(s.events.c.run_id).where(s.events.c.kind == start_event)
        stmt = stmt.where(s.runs.c.mode == mode, s.runs.c.status != RunStatus.COMPLETED.value,
                          s.runs.c.id.in_(started)).order_by(desc(s.runs.c.started_at)).limit(1)
    with db.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        if run_id:
            raise StorageError(f"no run {run_id!r} in the journal")
        raise StorageError(f"no unfinished {mode} run to resume in the journal: start a new one without --resume")
    run = dict(row._mapping)
    if run["mode"] != mode:
        raise ConfigError(f"run {run['id']} is a {run['mode']} run, not {mode}")
    if run["status"] == RunStatus.COMPLETED.value:
        raise ConfigError(f"run {run['id']} already completed; start a new run instead")
    return run


def start_payload(db: Engine, run_id: str, kind: str) -> dict[str, Any]:
    """The payload of the event a run journaled when it started (what resuming it needs)."""
    with db.connect() as conn:
        row = conn.execute(select(s.events.c.payload).where(
            s.events.c.run_id == run_id, s.events.c.kind == kind).order_by(s.events.c.id).limit(1)).first()
    if row is None or not row[0]:
        raise StorageError(f"run {run_id} has no {kind} event: it cannot be resumed")
    return dict(row[0])


#: Columns that hold wall-clock times (paper orders are stamped with the wall clock).
_WALL_CLOCK = {"orders": ("created_time", "updated_time")}


def comparable_journal(db: Engine, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """A run's decisions, orders, fills, trades and equity with the run id and wall-clock stamps
    neutralised: two runs that decided, ordered and filled the same way compare equal."""
    def norm(v: Any) -> Any:
        return v.replace(run_id, "RUN") if isinstance(v, str) else v

    out: dict[str, list[dict[str, Any]]] = {}
    for name, rows in (("decisions", q.decisions(db, run_id)), ("orders", q.orders(db, run_id)),
                       ("fills", q.fills(db, run_id)), ("trades", q.trades(db, run_id)),
                       ("equity", [r for sym in q.run_symbols(q.resolve_run(db, run_id))
                                   for r in q.equity(db, run_id, sym)])):
        skip = {"run_id", *_WALL_CLOCK.get(name, ())}
        out[name] = [{k: norm(v) for k, v in r.items() if k not in skip} for r in rows]
    out["orders"].sort(key=lambda r: r["id"])
    return out
