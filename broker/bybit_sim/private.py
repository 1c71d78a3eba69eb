"""The simulator's private half as one module for :func:`broker.bybit_sim.app.build_app`.

``PrivateModule(keys=...)`` adds the signed REST endpoints (private_rest.py), the account and
its order matcher (account.py, fed by the replayer's kline ticks) and the private WebSocket
``/v5/private`` with ``op: auth`` and the ``order``, ``execution``, ``position`` and ``wallet``
topics. Subscribing before a successful auth is refused, as on Bybit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from broker.bybit_sim.account import Account, AccountConfig, SimExec
from broker.bybit_sim.auth import verify_ws
from broker.bybit_sim.clock import SimClock
from broker.bybit_sim.private_rest import PrivateFaults, PrivateRest
from broker.bybit_sim.state import SimState
from broker.bybit_sim.ws import WsConn, WsHub

PRIVATE_TOPICS = ("order", "execution", "position", "wallet")
ACCOUNT_KEY = "account"


@dataclass
class PrivateModule:
    keys: dict[str, str]
    account: AccountConfig = field(default_factory=AccountConfig)
    faults: PrivateFaults = field(default_factory=PrivateFaults)

    def register(self, app: web.Application, state: SimState, hub: WsHub) -> None:
        acct = Account(state, self.account)
        state.extensions[ACCOUNT_KEY] = acct
        state.extensions["private_faults"] = self.faults
        PrivateRest(state, acct, self.keys, self.faults).register(app)
        hub.add_channel(app, "/v5/private", "private", lambda t: t in PRIVATE_TOPICS)
        public_subscribe = hub.op("subscribe")  # wrapped, not replaced
        keys = self.keys

        async def auth(conn: WsConn, req: dict[str, Any]) -> None:
            now = SimClock.wall_ms() + self.faults.clock_offset_ms
            key = verify_ws(keys, req.get("args"), now_ms=now) if conn.channel == "private" else None
            ok = key is not None
            if ok:
                conn.session["api_key"] = key
            state.stats["ws_auth_ok" if ok else "ws_auth_failed"] += 1
            reply: dict[str, Any] = {"success": ok, "ret_msg": "" if ok else "Params Error", "op": "auth",
                                     "conn_id": conn.conn_id}
            if "req_id" in req:
                reply["req_id"] = str(req["req_id"])
            conn.send(reply, False)

        async def subscribe(conn: WsConn, req: dict[str, Any]) -> None:
            if conn.channel == "private" and "api_key" not in conn.session:
                reply = {"success": False, "ret_msg": "Request not authorized", "op": "subscribe",
                         "conn_id": conn.conn_id}
                if "req_id" in req:
                    reply["req_id"] = str(req["req_id"])
                conn.send(reply, False)
                return
            await public_subscribe(conn, req)

        hub.add_op("auth", auth)
        hub.add_op("subscribe", subscribe)

        def push(topic: str, data: list[dict[str, Any]]) -> None:
            if self.faults.mute_pushes:
                state.stats["pushes_lost"] += 1
                return
            msg = {"id": uuid.uuid4().hex, "topic": topic, "creationTime": int(time.time() * 1000), "data": data}
            for c in list(hub.conns):
                if c.channel == "private" and topic in c.topics and "api_key" in c.session:
                    # Private pushes are never duplicated, reordered or muted by the public knobs.
                    c.send(msg, False)
            state.stats[f"push_{topic}"] += 1

        acct.push = push
        faults = self.faults

        def before_exec(ex: SimExec) -> None:
            n = faults.drop_stream_every
            if n and state.stats["executions"] % n == 0:
                victims = [c for c in hub.conns if c.channel == "private"]
                for c in victims:
                    c.closed = True  # pushes from here on are lost; the socket closes below
                    asyncio.get_event_loop().create_task(c.drop())
                state.stats["private_drops"] += 1

        acct.before_exec_push = before_exec


def account_of(state: SimState) -> Account:
    return state.extensions[ACCOUNT_KEY]  # type: ignore[no-any-return]


def serve_with_private(cfg: Any, host: str, port: int, module: PrivateModule) -> None:
    """``bot exchange-sim --api-key K --api-secret S``: the public and the private half together."""
    from broker.bybit_sim.app import PublicMarketModule, build_app, build_state  # noqa: PLC0415

    state = build_state(cfg)
    app = build_app(state, [PublicMarketModule(), module])
    web.run_app(app, host=host, port=port, access_log=None, print=None)
