"""Order state machine, instrument rounding, deterministic ids."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.domain import (
    ORDER_TRANSITIONS,
    Category,
    IllegalTransitionError,
    Instrument,
    Order,
    OrderRequest,
    OrderStatus,
    Side,
    client_order_id,
)

INS = Instrument("BTCUSDT", Category.LINEAR, Decimal("0.1"), Decimal("0.001"), Decimal("0.001"), Decimal("5"))


def _order() -> Order:
    return Order.from_request(OrderRequest("cid", "BTCUSDT", Side.BUY, Decimal("0.01")), 0)


@pytest.mark.parametrize("src", list(OrderStatus))
@pytest.mark.parametrize("dst", list(OrderStatus))
def test_transition_table_is_enforced(src: OrderStatus, dst: OrderStatus) -> None:
    o = _replace_status(_order(), src)
    if dst in ORDER_TRANSITIONS[src]:
        assert o.transition(dst, 1).status is dst
    else:
        with pytest.raises(IllegalTransitionError):
            o.transition(dst, 1)


def _replace_status(o: Order, status: OrderStatus) -> Order:
    from dataclasses import replace

    return replace(o, status=status)


def test_terminal_statuses_have_no_exit() -> None:
    for st in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED):
        assert st.is_terminal and not ORDER_TRANSITIONS[st]


def test_happy_path_and_fill_before_ack() -> None:
    o = _order().transition(OrderStatus.SUBMITTED, 1)
    # A fill can overtake the acknowledgement on a real venue.
    assert o.transition(OrderStatus.FILLED, 2).status is OrderStatus.FILLED
    o = o.transition(OrderStatus.ACCEPTED, 2).transition(OrderStatus.PARTIALLY_FILLED, 3)
    o = o.transition(OrderStatus.PARTIALLY_FILLED, 4).transition(OrderStatus.FILLED, 5)
    assert o.updated_time == 5 and o.created_time == 0


@pytest.mark.parametrize(("qty", "floored"), [("0.0019", "0.001"), ("1.23456", "1.234"), ("0.0009", "0.000")])
def test_floor_qty_to_lot(qty: str, floored: str) -> None:
    assert INS.floor_qty(Decimal(qty)) == Decimal(floored)


def test_round_price_to_tick_and_minimums() -> None:
    assert INS.round_price(Decimal("37820.55")) in (Decimal("37820.6"), Decimal("37820.5"))
    assert INS.round_price(Decimal("37820.56")) == Decimal("37820.6")
    assert not INS.tradable(Decimal("0.0001"), Decimal("40000"))  # below min qty
    assert not INS.tradable(Decimal("0.001"), Decimal("100"))  # 0.1 USDT < 5 USDT notional
    assert INS.tradable(Decimal("0.001"), Decimal("40000"))


def test_client_order_id_is_deterministic_and_fits_bybit() -> None:
    a = client_order_id("abcd1234", "1000PEPEUSDT", 1_700_000_000_000, 3)
    assert a == client_order_id("abcd1234", "1000PEPEUSDT", 1_700_000_000_000, 3)
    assert a != client_order_id("abcd1234", "BTCUSDT", 1_700_000_000_000, 3)
    assert len(a) <= 36


def test_a_transition_copies_every_field_and_changes_only_those_named() -> None:
    """Order.transition builds its copy field by field: every field of Order (a new one too:
    it must be added here) survives a transition unless named."""
    from dataclasses import fields

    from bot.domain import ExitReason, OrderType

    sample = {"client_order_id": "c1", "symbol": "BTCUSDT", "side": Side.SELL, "qty": Decimal("0.5"),
              "order_type": OrderType.LIMIT, "status": OrderStatus.SUBMITTED, "created_time": 1, "updated_time": 2,
              "price": Decimal("100"), "decision_id": "d1", "exchange_order_id": "e1", "filled_qty": Decimal("0.1"),
              "avg_fill_price": Decimal("99"), "reject_reason": "r", "adopted": True,
              "exit_reason": ExitReason.STOP_LOSS}
    o = Order(**{f.name: sample[f.name] for f in fields(Order)})
    got = o.transition(OrderStatus.PARTIALLY_FILLED, 9, filled_qty=Decimal("0.2"))
    want = {**sample, "status": OrderStatus.PARTIALLY_FILLED, "updated_time": 9, "filled_qty": Decimal("0.2")}
    assert {f.name: getattr(got, f.name) for f in fields(Order)} == want
    assert o.filled_qty == Decimal("0.1")  # the original is unchanged
    with pytest.raises(TypeError, match="no field 'colour'"):
        o.transition(OrderStatus.FILLED, 9, colour="red")
