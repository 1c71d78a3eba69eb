"""Reconciliation with the venue: the journal and the exchange must tell the same story.

Run on start, before the first decision may trade, and periodically by the scheduler:

1. every order the journal holds as working is looked up by its client id (Bybit orderLinkId):
   the venue's state and any fills it has are merged in; an order the venue never received
   (journaled as CREATED/SUBMITTED, killed before or during the send) is resolved as rejected;
2. executions since the last journaled fill are fetched; those the journal lacks are recorded
   (de-duplicated by exec id); fills and open orders of orders the journal does not know are
   adopted and marked as such;
3. the venue's position must equal the position at the run's start plus the journaled fills
   (less the fees paid in the coin itself: Bybit spot buys); a difference that cannot be
   explained stops the bot with a clear message. On spot, a difference below one lot is dust a
   venue's own rounding of its coin balances leaves behind (it can never be sold): it is
   journaled (``dust``) and the books follow the venue.
4. protective exits (position TP/SL) stay on the venue while the bot is down: the journal's
   levels (its last ``protection_set`` not yet used by an exit) are followed again before the
   fills are fetched (an exit that triggered meanwhile is named after their decision), then
   compared with the venue's: kept when the venue holds them, placed again when the position is
   open without them, dropped when it is flat;
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog

from bot.domain import Category, Fill, Instrument, OrderStatus
from bot.errors import ExchangeFatalError
from bot.protection import Protection
from storage.records import last_protection, orders_and_fills

log = structlog.get_logger("bot.reconcile")

#: Executions are fetched from a little before the last journaled fill (clock skew, same-ms fills).
SINCE_MARGIN_MS = 60_000


class ReconcileError(ExchangeFatalError):
    """The journal and the venue disagree in a way no rule resolves: a human must look."""


@dataclass
class Report:
    resolved: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    fills_added: int = 0
    position_venue: str = "0"
    position_journal: str = "0"
    #: Spot: venue minus journal when that is below one lot (accepted), else None.
    dust: str | None = None
    #: Protective exits: what was found and done (None: the market has none).
    protection: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {"resolved": self.resolved, "updated": self.updated, "adopted": self.adopted,
               "fills_added": self.fills_added, "position_venue": self.position_venue,
               "position_journal": self.position_journal}
        if self.protection is not None:
            out["protection"] = self.protection
        return out if self.dust is None else {**out, "dust": self.dust}


def journal_position(fills: list[Fill], start_qty: Decimal) -> Decimal:
    """The run's start plus what its fills moved (a fee paid in the base coin comes out of it)."""
    return start_qty + sum((f.held_change for f in fills), Decimal(0))


def dust(venue_qty: Decimal, expected: Decimal, ins: Instrument) -> Decimal | None:
    """The spot difference that is below one lot (untradable), or None when there is none or it
    is larger (linear positions must agree exactly)."""
    diff = venue_qty - expected
    if diff == 0 or ins.category is not Category.SPOT or abs(diff) >= ins.qty_step:
        return None
    return diff


