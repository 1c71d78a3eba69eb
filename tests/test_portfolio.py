"""Target -> order, as a table: lot rounding, minimum size, and the rebalance threshold."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.domain import Category, Instrument, Side
from bot.portfolio import order_for_target, target_quantity

D = Decimal
INS = Instrument("BTCUSDT", Category.LINEAR, D("0.1"), D("0.001"), D("0.001"), D("5"))
EQ = 60_000.0   # equity
PX = 60_000.0   # decision bar's close: 1 BTC = 100% of equity


@pytest.mark.parametrize(("current", "target", "threshold", "expected"), [
    # current qty, target qty, risk.rebalance_threshold -> (side, qty) sent, or None (decision "hold")
    ("1.000", "1.001", 0.0, (Side.BUY, "0.001")),   # no threshold: any tradable step goes out
    ("1.000", "1.001", 0.02, None),                  # target 1.0 re-issued after a restart: 0.1% of equity
    ("1.000", "0.990", 0.02, None),                  # 1% trim, below 2%
    ("1.000", "0.980", 0.02, (Side.SELL, "0.020")),  # exactly 2%: sent
    ("1.000", "1.100", 0.02, (Side.BUY, "0.100")),   # 10% top-up
    ("0.010", "0", 0.02, (Side.SELL, "0.010")),      # closing to flat: always sent, however small
    ("-0.010", "0", 0.02, (Side.BUY, "0.010")),      # closing a short to flat
    ("0.005", "-0.005", 0.02, (Side.SELL, "0.010")),  # sign flip: always sent
    ("-0.005", "0.005", 0.02, (Side.BUY, "0.010")),   # and back
    ("0", "0.010", 0.02, None),                       # opening 1% from flat is a change like any other
    ("0", "0.050", 0.02, (Side.BUY, "0.050")),
    ("0", "0", 0.02, None),                           # flat and staying flat
    ("1.000", "1.000", 0.0, None),
    ("0.0001", "0", 0.02, None),                      # below the lot: untradable even to flat
])
def test_rebalance_threshold_table(current: str, target: str, threshold: float, expected: tuple | None) -> None:
    plan = order_for_target(D(target), D(current), PX, INS, equity=EQ, rebalance_threshold=threshold)
    assert plan == (None if expected is None else (expected[0], D(expected[1])))


def test_reissued_full_target_after_a_price_move_is_one_lot_and_held() -> None:
    """The restart case: target 1.0 sized again at a slightly higher equity is one 0.001-BTC lot off."""
    held = D("1.000")
    tq = target_quantity(1.0, 60_100.0, PX, 0.0, INS)
    assert tq - held == D("0.001")
    assert order_for_target(tq, held, PX, INS, equity=60_100.0) == (Side.BUY, D("0.001"))
    assert order_for_target(tq, held, PX, INS, equity=60_100.0, rebalance_threshold=0.02) is None
