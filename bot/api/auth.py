"""Who may ask: loopback by default, a bearer token for anything else; GET only.

With a token, every request but ``/healthz`` carries ``Authorization: Bearer T`` (the dashboard's
fetches) or ``?token=T`` (a browser opening the page); the comparison takes the same time
whatever the guess. Tokens in query strings are masked in the access log.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from bot.errors import ConfigError

MIN_TOKEN = 16
OPEN_PATHS = frozenset({"/healthz"})
_TOKEN_CHARS = re.compile(r"[!-~]+")  # printable ASCII without spaces: safe in a header and a URL
_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&#\s]*")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: str | None) -> str | None:
    """The token to require (None: none given); ConfigError if it is too weak to stand guard."""
    if token is None or token == "":
        return None
    if not _TOKEN_CHARS.fullmatch(token):
        raise ConfigError("the API token must be printable ASCII without spaces")
    if len(token) < MIN_TOKEN:
        raise ConfigError(f"the API token is too short: use {MIN_TOKEN} characters or more "
                          "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    return token


def check_bind(host: str, token: str | None) -> None:
    """Anything but loopback is reachable from other machines: refused without a token."""
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"bad --host {host!r}: expected an address such as 127.0.0.1 or 0.0.0.0")
    if token is None and not is_loopback(host):
        raise ConfigError(f"--host {host} is reachable from other machines: set BOT_API_TOKEN (or --token) "
                          "to serve on it, or serve on 127.0.0.1")


def _digest(s: str) -> bytes:
    return hashlib.sha256(s.encode()).digest()


def _given(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query_params.get("token")


def install(app: FastAPI, token: str | None) -> None:
    """Refuse writes (405) and, with a token, requests that do not carry it (401)."""
    expected = _digest(token) if token else None

    @app.middleware("http")
    async def gate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method != "GET":
            return JSONResponse({"detail": "read-only API: only GET"}, 405, headers={"Allow": "GET"})
        if expected is not None and request.url.path not in OPEN_PATHS:
            given = _given(request)
            if given is None or not hmac.compare_digest(_digest(given), expected):
                return JSONResponse({"detail": "missing or wrong API token"}, 401,
                                    headers={"WWW-Authenticate": "Bearer"})
        response = await call_next(request)
        # The page's URL may carry ?token=: never hand it to another site, never be framed.
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response


def redact(text: str) -> str:
    return _TOKEN_IN_QUERY.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    """uvicorn's access log prints the query string: ``?token=...`` becomes ``?token=***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True
