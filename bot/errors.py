"""Exception taxonomy: callers decide by type, never by parsing messages.

Every error a user can cause is a :class:`BotError`; the CLI prints its message as one line and
exits with code 2. Exchange errors say whether a retry is safe.
"""

from __future__ import annotations


class BotError(Exception):
    """Base of every error the bot raises on purpose. ``str(exc)`` is the one line a user sees."""

    exit_code = 2


class ConfigError(BotError):
    """Invalid configuration, CLI flag or ``--set`` override."""


class DataError(BotError):
    """Missing, malformed or inconsistent market data."""


class ModelError(BotError):
    """Missing, corrupted or mismatched checkpoint; model cannot run on the given input."""


class StorageError(BotError):
    """The journal database cannot be reached or is in an unexpected state."""


class RiskError(BotError):
    """A risk rule refused an action."""


class ExchangeError(BotError):
    """An exchange call failed. ``retryable`` says whether repeating the same *read* is safe."""

    retryable = False

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ExchangeRetryableError(ExchangeError):
    """Rate limit (10006), server error, timeout: reads may be retried with backoff."""

    retryable = True


class ExchangeFatalError(ExchangeError):
    """Authentication failure, rejected order, invalid parameter: retrying cannot help."""


class OrderRejected(ExchangeFatalError):
    """The venue refused an order (insufficient balance, invalid quantity, duplicate id...)."""

