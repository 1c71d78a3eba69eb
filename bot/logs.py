"""structlog set-up: key-value events, JSON in production, pretty on a terminal.

A processor drops anything that looks like a credential, so a secret cannot reach a log line
even if a caller passes it by mistake.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_SECRET_KEYS = ("secret", "api_key", "apikey", "password", "signature", "sign", "token")


def _redact(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for k in list(event):
        if any(s in k.lower() for s in _SECRET_KEYS):
            event[k] = "***"
    return event


class _StderrLogger:
    """Writes each line to whatever ``sys.stderr`` is *now* (test runners swap it)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _stderr_factory(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def configure(level: str = "info", fmt: str = "auto") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_stderr_factory,
        cache_logger_on_first_use=False,
    )
