"""pybit's v5 WebSocket with subscriptions registered before they are sent.

pybit 5.17 sends a subscribe and only then records it (``subscriptions[req_id]`` and the topic's
callback). A venue may answer before the sending thread runs again (Bybit acks well under a
millisecond for a nearby client): pybit then looks the ack up, raises KeyError on its reader
thread and closes the socket, and its next ``subscribe`` waits for a connection for ever. Its
handling of a refused subscription (``_pop_callback(topic[0])``) and of an ack without a
``req_id`` when nothing is recorded raise in the same way. Here a subscription is recorded before
its first byte leaves, acks are matched by ``req_id`` (or, without one, in the order sent, as
Bybit answers one connection's requests), a refused auth or subscription is recorded instead of
raised, and waiting for the connection is bounded.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pybit.unified_trading as put
import structlog
import websocket

log = structlog.get_logger("broker.bybit.ws")

#: pybit's private topics: they take no symbol filter.
_UNFILTERED = ("position", "execution", "execution.fast", "order", "wallet", "greeks", "spread.order",
               "spread.execution", "system.status")


class BotWebSocket(put.WebSocket):  # type: ignore[misc]
    """pybit's ``WebSocket`` connecting to ``url`` (pybit takes its URL from a module template;
    an attribute per instance leaves that shared global alone). ``on_created`` gets the object
    before it connects, so a caller that gives up on a slow connect can still close it."""

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0,
                 on_created: Callable[[BotWebSocket], None] | None = None, **kwargs: Any) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        #: req_ids sent and not answered yet, oldest first.
        self.unacked: deque[str] = deque()
        self.acked: set[str] = set()
        #: Why the venue refused a subscription ("topics: ret_msg"), in the order refused.
        self.refused: list[str] = []
        #: The venue's answer to a refused ``op: auth`` (None: not refused).
        self.auth_refused: str | None = None
        if on_created is not None:
            on_created(self)
        super().__init__(**kwargs)

    def _connect(self, _url: str) -> Any:  # pybit's one hook for the URL
        return super()._connect(self.url)

    @property
    def subscribed(self) -> bool:
        """Every subscription sent is acked, none refused."""
        return bool(self.subscriptions) and not self.unacked and not self.refused

    def subscribe(self, topic: str, callback: Callable[[dict[str, Any]], None],
                  symbol: str | list[str] | bool = False) -> None:
        symbols = [symbol] if isinstance(symbol, str) else list(symbol or [])
        args = [topic] if topic in _UNFILTERED else [topic.format(symbol=s) for s in symbols]
        self._check_callback_directory(args)
        req_id = str(uuid4())
        message = json.dumps({"op": "subscribe", "req_id": req_id, "args": args})
        self.subscriptions[req_id] = message
        for t in args:
            self._set_callback(t, callback)
        self.unacked.append(req_id)
        self._wait_connected()
        self.ws.send(message)

    def _wait_connected(self) -> None:
        deadline = time.monotonic() + self.connect_timeout_s
        while not self.is_connected():
            if self.exited or time.monotonic() > deadline:
                raise websocket.WebSocketConnectionClosedException(f"{self.url}: not connected")
            time.sleep(0.01)

    # -- the reader thread -------------------------------------------------------------------------
    def _process_auth_message(self, message: dict[str, Any]) -> None:
        if message.get("success") is True:
            self.auth = True
        else:
            self.auth_refused = str(message.get("ret_msg") or message)

    def _process_subscription_message(self, message: dict[str, Any]) -> None:
        req_id = str(message.get("req_id") or "")
        if req_id not in self.subscriptions:
            req_id = self.unacked[0] if self.unacked else ""
        sent = self.subscriptions.get(req_id)
        if sent is None:
            log.warning("ws_unexpected_ack", ack=message)
            return
        try:
            self.unacked.remove(req_id)
        except ValueError:
            pass  # a second answer (resubscribed after pybit's own reconnect)
        if message.get("success") is True:
            self.acked.add(req_id)
            return
        # Refused: forgotten, so that no reconnect replays it and no callback waits on it.
        args = json.loads(sent)["args"]
        self.subscriptions.pop(req_id, None)
        for t in args:
            self.callback_directory.pop(t, None)
        self.refused.append(f"{','.join(args)}: {message.get('ret_msg')}")