async def reconcile(session: Any, *, start_qty: Decimal, run_start_ms: int) -> Report:
    """Merge the venue's orders and fills into the journal, then check the position.

    ``session`` is one market of the run (its ``journal``, ``engine`` and ``broker``); only the
    Broker interface is used, so any broker can be reconciled. A multi-market run reconciles
    each market in turn: the journal's orders and fills of that market against its broker.
    """
    journal, broker = session.journal, session.broker
    rid = journal.run_id
    symbol = broker.instrument.symbol
    journal.flush()
    rep = Report()
    orders, fills = orders_and_fills(journal.engine, rid, symbol)
    adopted_before = {o.client_order_id for o in orders if o.adopted}
    saved = last_protection(journal.engine, rid, symbol)
    journaled = Protection.from_payload(saved) if saved else None
    if journaled is not None:
        broker.set_protection(journaled, run_start_ms, send=False)
    # 1. Working orders in the journal, looked up at the venue by client id.
    for o in (o for o in orders if not o.status.is_terminal):
        found = await broker.lookup_order(o.client_order_id)
        if found is None:
            if o.status in (OrderStatus.CREATED, OrderStatus.SUBMITTED):
                broker.resolve_missing(o.client_order_id, "not on the exchange after a restart: never sent")
                rep.resolved.append(o.client_order_id)
                continue
            raise ReconcileError(f"reconciliation failed: order {o.client_order_id} is {o.status} in the journal "
                                 "but the exchange does not know it; check the account by hand")
        rep.updated.append(o.client_order_id)
    # 2. Executions since the last journaled fill, and open orders the journal does not know.
    last = max((f.time for f in fills), default=run_start_ms)
    await broker.fills_since(last - SINCE_MARGIN_MS)
    await broker.venue_open_orders()
    journal.flush()
    orders_now, fills_now = orders_and_fills(journal.engine, rid, symbol)
    rep.fills_added = len(fills_now) - len(fills)
    rep.adopted = sorted({o.client_order_id for o in orders_now if o.adopted} - adopted_before)
    # 3. Position: the venue's must be the run's start plus what the journal holds.
    venue = await broker.refresh_books()
    expected = journal_position(fills_now, start_qty)
    rep.position_venue, rep.position_journal = format(venue.qty, "f"), format(expected, "f")
    left = dust(venue.qty, expected, broker.instrument)
    if left is not None:
        rep.dust = format(left, "f")
    rep.protection = await _protection(broker, journaled, venue.qty, session.engine.last_bar or run_start_ms)
    journal.record_event(session.engine.last_bar or run_start_ms, "reconcile", {"symbol": symbol, **rep.as_dict()})
    journal.flush()
    if venue.qty != expected and left is None and not broker.open_orders():
        raise ReconcileError(f"reconciliation failed: the exchange holds {venue.qty} {venue.symbol}, the journal "
                             f"accounts for {expected} (start {start_qty} + fills); close the difference by hand "
                             "or start a new run")
    log.info("reconciled", run=rid, **rep.as_dict())
    return rep


def _levels(p: Protection) -> dict[str, str | None]:
    return {k: None if v is None else format(v, "f")
            for k, v in zip(("stop_loss", "take_profit", "trailing_distance"), p.levels(), strict=True)}


async def _protection(broker: Any, journaled: Protection | None, venue_qty: Decimal, now: int
                      ) -> dict[str, Any] | None:
    """Step 4: the journal's protective levels against the venue's position TP/SL."""
    if journaled is None and venue_qty == 0:
        return None
    if venue_qty == 0:
        broker.set_protection(None, now, send=False)  # the position is closed: so are its TP/SL
        return {"state": "position_flat", "journal": _levels(journaled)} if journaled else None
    on_venue = await broker.venue_protection()
    if on_venue is None or on_venue.empty:
        if journaled is None:
            return None
        broker.set_protection(journaled, now)  # open without them: placed again
        return {"state": "placed_again", "journal": _levels(journaled)}
    if journaled is not None and on_venue.levels() == journaled.levels():
        return {"state": "on_venue", "venue": _levels(on_venue)}
    # The venue's differ (changed by hand, or set before a kill that lost their event): followed.
    broker.set_protection(on_venue, now, send=False)
    return {"state": "venue_differs", "venue": _levels(on_venue),
            "journal": _levels(journaled) if journaled else None}


async def periodic(session: Any) -> None:
    """The scheduler's job: missed fills, then venue books vs ours."""
    broker = session.broker
    n = await broker.fills_since()
    diff = await broker.check_books()
    if n or diff:
        session.journal.record_event(session.engine.last_bar or 0, "reconcile_periodic",
                                     {"symbol": broker.instrument.symbol, "fills_recovered": n, **(diff or {})})
        session.journal.flush()
    if diff:
        log.warning("books_resynced", **diff)


__all__ = ["ReconcileError", "Report", "periodic", "reconcile"]
