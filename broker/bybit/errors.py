"""pybit/requests failures -> the bot's exception taxonomy, with credentials scrubbed.

Retryable (reads may repeat): 10006 rate limit, 10016/10000 server errors, HTTP 5xx/429/403,
timeouts and dropped connections. Everything else is fatal; order-level refusals are
:class:`~bot.errors.OrderRejected`. Messages never carry the API key, the secret or a
signature: Bybit's 10004 reply echoes the signed string (which holds the key), so every
message is scrubbed before it leaves this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import requests
from pybit.exceptions import FailedRequestError, InvalidRequestError

from bot.errors import ExchangeError, ExchangeFatalError, ExchangeRetryableError, OrderRejected

RETRYABLE_CODES = {10000, 10006, 10016, 10018, 10429, 170007, 170146}
AUTH_CODES = {10003, 10004, 10005, 10007, 10009, 10010, 33004}
#: Refusals of one order: the loop journals it as rejected and goes on.
ORDER_CODES = {10001, 110001, 110003, 110004, 110007, 110012, 110017, 110072, 110094, 170131, 170136,
               170137, 170140}
CLOCK_CODE = 10002
DUPLICATE_LINK_ID = 110072
ORDER_NOT_FOUND = 110001
#: trading-stop: the position's TP/SL already are what was asked.
NOT_MODIFIED = 34040
#: set-leverage: the symbol already has the leverage asked for.
LEVERAGE_NOT_MODIFIED = 110043
#: set-leverage refusals: a bad value (10001), above the instrument's (risk limit's) maximum (110013).
LEVERAGE_REFUSED = {10001, 110013}

_SIGN = re.compile(r"(?i)(x-bapi-sign|sign|signature)(['\"]?\s*[:=]\s*['\"]?)[0-9a-f]{16,}")
_ORIGIN = re.compile(r"origin_string\[[^\]]*\]")


class CreateOutcomeUnknown(ExchangeRetryableError):
    """An order create whose answer never came (timeout, dropped connection, 5xx): the venue
    may or may not have the order. It must be looked up by orderLinkId, never re-sent blindly."""


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    text = _ORIGIN.sub("origin_string[***]", text)
    return _SIGN.sub(r"\1\2***", text)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def map_error(exc: BaseException, what: str, secrets: Iterable[str | None], *, create: bool = False
              ) -> ExchangeError:
    """One clear, scrubbed line; the class says what the caller may do next."""
    secrets = list(secrets)
    if isinstance(exc, InvalidRequestError):
        code = int(exc.status_code)
        msg = scrub(f"{what}: Bybit retCode {code}: {exc.message}", secrets)
        if code in RETRYABLE_CODES:
            return ExchangeRetryableError(msg, code=code)
        if code == CLOCK_CODE:
            return ExchangeFatalError(msg + " (the local clock is off Bybit's: sync it with NTP or raise "
                                            "exchange.recv_window)", code=code)
        if code in AUTH_CODES:
            return ExchangeFatalError(scrub(f"{what}: Bybit refused the API key (retCode {code}): check "
                                            "BYBIT_API_KEY/BYBIT_API_SECRET and testnet vs mainnet", secrets),
                                      code=code)
        if code in ORDER_CODES:
            return OrderRejected(msg, code=code)
        return ExchangeFatalError(msg, code=code)
    if isinstance(exc, FailedRequestError):
        status = int(exc.status_code)
        msg = scrub(f"{what}: HTTP {status}: {_first_line(str(exc.message))}", secrets)
        if status >= 500 or status in (403, 408, 409, 429):
            return CreateOutcomeUnknown(msg, code=status) if create else ExchangeRetryableError(msg, code=status)
        return ExchangeFatalError(msg, code=status)
    if isinstance(exc, (requests.exceptions.Timeout, requests.exceptions.ConnectionError)):
        kind = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "connection failed"
        msg = f"{what}: {kind}"
        return CreateOutcomeUnknown(msg) if create else ExchangeRetryableError(msg)
    if isinstance(exc, ExchangeError):
        return exc
    return ExchangeFatalError(scrub(f"{what}: {type(exc).__name__}: {_first_line(str(exc))}", secrets))
