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


def test_an_order_accepted_at_once_is_the_order_that_went_through_both_moves() -> None:
    """Order.accepted (a venue's instant ack, one copy) equals created -> submitted -> accepted."""
    from bot.domain import OrderType

    req = OrderRequest("c2", "BTCUSDT", Side.SELL, Decimal("0.3"), OrderType.LIMIT, Decimal("101.5"), "d2",
                       reduce_only=True, reference_price=Decimal("100"))
    walked = Order.from_request(req, 7).transition(OrderStatus.SUBMITTED, 7).transition(
        OrderStatus.ACCEPTED, 7, exchange_order_id="e2")
    assert Order.accepted(req, 7, "e2") == walked


def _json_like():  # type: ignore[no-untyped-def]
    import numpy as np
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=3), st.sampled_from([np.float64(1.5), np.float64("nan"), np.int64(3),
                                                              np.float32(2.0), object(), {1, 2}, b"x"]))
    keys = st.one_of(st.text(max_size=3), st.integers(), st.none(), st.booleans(), st.floats(),
                     st.sampled_from([(1, 2), np.int64(1), frozenset()]))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.tuples(inner, inner),
                                                         st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


def test_check_json_fails_exactly_where_strict_json_dumps_fails() -> None:
    """The engine's explanation check (no text written) agrees with json.dumps(allow_nan=False):
    the same trees pass, and a failure is the same exception type."""
    import json

    from hypothesis import given, settings

    from bot.domain import check_json

    @settings(max_examples=3000, deadline=None)
    @given(_json_like())
    def agree(tree):  # type: ignore[no-untyped-def]
        try:
            json.dumps(tree, allow_nan=False)
            want = None
        except (TypeError, ValueError) as exc:
            want = type(exc)
        try:
            check_json(tree)
            got = None
        except (TypeError, ValueError) as exc:
            got = type(exc)
        assert got is want, (tree, got, want)

    agree()
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="Circular"):
        check_json(cyclic)
