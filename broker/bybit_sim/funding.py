"""Funding settlement of the simulated account (the rule: broker/bybit_sim/account.py's docstring).

Each settlement time T of a market with a funding file is settled at the first tick of the first
bar opening at or after T, on the linear position then held, at that bar's open: an execution of
``execType`` Funding, the wallet moved by ``-execFee``.
"""

from __future__ import annotations

import uuid
from bisect import bisect_left
from decimal import Decimal
from typing import TYPE_CHECKING

from broker.bybit_sim.market import Market
from broker.bybit_sim.wire import ZERO, SimExec, SimOrder, dec, s

if TYPE_CHECKING:
    from broker.bybit_sim.account import Account

_FEE_Q = Decimal("1e-10")


def settle_funding(acct: Account, m: Market, start: int, price: Decimal) -> None:
    """Every settlement of ``m`` due by the bar opening at ``start``, at ``price`` (its open)."""
    f = m.funding
    if f is None:
        return
    i = acct.next_funding.get(m.symbol)
    if i is None:
        i = bisect_left(f.times.tolist(), start)
    while i < len(f) and int(f.times[i]) <= start:
        _funding_exec(acct, m, int(f.times[i]), float(f.rates[i]), price)
        i += 1
    acct.next_funding[m.symbol] = i


def _funding_exec(acct: Account, m: Market, t: int, rate: float, price: Decimal) -> None:
    b = acct.books.get(m.symbol)
    if b is None or not b.size:
        return
    fee = (b.size * price * dec(rate)).quantize(_FEE_Q)
    acct.coins["USDT"] -= fee
    acct.seq += 1
    side = "Buy" if b.size > 0 else "Sell"
    stand_in = SimOrder(order_id=str(uuid.uuid4()), link_id="", category="linear", symbol=m.symbol, side=side,
                        order_type="UNKNOWN", qty=abs(b.size), price=None, reduce_only=False, created=t,
                        updated=t, status="Filled", cum_qty=abs(b.size))
    ex = SimExec(exec_id=str(uuid.uuid4()), order=stand_in, qty=abs(b.size), price=price, fee=fee, time=t,
                 seq=acct.seq, is_maker=False, closed_size=ZERO, fee_currency=m.quote_coin,
                 exec_type="Funding", fee_rate=s(dec(rate)))
    acct.execs.append(ex)
    acct.state.stats["funding_settlements"] += 1
    if acct.before_exec_push is not None:
        acct.before_exec_push(ex)
    acct.push("execution", [ex.wire()])
    acct.push("wallet", [acct.wallet_wire()])
