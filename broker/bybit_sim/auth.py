"""Bybit v5 request signing, verified exactly as the venue does it (HMAC-SHA256 keys).

REST: the string to sign is ``timestamp + api_key + recv_window + payload`` where the payload
is the query string exactly as sent (GET) or the raw body byte for byte (POST). The request
is accepted only when ``server_time - recv_window <= timestamp < server_time + 1000``, with
the server's *wall* clock (clients sign with theirs). Errors: 10003 unknown key, 10004 bad
signature (the message echoes the string the server signed), 10002 timestamp outside the window.
WebSocket: ``{"op": "auth", "args": [key, expires, hex(HMAC(secret, "GET/realtime" + expires))]}``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from broker.bybit_sim.clock import SimClock


def sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class AuthError(Exception):
    code: int
    msg: str


def verify_rest(keys: dict[str, str], headers: Any, payload: str, now_ms: int | None = None) -> str:
    """The API key of a correctly signed request; raise :class:`AuthError` otherwise."""
    key = headers.get("X-BAPI-API-KEY")
    ts = headers.get("X-BAPI-TIMESTAMP")
    sig = headers.get("X-BAPI-SIGN")
    recv = headers.get("X-BAPI-RECV-WINDOW") or "5000"
    if not key or not ts or not sig:
        raise AuthError(10003 if not key else 10004, "API key is invalid." if not key
                        else "error sign! missing X-BAPI-TIMESTAMP or X-BAPI-SIGN")
    secret = keys.get(key)
    if secret is None:
        raise AuthError(10003, "API key is invalid.")
    try:
        t, rw = int(ts), int(recv)
    except ValueError:
        raise AuthError(10001, "params error: X-BAPI-TIMESTAMP and X-BAPI-RECV-WINDOW must be integers") from None
    now = SimClock.wall_ms() if now_ms is None else now_ms
    if not (now - rw <= t < now + 1000):
        raise AuthError(10002, "invalid request, please check your server timestamp or recv_window param. "
                               f"req_timestamp[{t}],server_timestamp[{now}],recv_window[{rw}]")
    origin = f"{ts}{key}{recv}{payload}"
    if not hmac.compare_digest(sign(secret, origin), sig.lower()):
        raise AuthError(10004, f"error sign! origin_string[{origin}]")
    return str(key)


def verify_ws(keys: dict[str, str], args: Any, now_ms: int | None = None) -> str | None:
    """The API key of a valid WebSocket auth request, else None (the venue says "Params Error")."""
    if not isinstance(args, list) or len(args) != 3:
        return None
    key, expires, sig = args
    secret = keys.get(str(key))
    try:
        exp = int(expires)
    except (TypeError, ValueError):
        return None
    now = SimClock.wall_ms() if now_ms is None else now_ms
    if secret is None or exp <= now or not isinstance(sig, str):
        return None
    if not hmac.compare_digest(sign(secret, f"GET/realtime{exp}"), sig.lower()):
        return None
    return str(key)
