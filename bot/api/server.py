"""uvicorn for ``bot serve`` (and the browser tests): its logging, tokens masked in the access log."""

from __future__ import annotations

import copy
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import LOGGING_CONFIG


def log_config() -> dict[str, Any]:
    """uvicorn's own logging setup, its access log passed through :class:`bot.api.auth.RedactTokens`."""
    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg.setdefault("filters", {})["redact_tokens"] = {"()": "bot.api.auth.RedactTokens"}
    cfg["handlers"]["access"]["filters"] = ["redact_tokens"]
    return cfg


def make_server(app: FastAPI, host: str, port: int, *, log_level: str = "info") -> uvicorn.Server:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, log_config=log_config(),
                            access_log=True, server_header=False, proxy_headers=False)
    return uvicorn.Server(config)
