"""The private stream against a venue that answers at once, wrongly, or not at all.

Bybit acks a subscribe within a millisecond for a nearby client, so the ack can be read before
the thread that sent the subscribe runs again: the bot's stream must be ready for it. A start
against a venue that never answers ends in one clear error, and a supervisor whose reconnect
meets such a venue keeps trying until the venue is back, instead of hanging on the first try.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
import websocket

from bot.errors import ExchangeFatalError
from broker.bybit import BybitHttp, PrivateStream, private_url
from broker.bybit.stream import TOPICS
from broker.bybit_sim import SimServer
from tests.live_helpers import KEY, SECRET, modules, sim_cfg, until

#: A guard only: a stream that works is ready in well under a second; one that hangs never is.
GUARD_S = 60.0




async def _noop() -> None:
    return None


def stall_after_subscribe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving a loaded machine produces by chance, every time: the thread that sent a
    subscribe loses the CPU right after the send, so the venue's instant ack is read (on
    websocket-client's reader thread) before the sender runs its next line. The bytes on the wire
    are untouched."""
    real = websocket.WebSocketApp.send

    def send(self: websocket.WebSocketApp, data: Any, opcode: int = websocket.ABNF.OPCODE_TEXT) -> Any:
        n = real(self, data, opcode)
        if isinstance(data, str) and '"subscribe"' in data:
            time.sleep(0.2)
        return n

    monkeypatch.setattr(websocket.WebSocketApp, "send", send)


def _private(sim: SimServer) -> list[Any]:
    return [c for c in sim.hub.conns if c.channel == "private" and "api_key" in c.session]


async def test_stream_is_ready_when_the_venue_acks_before_the_send_returns(btc_1h: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    stall_after_subscribe(monkeypatch)
    async with SimServer(sim_cfg(btc_1h, 150.0, history=300), modules()) as sim:
        assert sim.state.faults.ws_ack_delay_ms == 0  # the venue acks at once by default
        got: list[dict[str, Any]] = []
        stream = PrivateStream(KEY, SECRET, url=private_url(sim.ws_url, True), testnet=True,
                               on_message=got.append, on_reconnect=_noop)
        http = BybitHttp(KEY, SECRET, rest_url=sim.rest_url, timeout_s=5.0)
        try:
            await asyncio.wait_for(stream.start(), GUARD_S)
            assert stream.ready.is_set() and stream.connects == 1
            conns = _private(sim)
            assert len(conns) == 1 and conns[0].topics == set(TOPICS)
            # Every subscription delivers: an order placed now is pushed on all four topics.
            await http.create("linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                              orderLinkId="instant-1", positionIdx=0)
            await until(lambda: {m.get("topic") for m in got} >= set(TOPICS), "a push on every topic")
            assert any(d.get("orderLinkId") == "instant-1" for m in got if m.get("topic") == "execution"
                       for d in m["data"])
        finally:
            await stream.close()
            http.close()


async def test_wrong_secret_ends_the_start_with_one_clear_error(btc_1h: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    stall_after_subscribe(monkeypatch)  # the refusal is read while the subscribes are still going out
    async with SimServer(sim_cfg(btc_1h, 150.0, history=300), modules()) as sim:
        stream = PrivateStream(KEY, "not-the-secret", url=private_url(sim.ws_url, True), testnet=True,
                               on_message=lambda _m: None, on_reconnect=_noop)
        try:
            with pytest.raises(ExchangeFatalError, match="authentication failed") as e:
                await asyncio.wait_for(stream.start(), GUARD_S)
            assert "not-the-secret" not in str(e.value) and "\n" not in str(e.value)
            assert sim.state.stats["ws_auth_failed"] == 1 and not stream.ready.is_set()
        finally:
            await stream.close()


class Hop:
    """A TCP hop in front of the venue (a load balancer): it forwards both ways, or, black-holed,
    accepts connections and never answers them, as a balancer whose venue is gone does."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.black_hole = False
        self.held = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Hop:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop()
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def drop(self) -> None:
        """Cut every connection through the hop (both sides see a reset)."""
        for w in list(self._writers):
            w.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.black_hole:
                self.held += 1
                await reader.read()  # whatever the client sends, no answer ever comes
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        dst.transport.abort()


async def test_start_against_a_venue_that_never_answers_fails_clearly(btc_1h: Path) -> None:
    async with SimServer(sim_cfg(btc_1h, 150.0, history=300), modules()) as sim, Hop(sim.port) as hop:
        hop.black_hole = True
        stream = PrivateStream(KEY, SECRET, url=private_url(hop.url, True), testnet=True,
                               on_message=lambda _m: None, on_reconnect=_noop, connect_timeout_s=1.0)
        try:
            with pytest.raises(ExchangeFatalError, match="no answer") as e:
                await asyncio.wait_for(stream.start(), GUARD_S)
            assert hop.url in str(e.value) and "\n" not in str(e.value)
            assert hop.held == 1 and not stream.ready.is_set()
        finally:
            await stream.close()


async def test_supervisor_keeps_trying_through_a_reconnect_that_hangs(btc_1h: Path) -> None:
    async with SimServer(sim_cfg(btc_1h, 150.0, history=300), modules()) as sim, Hop(sim.port) as hop:
        caught_up: list[int] = []

        async def on_reconnect() -> None:
            caught_up.append(stream.connects)

        got: list[dict[str, Any]] = []
        stream = PrivateStream(KEY, SECRET, url=private_url(hop.url, True), testnet=True, on_message=got.append,
                               on_reconnect=on_reconnect, check_every_s=0.05, connect_timeout_s=1.0)
        http = BybitHttp(KEY, SECRET, rest_url=sim.rest_url, timeout_s=5.0)
        try:
            await asyncio.wait_for(stream.start(), GUARD_S)
            # The venue goes away behind the hop: the connection is cut and reconnects are swallowed.
            hop.black_hole = True
            hop.drop()
            await until(lambda: not stream.ready.is_set(), "the supervisor to see the stream lost")
            # A supervisor stuck on its first reconnect would never come back for a second one.
            await until(lambda: hop.held >= 2, "a second reconnect attempt")
            hop.black_hole = False
            await until(stream.ready.is_set, "a fresh authenticated stream")
            # The catch-up runs right after the stream is ready (ready first: new orders may go out).
            await until(lambda: bool(caught_up), "the catch-up after the reconnect")
            assert stream.connects >= 2 and len(_private(sim)) == 1
            await http.create("linear", symbol="BTCUSDT", side="Buy", orderType="Market", qty="0.01",
                              orderLinkId="after-1", positionIdx=0)
            await until(lambda: any(d.get("orderLinkId") == "after-1" for m in got if m.get("topic") == "execution"
                                    for d in m["data"]), "the fill pushed on the new stream")
        finally:
            with contextlib.suppress(Exception):
                await stream.close()
            http.close()
