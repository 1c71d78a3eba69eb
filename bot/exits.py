"""A market's protective exits on the engine's side: which decision's exits guard the position,
set when its entry fills, and the rule after an exit (no way back in on the same side until the
signal changes). The broker only executes the levels (bot/protection.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import structlog

from bot.bars import Bars
from bot.config_exits import ExitsConfig
from bot.domain import Decision, Instrument, Order, OrderRequest, Side
from bot.protection import ExitPlan, Leg, Protection, average_true_range
from broker.base import Broker, to_decimal
from broker.protective import ratchet
from storage.journal import Journal

log = structlog.get_logger("bot.exits")


class ExitGuard:
    """One per engine. ``exits`` is the market's config (None: only a decision's own prices)."""

    def __init__(self, exits: ExitsConfig | None, bars: Bars, broker: Broker, journal: Journal,
                 instrument: Instrument, log_steps: bool = False) -> None:
        self.exits = exits if exits is not None and exits.any else None
        self.bars = bars
        self.broker = broker
        self.journal = journal
        self.instrument = instrument
        self.log_steps = log_steps
        #: Entry orders on their way, with the exit plan of the decision that sent them.
        self.plans: dict[str, ExitPlan] = {}
        #: +1 / -1 after a protective exit closed a long / short: the market stays flat until a
        #: decision targets something else (flat or the other side); 0: free to trade.
        self.stopped_out = 0

    def restore(self, saved: dict[str, Any] | None, stopped: tuple[int, int] | None,
                decisions: list[tuple[int, float | None, bool]], plans: dict[str, dict[str, Any]]) -> None:
        """A resumed run: the journaled levels guard the position again, their trail moved by every
        bar closed since they were set (as the broker moved it; a TP/SL at a venue moves there).
        After a protective exit (``stopped``: its time and side) the market stays out unless a
        decision since (bar time, target, acted) targeted something else. ``plans``: the exit plans
        of the orders still working, by client id."""
        self.plans = {cid: ExitPlan.from_payload(p) for cid, p in plans.items()}
        if stopped is not None:
            t, side = stopped
            self.stopped_out = side
            if any(acted and target is not None and bar >= t and target * side <= 0
                   for bar, target, acted in decisions):
                self.stopped_out = 0
        if not saved or self.broker.position().qty == 0:
            return
        p = Protection.from_payload(saved)
        b = self.bars
        for i in range(b.n):
            if int(b.time[i]) >= int(saved.get("set_at", 0)):
                p = ratchet(p, to_decimal(float(b.high[i])), to_decimal(float(b.low[i])))
        self.broker.set_protection(p, int(saved.get("set_at", 0)), send=False)

    def allowed_target(self, target: float) -> float:
        """``target``, or flat while a protective exit on that side has not been followed by a change."""
        if self.stopped_out:
            if target * self.stopped_out > 0:
                return 0.0
            self.stopped_out = 0
        return target

    def on_entry(self, did: str, d: Decision, req: OrderRequest, target_qty: Decimal) -> None:
        """An order that opens, adds to or flips the position: remember its decision's exits."""
        if target_qty == 0 or (req.side is Side.BUY) != (target_qty > 0):
            return  # it reduces or closes: the position keeps the protection it has
        plan = self._plan(did, d)
        if plan is not None:
            self.plans[req.client_order_id] = plan
            # Journaled with the order intent: a restart while the order works still guards its fill.
            self.journal.record_event(d.bar_time, "exit_plan", {"symbol": req.symbol, "order_id": req.client_order_id,
                                                               **plan.payload()})

    def _plan(self, did: str, d: Decision) -> ExitPlan | None:
        """The decision's own prices, else the market's config measured now (an ATR over the bars
        up to this close, never a later one)."""
        cfg = self.exits
        legs: dict[str, Leg | None] = {"stop_loss": None, "take_profit": None, "trailing_stop": None}
        if cfg is not None:
            b = self.bars
            atr = average_true_range(b.high, b.low, b.close, cfg.atr_period) if cfg.uses_atr else None
            for name in legs:
                dist = getattr(cfg, name)
                if dist is not None and dist.fraction is not None:
                    legs[name] = ("fraction", dist.fraction)
                elif dist is not None and dist.atr is not None and atr is not None:
                    legs[name] = ("distance", dist.atr * atr)
        if d.stop_price is not None:
            legs["stop_loss"] = ("price", d.stop_price)
        if d.take_profit_price is not None:
            legs["take_profit"] = ("price", d.take_profit_price)
        plan = ExitPlan(did, **legs)
        return None if plan.empty else plan

    def on_order_done(self, order: Order) -> None:
        """An order ended: if it was an entry that filled, its exits go to the broker at the
        book's average entry price, journaled with the decision that set them."""
        plan = self.plans.pop(order.client_order_id, None)
        if plan is None or order.filled_qty <= 0:
            return
        pos = self.broker.position()
        if pos.qty == 0:
            return
        # A Bybit spot holding carries no entry price (the venue keeps none): the entry's own fill.
        entry = pos.avg_price if pos.avg_price > 0 else (order.avg_fill_price or pos.avg_price)
        p = plan.protection(pos.symbol, 1 if pos.qty > 0 else -1, entry, self.instrument,
                            f"{order.client_order_id}x")
        if p.empty:
            return
        self.broker.set_protection(p, order.updated_time)
        self.journal.record_event(order.updated_time, "protection_set", p.payload())
        if self.log_steps:
            log.info("protection_set", **p.payload())

    def on_exit_order(self, order: Order, trigger: Decimal | None) -> None:
        """A protective exit triggered: its order is journaled (pointing at the decision that set
        it, with its reason) before its fills."""
        self.journal.record_order(order)
        payload = {"symbol": order.symbol, "order_id": order.client_order_id, "reason": str(order.exit_reason),
                   "direction": "long" if order.side is Side.SELL else "short",
                   "decision_id": order.decision_id, "trigger": None if trigger is None else format(trigger, "f")}
        self.journal.record_event(order.created_time, "protective_exit", payload)
        if self.log_steps:
            log.info("protective_exit", **payload)
        self.stopped_out = 1 if order.side is Side.SELL else -1
