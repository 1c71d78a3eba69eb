"""Round-trip trades built from fills, for any broker.

A trade opens when the position leaves zero and closes when it returns to zero; a fill that
flips the position closes one trade and opens the next, its fee split pro rata.

Spot (Bybit) takes a buy's fee out of the coins bought, so an exit that sells what is held,
rounded down to the lot, leaves dust: with ``dust`` (the lot step) a trade closes once less than
that is left, and the dust, at its entry price, starts the next trade. Fees count in the quote
coin (a base-coin fee at its fill price).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot.domain import ZERO, Fill, symbol_tag


@dataclass(slots=True)
class _OpenTrade:
    direction: int
    entry_time: int
    entry_bar: int
    entry_decision_id: str | None
    qty: Decimal = ZERO          # current absolute size
    entry_qty: Decimal = ZERO    # everything bought (long) / sold (short) to build it
    entry_value: Decimal = ZERO
    exit_qty: Decimal = ZERO
    exit_value: Decimal = ZERO
    gross: Decimal = ZERO
    fees: Decimal = ZERO

    @property
    def avg_entry(self) -> Decimal:
        return self.entry_value / self.entry_qty


class TradeLedger:
    """Trade ids are ``run-tN``; a multi-market run's ledgers name their market like decision
    ids do (``run-xxxx-tN``), so two markets' trades never share an id."""

    def __init__(self, run_id: str, symbol: str | None = None, dust: Decimal = ZERO) -> None:
        self.run_id = run_id
        self._prefix = f"{run_id}-t" if symbol is None else f"{run_id}-{symbol_tag(symbol)}-t"
        self.open: _OpenTrade | None = None
        self.closed = 0
        #: A position smaller than this is flat (spot: one lot; linear: 0).
        self.dust = dust
        #: What a closed trade left behind (below one lot): (qty, entry price), joins the next trade.
        self.carry: tuple[Decimal, Decimal] | None = None

    def on_fill(self, fill: Fill, decision_id: str | None, bar_index: int) -> list[dict[str, Any]]:
        """Apply a fill; return the trades it closed (journal rows)."""
        out: list[dict[str, Any]] = []
        moved = fill.held_change
        sign = 1 if moved > 0 else -1
        total = remaining = abs(moved)
        fee = fill.fee_value
        while remaining > 0:
            tr = self.open
            if tr is None:
                tr = self.open = self._new(sign, fill.time, bar_index, decision_id)
            share = remaining / total
            if tr.direction == sign:  # open or add
                tr.qty += remaining
                tr.entry_qty += remaining
                tr.entry_value += remaining * fill.price
                tr.fees += fee * share
                remaining = ZERO
            else:  # reduce, close, maybe flip
                q = min(remaining, tr.qty)
                tr.gross += (fill.price - tr.avg_entry) * q * tr.direction
                tr.exit_qty += q
                tr.exit_value += q * fill.price
                tr.fees += fee * (q / total)
                tr.qty -= q
                remaining -= q
                if tr.qty == 0 or (tr.qty < self.dust and remaining == 0):
                    out.append(self._close(tr, fill.time, decision_id, bar_index))
                    self.open = None
                    self.carry = (tr.qty * tr.direction, tr.avg_entry) if tr.qty else None
        return out

    def _new(self, sign: int, t: int, bar_index: int, decision_id: str | None) -> _OpenTrade:
        tr = _OpenTrade(sign, t, bar_index, decision_id)
        carry, self.carry = self.carry, None
        if carry is not None and (carry[0] > 0) == (sign > 0):
            tr.qty = tr.entry_qty = abs(carry[0])
            tr.entry_value = abs(carry[0]) * carry[1]
        return tr

    def _close(self, tr: _OpenTrade, t: int, decision_id: str | None, bar_index: int) -> dict[str, Any]:
        self.closed += 1
        fees = tr.fees.quantize(Decimal("1e-10"))
        net = tr.gross - fees
        return {
            "id": f"{self._prefix}{self.closed}",
            "symbol": "",
            "direction": "long" if tr.direction > 0 else "short",
            "qty": tr.entry_qty,
            "entry_time": tr.entry_time,
            "exit_time": t,
            "entry_price": tr.avg_entry.quantize(Decimal("1e-8")),
            "exit_price": (tr.exit_value / tr.exit_qty).quantize(Decimal("1e-8")),
            "gross_pnl": tr.gross,
            "fees": fees,
            "net_pnl": net,
            "return_pct": float(net / tr.entry_value) if tr.entry_value else 0.0,
            "bars_held": bar_index - tr.entry_bar,
            "entry_decision_id": tr.entry_decision_id,
            "exit_decision_id": decision_id,
        }

    def restore(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        self.closed = int(state.get("closed", 0))
        c = state.get("carry")
        self.carry = (Decimal(c[0]), Decimal(c[1])) if c else None
        o = state.get("open")
        if o:
            self.open = _OpenTrade(
                direction=int(o["direction"]), entry_time=int(o["entry_time"]), entry_bar=int(o["entry_bar"]),
                entry_decision_id=o.get("entry_decision_id"), qty=Decimal(o["qty"]),
                entry_qty=Decimal(o["entry_qty"]), entry_value=Decimal(o["entry_value"]),
                exit_qty=Decimal(o["exit_qty"]), exit_value=Decimal(o["exit_value"]),
                gross=Decimal(o["gross"]), fees=Decimal(o["fees"]),
            )

    def state(self) -> dict[str, Any]:
        o = self.open
        return {
            "closed": self.closed,
            "carry": None if self.carry is None else [str(self.carry[0]), str(self.carry[1])],
            "open": None if o is None else {
                "direction": o.direction, "entry_time": o.entry_time, "entry_bar": o.entry_bar,
                "entry_decision_id": o.entry_decision_id, "qty": str(o.qty), "entry_qty": str(o.entry_qty),
                "entry_value": str(o.entry_value), "exit_qty": str(o.exit_qty),
                "exit_value": str(o.exit_value), "gross": str(o.gross), "fees": str(o.fees),
            },
        }
