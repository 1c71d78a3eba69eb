"""The event path: candle -> strategy -> risk/portfolio -> broker -> journal.

``Engine.on_bar`` is plain synchronous code run once per closed bar. Backtests call it in a
tight loop; paper and live call it from asyncio tasks (feeds, order streams, scheduler). Every
mode therefore runs the same decision and order code; only the broker object differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import structlog

from bot import order_log
from bot.bars import Bars
from bot.books import Books
from bot.config_exits import ExitsConfig
from bot.deferred import DeferredExplanations
from bot.domain import (
    Decision,
    DecisionStatus,
    Fill,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    check_json,
    client_order_id,
    decision_id,
)
from bot.equity import EquityCurve
from bot.exits import ExitGuard
from bot.portfolio import Marks, order_for_target, target_quantity
from bot.protection import decision_levels_problem
from bot.risk import KillSwitch, RiskManager
from broker.base import Broker, MarketDataListener
from storage.journal import Journal
from storage.records import RunSnapshot
from strategies.base import Strategy
from strategies.replay import replay_mismatches

log = structlog.get_logger("bot.engine")


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class Engine:
    """One market of a run. Several engines share a journal, a wallet (through their brokers),
    the portfolio's kill switch (``risk.portfolio``) and ``marks``, from which each reads the
    portfolio's equity; a one-market run has no marks (equity = cash + qty x close)."""

    #: Bars :meth:`fast_forward` looks at first (then four times as many, while all are quiet).
    FF_WINDOW = 64

    def __init__(self, *, run_id: str, strategy: Strategy, bars: Bars, broker: Broker, journal: Journal,
                 risk: RiskManager, fee_rate: float, bar_ms: int,
                 clock: Callable[[], int] | None = None, market: MarketDataListener | None = None,
                 allocation: float = 1.0, marks: Marks | None = None, slot: int = 0,
                 log_orders: bool = False, defer_explanations: bool = False,
                 exits: ExitsConfig | None = None) -> None:
        self.run_id = run_id
        self.strategy = strategy
        self.bars = bars
        self.broker = broker
        self.journal = journal
        self.risk = risk
        self.fee_rate = fee_rate
        self.bar_ms = bar_ms
        self.instrument = broker.instrument
        #: Sees every bar's prices before the engine marks it (the simulated fill engine).
        self._market = market
        self.symbol = bars.symbol
        #: Data clock in backtests (bar close time); wall clock in paper and live.
        self._clock = clock
        #: Order updates, fills, trades, fees, funding and liquidations: journaled and counted.
        self.books = Books(run_id, self.symbol, self.instrument, journal, multi_market=marks is not None)
        self.bar_index = -1
        self.last_bar: int | None = None
        self.target = 0.0
        #: Equity, cash and position of every bar traded, journaled in blocks (bot/equity.py).
        self.curve = EquityCurve(self.symbol, bars, journal)
        self.n_decisions = 0
        self.n_orders = 0
        self._risk_active = risk.watches_equity
        self._portfolio = risk.portfolio
        self.allocation = allocation
        self._marks = marks
        self._slot = slot
        #: Multi-market runs name the market in decision ids (one-market ids stay ``run-bar``).
        self._id_symbol = self.symbol if marks is not None else None
        #: The latest decision that met a working order (id, decision): looked at again when it ends.
        self._waiting: tuple[str, Decision] | None = None
        #: A kill switch tripped on a catch-up bar: acted on at the next bar that may trade.
        self._kill_pending: KillSwitch | None = None
        self._in_fill = False
        #: Paper and live: a log line per order step (bot/order_log.py); backtests stay quiet.
        self._log_orders = log_orders
        #: Decisions journaled with their eager explanation, completed once their orders left:
        #: right after the order (backtests), or by the runner after the bar's orders (paper, live).
        self.explanations = DeferredExplanations(journal)
        self._explain_inline = not defer_explanations
        #: Protective exits (the market's config, or a decision's own prices): bot/exits.py.
        self.exits = ExitGuard(exits, bars, broker, journal, self.instrument, log_orders)
        broker.set_listener(self._on_order_event, self)

    # -- life cycle --------------------------------------------------------------------------------
    def start(self) -> None:
        # Bars shown before the start (backtest history, paper warm-up) are never marked or journaled.
        self.curve.journaled_to(self.bars.n - 1)
        self.strategy.on_start(self.bars)

    def swap_strategy(self, strategy: Strategy) -> None:
        """Decide with ``strategy`` from the next bar on (a retrained model, bot/retrain.py); it is
        first shown the bars so far, as a resume would show them. Call between two bars only."""
        strategy.on_start(self.bars)
        self.strategy = strategy

    def now_ms(self, bar_time: int) -> int:
        return self._clock() if self._clock is not None else bar_time + self.bar_ms

    # -- the per-bar core --------------------------------------------------------------------------
    def on_bar(self, trade: bool = True) -> None:
        """Bar ``bars.n - 1`` has closed: fill, mark, decide, order. Same code in every mode."""
        self.fill()
        self.decide(trade)

    def fill(self) -> None:
        """Orders decided on earlier bars meet this bar's prices (the simulated fill engine).

        A multi-market run fills every market whose bar closes now before any of them marks:
        the fills happened at the bars' open, before all of their closes (as on a venue)."""
        bars = self.bars
        i = self.bar_index = bars.n - 1  # fills are booked on the bar they happen in
        market = self._market
        if market is not None and market.pending():
            o, h, lo, c = bars.ohlc_at(i)
            self._in_fill = True  # its order events come before this bar's decision: no second look
            try:
                market.on_bar(bars.last_time(), o, h, lo, c)
            finally:
                self._in_fill = False

    @property
    def can_skip_bars(self) -> bool:
        """Backtests may play quiet bars as blocks: a strategy that can say which bars it would not
        decide on, no kill switch watching equity (one market: :meth:`fast_forward`; markets that
        close together: bot/blocks.py)."""
        return not self._risk_active and type(self.strategy).quiet is not Strategy.quiet

    @property
    def can_fast_forward(self) -> bool:
        return self._marks is None and self.can_skip_bars

    @property
    def idle(self) -> bool:
        """No decision waits on an order and no kill switch is pending or tripped."""
        return self._waiting is None and self._kill_pending is None and self._portfolio.tripped is None

    @property
    def marks(self) -> Marks | None:
        return self._marks

    @property
    def slot(self) -> int:
        """This market's place in the portfolio's marks (its config order)."""
        return self._slot

    def fast_forward(self, end: int) -> int:
        """Backtests: the hidden bars from ``bars.n`` up to ``end`` on which nothing can happen
        (no order working, nothing for the broker to do, no kill switch watching equity, and a
        strategy that would not decide: ``Strategy.quiet``) are revealed, marked to market and
        journaled as one block, exactly as bar by bar. Returns how many; unless ``end`` is
        reached, the next bar is not quiet (it is played alone)."""
        if not (self.can_fast_forward and self.idle):
            return 0
        bars, played, window = self.bars, 0, self.FF_WINDOW
        while bars.n < end:
            upcoming, k = self.quiet_market(min(end - bars.n, window))
            n = len(upcoming["time"])
            if k:
                k = self.strategy.quiet({f: a[:k] for f, a in upcoming.items()} if k < n else upcoming)
            if k:
                self._mark_block(upcoming["close"][:k])
                played += k
            if k < n:
                break
            window *= 4  # a long quiet stretch: look further ahead at once
        return played

    def quiet_market(self, k: int) -> tuple[dict[str, np.ndarray], int]:
        """The next ``k`` hidden bars (fewer at the end of the book) and how many of them, from the
        first, the broker has nothing to do on (:meth:`quiet_strategy` asks the strategy)."""
        upcoming = self.bars.upcoming(self.bars.n + k)
        n = len(upcoming["time"])
        return upcoming, (n if self._market is None else self._market.quiet_bars(upcoming))

    def quiet_strategy(self, upcoming: dict[str, np.ndarray], k: int) -> int:
        """How many of the first ``k`` of ``upcoming`` the strategy would not decide on; its state
        unchanged."""
        whole = k == len(upcoming["time"])
        return self.strategy.quiet(upcoming if whole else {f: a[:k] for f, a in upcoming.items()}, advance=False)

    def skip(self, upcoming: dict[str, np.ndarray], k: int, equity: list[float]) -> None:
        """Play the first ``k`` bars of :meth:`quiet_market`'s ``upcoming`` as one block, marked at
        ``equity`` (the portfolio's, one value per bar: bot/blocks.py)."""
        head = {f: a[:k] for f, a in upcoming.items()}
        got = self.strategy.quiet(head)
        if got != k:
            raise RuntimeError(f"strategy {self.strategy.name}: quiet() advanced over {got} bars after it "
                               f"counted {k} quiet ones")
        self._mark_block(head["close"], equity)

    def _mark_block(self, closes: np.ndarray, equity: list[float] | None = None) -> None:
        """Reveal and mark ``len(closes)`` quiet bars: equity = cash + qty x close, as in
        :meth:`decide` (or the portfolio's ``equity``, computed as :meth:`decide` does)."""
        k = len(closes)
        bars = self.bars
        bars.n += k
        self.bar_index = bars.n - 1
        self.last_bar = bars.last_time()
        cash, qty = self.broker.cash_and_qty()
        self.curve.mark_block(self.bar_index, closes, cash, qty, equity)

    def decide(self, trade: bool = True) -> None:
        """Mark bar ``bars.n - 1`` to market, journal the equity, ask the strategy, order (after
        :meth:`fill`, which set ``bar_index``).

        ``trade=False``: a catch-up bar (a newer bar of this market has closed already: a backfill
        after downtime or a feed gap). It is marked, journaled and shown to the strategy, but
        nothing is sent at its old close; only the newest closed bar trades."""
        bars = self.bars
        i = self.bar_index
        t = bars.last_time()
        c = bars.last_close()
        self.last_bar = t
        cash, qty = self.broker.cash_and_qty()
        marks = self._marks
        if marks is None:
            eq = cash + qty * c
        else:
            slot = self._slot  # marks.set(slot, qty, c); eq = cash + marks.value(), inlined
            marks.price[slot] = c
            held = marks.held
            held[slot] = qty * c
            eq = cash + sum(held)
        self.curve.mark(i, eq, cash, qty)
        kill: KillSwitch | None = None
        if self._risk_active:
            kill = self.risk.on_equity(t, eq)
            if kill is not None:
                self._on_kill(kill)
            if not trade:
                self._kill_pending, kill = kill or self._kill_pending, None
            elif self._kill_pending is not None:
                kill, self._kill_pending = kill or self._kill_pending, None
        # 3. Ask the strategy; a failing strategy is a journaled no-trade decision, never a crash.
        try:
            decision = self.strategy.on_bar(bars)
        except Exception as exc:  # noqa: BLE001 - user/model code must never kill the loop
            decision = self._error_decision(t, exc)
        else:
            if decision is not None:
                decision = self._checked(decision, t)
        for kind, payload in self.strategy.take_notices():
            self._on_notice(t, kind, payload)
        if decision is None:
            tripped = kill or (self._flatten_pending(qty) if self._portfolio.tripped is not None else None)
            if tripped is not None and self.risk.cfg.kill_action == "flatten":
                decision = Decision(self.symbol, t, 0.0, explanation={"kill_switch": tripped.reason})
            else:
                return
        self._act(decision, t, c, eq, trade)

    def _on_notice(self, t: int, kind: str, payload: dict[str, Any]) -> None:
        """A strategy's warning (feature drift): journaled as an event of the market, and logged."""
        log.warning(kind, symbol=self.symbol, bar_time=t, message=payload.get("text", ""))
        self.journal.record_event(t, kind, {"symbol": self.symbol, **payload})

    def _flatten_pending(self, qty: float) -> KillSwitch | None:
        """Another market tripped the portfolio's kill switch and this one still holds a position."""
        tripped = self.risk.tripped
        if tripped is None or self._marks is None or not qty or self.broker.open_orders():
            return None
        return tripped

    def _checked(self, d: Decision, t: int) -> Decision:
        try:
            if d.bar_time != t:
                raise ValueError(f"decision for bar {d.bar_time} returned at bar {t}")
            if d.explanation:
                check_json(d.explanation)
            problem = decision_levels_problem(d, self.bars.last_close())
            if problem is not None:
                raise ValueError(problem)
        except (ValueError, TypeError) as exc:
            return self._error_decision(t, exc)
        return d

    def _error_decision(self, t: int, exc: Exception) -> Decision:
        msg = f"{type(exc).__name__}: {exc}"
        log.warning("strategy_error", bar_time=t, error=msg)
        return Decision(self.symbol, t, None, confidence=0.0, model_id=self.strategy.model_id, error=msg[:1000])

    def _act(self, d: Decision, t: int, price: float, eq: float, trade: bool = True) -> None:
        did = decision_id(self.run_id, t, self._id_symbol)
        self.n_decisions += 1
        if d.error is not None or d.target is None:
            status = DecisionStatus.ERROR if d.error else DecisionStatus.NO_TRADE
            req = blocked = None
        elif not trade:
            status, req, blocked = DecisionStatus.CATCH_UP, None, None
        else:
            if self._waiting is not None:  # a newer decision replaces the one that waited
                self.journal.update_decision(self._waiting[0], DecisionStatus.SUPERSEDED)
                self._waiting = None
            status, req, blocked = self._plan(did, d, t, price, eq)
            if status is DecisionStatus.WAITING:
                self._waiting = (did, d)
        self.journal.record_decision(did, d, price, status)
        self._send(did, t, req, blocked)  # the order leaves before the deferred explanation runs
        if d.deferred is not None:
            self.explanations.add(did, d)
            if self._explain_inline:
                self.explanations.complete()

    def explain_pending(self) -> int:
        """Complete and journal the deferred explanations of the decisions since the last call
        (the runner's, once the bar's orders have left); how many."""
        return self.explanations.complete()

    def _plan(self, did: str, d: Decision, t: int, price: float,
              eq: float) -> tuple[DecisionStatus, OrderRequest | None, str | None]:
        """What a decision with a target does at ``price`` and portfolio equity ``eq``: its status,
        the order to send (or None), and why risk blocked it (or None)."""
        assert d.target is not None
        target = self.risk.clamp(d.target) * self.allocation
        target = self.risk.cap_target_for_notional(target, eq)
        if self._marks is not None:
            target = self._cap_gross(target, eq)
        tripped = self.risk.tripped
        if tripped is not None:
            if self.risk.cfg.kill_action == "freeze":
                return DecisionStatus.FROZEN, None, None
            target = 0.0
        target = self.exits.allowed_target(target)  # after a stop-out, not back in on that side
        self.target = target
        if self.broker.open_orders():
            # An order is still working: never stack a second one on top of it.
            return DecisionStatus.WAITING, None, None
        pos = self.broker.position().qty
        tq = target_quantity(target, eq, price, self.fee_rate, self.instrument)
        if self._marks is not None:
            self._marks.target[self._slot] = float(tq)
        plan = order_for_target(tq, pos, price, self.instrument, equity=eq,
                                rebalance_threshold=self.risk.cfg.rebalance_threshold)
        if plan is None:
            return DecisionStatus.HOLD, None, None
        side, qty = plan
        blocked = self.risk.allows_order(self.bar_index, float(qty) * price)
        if blocked is not None and not (tripped is not None and target == 0.0):
            return DecisionStatus.BLOCKED, None, blocked
        req = OrderRequest(
            client_order_id=client_order_id(self.run_id, self.symbol, t),
            symbol=self.symbol, side=side, qty=qty, order_type=OrderType.MARKET, decision_id=did,
            reference_price=Decimal(repr(price)),
        )
        self.exits.on_entry(did, d, req, tq)
        return DecisionStatus.ORDER, req, None

    def _send(self, did: str, t: int, req: OrderRequest | None, blocked: str | None) -> None:
        if blocked is not None:
            self.journal.record_event(t, "order_blocked", {"decision_id": did, "reason": blocked})
        if req is not None:
            self._submit(req, t)

    def _look_again(self) -> None:
        """The order a decision waited on has ended: the decision is planned again, at the
        latest close and equity (it is the newest this market has; a newer one would have
        replaced it)."""
        assert self._waiting is not None
        (did, d), self._waiting = self._waiting, None
        price = self.bars.last_close()
        cash, qty = self.broker.cash_and_qty()
        if self._marks is not None:
            self._marks.set(self._slot, qty, price)
        eq = cash + (self._marks.value() if self._marks is not None else qty * price)
        status, req, blocked = self._plan(did, d, d.bar_time, price, eq)
        if status is DecisionStatus.WAITING:  # another order is working (never this engine's own)
            self._waiting = (did, d)
            return
        log.info("decision_looked_at_again", decision=did, status=str(status))
        self.journal.update_decision(did, status)
        self.journal.record_event(self.last_bar or d.bar_time, "decision_looked_at_again",
                                  {"decision_id": did, "status": str(status)})
        self._send(did, d.bar_time, req, blocked)

    def _cap_gross(self, target: float, eq: float) -> float:
        """``risk.max_gross_exposure``: this market gets what the others leave of the cap."""
        marks = self._marks
        if marks is None or target == 0.0 or eq <= 0 or not self.risk.portfolio.cfg.max_gross_exposure:
            return target
        room = self.risk.cap_gross(abs(target) * eq, marks.gross_except(self._slot), eq)
        return min(abs(target), room / eq) * (1.0 if target > 0 else -1.0)

    def _submit(self, req: OrderRequest, t: int) -> None:
        now = self.now_ms(t)
        ahead = self.broker.write_ahead
        if ahead:
            # Decision and order intent are durable before the order leaves the process.
            self.journal.record_order(Order.from_request(req, now))
            self.journal.flush()
        self.risk.last_order_bar = self.bar_index
        self.n_orders += 1
        order = self.broker.submit(req, now)
        if ahead:
            self.journal.update_order(order)
        else:  # a venue in this process: nothing is written before its answer, which is the row
            self.journal.record_order(order)
        if self._log_orders:
            order_log.sent(order)
            order_log.outcome(order)  # a broker that answers at once: acknowledged or rejected
        if order.status is OrderStatus.REJECTED:
            if not self._log_orders:
                log.warning("order_rejected", order=req.client_order_id, reason=order.reject_reason)
            self.journal.record_event(t, "order_rejected",
                                      {"order_id": req.client_order_id, "reason": order.reject_reason})

    def _on_kill(self, kill: KillSwitch) -> None:
        log.error("kill_switch", reason=kill.reason, equity=kill.equity, action=self.risk.cfg.kill_action)
        self.journal.record_event(kill.time, "kill_switch", {
            "reason": kill.reason, "equity": kill.equity, "action": self.risk.cfg.kill_action, **kill.detail,
        })

    # -- broker events -----------------------------------------------------------------------------
    def _on_order_event(self, order: Order, fill: Fill | None) -> None:
        if self._log_orders:
            order_log.outcome(order, fill)
        self.books.on_order_event(order, fill, max(self.bar_index, 0))
        if order.status.is_terminal and self.exits.plans:
            self.exits.on_order_done(order)
        if fill is not None and self._marks is not None:
            # The portfolio sees the fill now (at the market's last close).
            self._marks.set(self._slot, self.broker.cash_and_qty()[1], self._marks.price[self._slot])
        if (self._waiting is not None and order.status.is_terminal and not self._in_fill
                and not self.broker.open_orders()):
            self._look_again()
        if self.broker.write_ahead:
            self.journal.flush()  # a venue's news is durable as soon as it arrives

    def on_adopted(self, order: Order) -> None:
        """An order the venue has and the journal does not: journaled, marked adopted."""
        self.journal.record_order(order)

    def on_venue_event(self, kind: str, payload: dict[str, Any]) -> None:
        self.journal.record_event(self.last_bar or 0, kind, payload)

    def on_exit_order(self, order: Order, trigger: Decimal | None) -> None:
        self.exits.on_exit_order(order, trigger)

    def on_funding(self, t: int, rate: float, qty: Decimal, price: Decimal, amount: Decimal) -> None:
        self.books.on_funding(t, rate, qty, price, amount)

    def on_liquidation(self, order: Order, detail: dict[str, Any]) -> None:
        self.books.on_liquidation(order, detail)

    # -- resume -------------------------------------------------------------------------------------
    def restore(self, snap: RunSnapshot, warmup_bars: int) -> int:
        """Continue a journaled run: books (bot/books.py), equity curve, risk peaks, counters and
        the strategy.

        ``self.bars`` holds the warm-up and every bar the run processed; the strategy is shown the
        bars exactly as the first process showed them. Returns the number of replayed decisions
        that differ from the journal's (0 for a deterministic strategy).
        """
        bars = self.bars
        index = {int(t): i for i, t in enumerate(bars.time)}
        self.books.restore(snap, index)
        self.curve.restore(snap.equity)
        if self._risk_active:  # drawdown and daily-loss peaks survive a restart
            for r in snap.equity:
                self.risk.on_equity(r.time, r.equity)
        self.n_decisions, self.n_orders = len(snap.decisions), len(snap.orders)
        for d in snap.decisions:
            if d.status is DecisionStatus.WAITING:  # the resumed run plans afresh from its newest bar
                self.journal.update_decision(d.id, DecisionStatus.SUPERSEDED)
        acted = [d for d in snap.decisions if d.status.acted]
        if acted and acted[-1].target is not None:
            self.target = float(acted[-1].target)
        ordered = [d for d in snap.decisions if d.status is DecisionStatus.ORDER]
        if ordered:
            self.risk.last_order_bar = index.get(ordered[-1].bar_time, -(10**9))
        working = {o.client_order_id for o in snap.working}
        self.exits.restore(snap.protections.get(self.symbol), snap.exits.get(self.symbol),
                           [(d.bar_time, d.target, d.status.acted) for d in snap.decisions],
                           {k: v for k, v in snap.exit_plans.items() if k in working})
        self.bar_index = bars.n - 1
        self.last_bar = snap.last_bar
        self.curve.journaled_to(bars.n - 1)  # bars up to here are journaled (or were lost with the kill)
        if self._marks is not None and bars.n:
            self._marks.set(self._slot, self.broker.cash_and_qty()[1], bars.last_close())
        return replay_mismatches(self.strategy, bars, warmup_bars, {d.bar_time: d for d in snap.decisions},
                                 since=snap.decided_by_since(self.strategy.model_id))

    # -- checkpointing ------------------------------------------------------------------------------
    def sync_equity(self) -> None:
        """Hand the equity marks not yet journaled to the journal, as one block."""
        self.curve.sync(self.bar_index)

    @property
    def first_bar(self) -> int | None:
        """Open time of the first bar this engine traded (None before any)."""
        return self.curve.first_bar(self.bar_index)

    def progress(self) -> dict[str, Any]:
        return {"bars": len(self.curve), "first_bar": self.first_bar, "last_bar": self.last_bar}

