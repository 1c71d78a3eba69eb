"""``bot serve``: the read-only journal API and a live dashboard in the browser."""

from __future__ import annotations

from pathlib import Path

import typer

from bot.cli.common import ConfigOpt, DbOpt, SetOpt, err_console, load
from bot.errors import ConfigError
from storage.db import safe_url


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        db: str | None = DbOpt,
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback "
                                 "needs a token."),
        port: int = typer.Option(8080, "--port", help="TCP port."),
        token: str | None = typer.Option(None, "--token", envvar="BOT_API_TOKEN", show_default=False,
                                         help="Require 'Authorization: Bearer TOKEN' (or ?token=) on every "
                                              "request but /healthz (default: env BOT_API_TOKEN)."),
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
    ) -> None:
        """Serve the journal read-only: JSON under /api, a dashboard at /, each run's report."""
        from bot.api import auth  # noqa: PLC0415 - FastAPI only for this command
        from bot.api.app import create_app  # noqa: PLC0415
        from bot.api.server import make_server  # noqa: PLC0415

        if not 1 <= port <= 65535:
            raise ConfigError(f"bad --port {port}: expected 1..65535")
        token = auth.check_token(token)
        auth.check_bind(host, token)
        cfg = load(config, set_, db=db)
        web = create_app(cfg.storage.url, token)
        shown = f"[{host}]" if ":" in host else host
        err_console.print(f"dashboard: http://{shown}:{port}/  journal: {safe_url(cfg.storage.url)}"
                          + ("  (token required)" if token else ""))
        if not auth.is_loopback(host):
            err_console.print("[yellow]note:[/yellow] plain HTTP: the token crosses the network in the clear; "
                              "put a TLS proxy in front for anything but a trusted network")
        make_server(web, host, port, log_level=cfg.logging.level).run()
