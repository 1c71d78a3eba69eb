"""Bybit's 10002 (request timestamp outside recv_window) is explained by what caused it: the
signed check at start-up measures the clock offset at the middle of the refused request's
round trip, and when that offset is within the round trip's margin it says latency, not the
clock, is the problem. Against the simulator: a slow network, a venue clock ahead, one behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.errors import ExchangeFatalError
from broker.bybit import BybitHttp
from broker.bybit_sim import SimServer
from broker.bybit_sim.faults import FaultConfig
from broker.bybit_sim.private_rest import PrivateFaults
from tests.live_helpers import KEY, SECRET, modules, sim_cfg


async def _refusal(btc_1h: Path, recv_window: int, latency_ms: float = 0.0, offset_ms: int = 0) -> str:
    cfg = sim_cfg(btc_1h, 200.0, history=300, faults=FaultConfig(latency_ms=latency_ms))
    async with SimServer(cfg, modules(faults=PrivateFaults(clock_offset_ms=offset_ms))) as sim:
        http = BybitHttp(KEY, SECRET, rest_url=sim.rest_url, recv_window=recv_window, timeout_s=30.0)
        try:
            with pytest.raises(ExchangeFatalError) as e:
                await http.check_keys()
        finally:
            http.close()
    assert e.value.code == 10002 and "\n" not in str(e.value)
    assert KEY not in str(e.value) and SECRET not in str(e.value)
    return str(e.value)


async def test_high_latency_is_blamed_not_the_clock(btc_1h: Path) -> None:
    # Every answer takes 1.5 s; Bybit accepts a request only within 1 s of its timestamp.
    msg = await _refusal(btc_1h, recv_window=1000, latency_ms=1500)
    assert "the network latency is the problem, not the local clock" in msg, msg
    assert "clock is" not in msg
    rtt = float(re.search(r"after a ([\d.]+) s round trip", msg).group(1))  # type: ignore[union-attr]
    assert rtt >= 1.5 and "recv_window 1 s" in msg


@pytest.mark.parametrize(("offset_ms", "words"), [(8000, "8.0 s behind"), (-3000, "3.0 s ahead of")])
async def test_a_skewed_clock_is_measured_at_the_middle_of_the_round_trip(btc_1h: Path, offset_ms: int,
                                                                         words: str) -> None:
    msg = await _refusal(btc_1h, recv_window=5000, offset_ms=offset_ms)
    m = re.fullmatch(r"the local clock is ([\d.]+) s (behind|ahead of) Bybit's server time \(measured at the "
                     r"middle of a ([\d.]+) s round trip\): sync it \(NTP\) or raise exchange.recv_window", msg)
    assert m is not None, msg
    # Within the margin of the round trip (half of it) of the true offset, plus the rounding.
    measured = float(m.group(1)) * (1 if m.group(2) == "behind" else -1)
    assert abs(measured * 1000 - offset_ms) <= float(m.group(3)) * 500 + 50, msg
    if float(m.group(3)) < 1.0:  # an unloaded machine: the one-decimal figure is the true offset
        assert words in msg
