"""WebSocket endpoints and the hub that fans pushes out to subscribed connections.

Public channels ``/v5/public/linear`` and ``/v5/public/spot`` answer ``ping`` and
``subscribe``/``unsubscribe`` exactly as Bybit does (see ws_ping_pong.json, ws_subscribe.json)
and carry ``kline.{interval}.{symbol}`` pushes. Faults (delay, duplicates, reordering, dropped
connections) are applied per connection in its writer task. A later private module adds its
channel with :meth:`WsHub.add_channel` and extra ops (``auth``) with :meth:`WsHub.add_op`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from broker.bybit_sim.state import SimState

log = structlog.get_logger("bybit_sim.ws")

#: Bybit drops connections that neither ping nor receive data for 10 minutes.
IDLE_TIMEOUT_S = 600.0

OpHandler = Callable[["WsConn", dict[str, Any]], Awaitable[None]]


class WsConn:
    """One client connection: its topics and an ordered outbound queue with fault injection."""

    def __init__(self, hub: WsHub, ws: web.WebSocketResponse, channel: str) -> None:
        self.hub = hub
        self.ws = ws
        self.channel = channel
        self.topics: set[str] = set()
        self.conn_id = str(uuid.uuid4())
        self.queue: asyncio.Queue[tuple[dict[str, Any], bool]] = asyncio.Queue()
        self.closed = False
        #: Free slot for private modules (e.g. the authenticated account).
        self.session: dict[str, Any] = {}

    def send(self, msg: dict[str, Any], faulty: bool = True) -> None:
        if faulty and self.hub.state.faults.ws_mute:
            return
        if not self.closed:
            self.queue.put_nowait((msg, faulty))

    async def writer(self) -> None:
        state = self.hub.state
        held: dict[str, Any] | None = None
        while not self.closed:
            try:
                if held is not None:
                    msg, faulty = await asyncio.wait_for(self.queue.get(), timeout=0.05)
                else:
                    msg, faulty = await self.queue.get()
            except TimeoutError:
                await self._write(held)
                held = None
                continue
            f = state.faults
            if faulty:
                delay = f.ws_delay_ms + f.latency_ms + (state.rng.random() * f.jitter_ms if f.jitter_ms else 0)
                if delay > 0:
                    await asyncio.sleep(delay / 1000.0)
                if held is None and f.ws_reorder_rate and state.rng.random() < f.ws_reorder_rate:
                    held = msg  # sent after the next message: out of order
                    state.stats["ws_reordered"] += 1
                    continue
            await self._write(msg)
            if faulty and f.ws_duplicate_rate and state.rng.random() < f.ws_duplicate_rate:
                state.stats["ws_duplicated"] += 1
                await self._write(msg)
            if held is not None:
                await self._write(held)
                held = None

    async def _write(self, msg: dict[str, Any]) -> None:
        if self.closed or self.ws.closed:
            return
        try:
            await self.ws.send_str(json.dumps(msg, separators=(",", ":")))
        except (ConnectionResetError, RuntimeError):
            self.closed = True

    async def drop(self) -> None:
        """Close the connection abruptly (fault injection); queued messages are lost."""
        self.closed = True
        with contextlib.suppress(Exception):
            await self.ws.close(code=1001, message=b"simulated drop")


class WsHub:
    def __init__(self, state: SimState) -> None:
        self.state = state
        self.conns: set[WsConn] = set()
        self._ops: dict[str, OpHandler] = {"ping": self._ping, "subscribe": self._subscribe,
                                           "unsubscribe": self._unsubscribe}
        self._valid_topic: dict[str, Callable[[str], bool]] = {}
        self.confirmed = 0

    # -- extension points --------------------------------------------------------------------------
    def add_channel(self, app: web.Application, path: str, channel: str,
                    valid_topic: Callable[[str], bool]) -> None:
        self._valid_topic[channel] = valid_topic

        async def handler(request: web.Request) -> web.WebSocketResponse:
            return await self.serve(request, channel)

        app.router.add_get(path, handler)

    def add_op(self, op: str, handler: OpHandler) -> None:
        self._ops[op] = handler

    def op(self, op: str) -> OpHandler:
        """The handler of ``op`` now (an extension wraps it before replacing it)."""
        return self._ops[op]

    def publish(self, channel: str, topic: str, msg: dict[str, Any]) -> None:
        for c in list(self.conns):
            if c.channel == channel and topic in c.topics:
                c.send(msg)

    # -- connection life cycle ---------------------------------------------------------------------
    async def serve(self, request: web.Request, channel: str) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        conn = WsConn(self, ws, channel)
        self.conns.add(conn)
        writer = asyncio.create_task(conn.writer())
        try:
            while not conn.closed:
                try:
                    msg = await ws.receive(timeout=IDLE_TIMEOUT_S)
                except TimeoutError:
                    break
                if msg.type != WSMsgType.TEXT:
                    break
                try:
                    req = json.loads(msg.data)
                except ValueError:
                    conn.send({"success": False, "ret_msg": "Invalid request", "conn_id": conn.conn_id}, False)
                    continue
                op = req.get("op") if isinstance(req, dict) else None
                handler = self._ops.get(op or "")
                if handler is None:
                    conn.send({"success": False, "ret_msg": f"error:unsupported op {op}", "op": op,
                               "conn_id": conn.conn_id}, False)
                    continue
                await handler(conn, req)
        finally:
            conn.closed = True
            self.conns.discard(conn)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
        return ws

    async def drop_all(self, channel: str | None = None) -> int:
        victims = [c for c in self.conns if channel is None or c.channel == channel]
        for c in victims:
            await c.drop()
        self.state.stats["ws_dropped"] += len(victims)
        return len(victims)

    async def close(self) -> None:
        await self.drop_all()

    # -- ops ---------------------------------------------------------------------------------------
    async def _ping(self, conn: WsConn, req: dict[str, Any]) -> None:
        self.state.stats["ws_pings"] += 1
        if conn.channel in ("linear", "inverse", "spot"):
            reply: dict[str, Any] = {"success": True, "ret_msg": "pong", "conn_id": conn.conn_id}
            if conn.channel != "spot" or "req_id" in req:
                reply["req_id"] = str(req.get("req_id", ""))
            reply["op"] = "ping"
        else:  # private / option style
            reply = {"op": "pong", "args": [str(int(time.time() * 1000))], "conn_id": conn.conn_id}
            if "req_id" in req:
                reply["req_id"] = str(req["req_id"])
        conn.send(reply, False)

    def _ack(self, conn: WsConn, req: dict[str, Any], op: str, success: bool, msg: str) -> dict[str, Any]:
        if conn.channel == "spot" and success:
            msg = op
        ack: dict[str, Any] = {"success": success, "ret_msg": msg, "conn_id": conn.conn_id}
        if conn.channel in ("linear", "inverse") or "req_id" in req:
            ack["req_id"] = str(req.get("req_id", ""))
        ack["op"] = op
        return ack

    async def _subscribe(self, conn: WsConn, req: dict[str, Any]) -> None:
        # Acked at once by default, as Bybit does for a nearby client (well under a millisecond):
        # a client must be ready for the ack before its send returns.
        if (delay := self.state.faults.ws_ack_delay_ms) > 0:
            await asyncio.sleep(delay / 1000.0)
        args = req.get("args") or []
        valid = self._valid_topic.get(conn.channel, lambda _t: False)
        bad = [a for a in args if not isinstance(a, str) or not valid(a)]
        if not args or bad:
            topic = bad[0] if bad else ""
            conn.send(self._ack(conn, req, "subscribe", False, f"error:handler not found,topic:{topic}"), False)
            return
        dup = [a for a in args if a in conn.topics]
        if dup:
            conn.send(self._ack(conn, req, "subscribe", False, f"error:already subscribed,topic:{dup[0]}"), False)
            return
        conn.topics.update(args)
        self.state.stats["kline_subscriptions"] += sum(a.startswith("kline.") for a in args)
        conn.send(self._ack(conn, req, "subscribe", True, ""), False)

    async def _unsubscribe(self, conn: WsConn, req: dict[str, Any]) -> None:
        for a in req.get("args") or []:
            conn.topics.discard(a)
        conn.send(self._ack(conn, req, "unsubscribe", True, ""), False)
