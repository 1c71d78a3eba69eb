"""``create_app``: the read-only journal API and dashboard as one FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from bot.api import auth, pages, routes
from bot.api.cache import RunCache
from bot.api.encode import answer
from bot.errors import ConfigError, StorageError
from storage.db import open_database, safe_url


def create_app(db_url: str, token: str | None = None) -> FastAPI:
    """The app serving the journal at ``db_url``; with ``token`` every request but ``/healthz``
    must carry it. Opens the journal (and applies pending migrations) now, so a bad URL fails here."""
    token = auth.check_token(token)
    db = open_database(db_url)
    app = FastAPI(title="bybit-ml-bot journal", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json",
                  description=f"Read-only view of the journal at {safe_url(db_url)}.")
    app.state.journal = routes.Journal(db, RunCache(db))
    auth.install(app, token)
    app.include_router(routes.router)
    app.include_router(pages.router)

    @app.exception_handler(ConfigError)
    async def bad_request(_request: Request, exc: ConfigError) -> Response:
        return answer({"detail": str(exc)}, 400)

    @app.exception_handler(StorageError)
    async def journal_down(_request: Request, exc: StorageError) -> Response:
        return answer({"detail": str(exc)}, 503)

    return app
